"""Session-wide test setup for ecssd.

1. Environment hygiene first, at import time, before anything creates an AWS or Docker
   client: fake credentials, a fixed region, IMDS disabled, no inherited endpoints or
   DOCKER_HOST. Subprocesses inherit it (see tests/support/env.py).
2. The strict Route 53 (tests/support/strict_route53.py) patched into moto, for the
   session server and every in-process ``mock_aws`` alike.
3. Fixtures from tests/support: ``docker_engine``, ``busybox_image``, ``containers``,
   ``moto_server``, ``aws``.
4. Tests that use the Docker engine are marked ``docker`` automatically, so
   ``pytest -m "not docker"`` runs the fast suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `tests.support` must import however pytest was started (`pytest` does not put the
# repository root on sys.path, `python -m pytest` does).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support.env import apply_safe_env  # noqa: E402

apply_safe_env()

from tests.support import strict_route53  # noqa: E402

# Before any moto backend answers: every moto of the session (the server and in-process
# mock_aws alike) refuses what Route 53 refuses.
strict_route53.install()

import pytest  # noqa: E402

from tests.support.dockerd import _engine_running_after_test, docker_engine  # noqa: E402
from tests.support.images import busybox_image, containers  # noqa: E402
from tests.support.moto_server import aws, moto_server  # noqa: E402

__all__ = [
    "_engine_running_after_test",
    "aws",
    "busybox_image",
    "containers",
    "docker_engine",
    "moto_server",
]

_DOCKER_FIXTURES = frozenset({"docker_engine", "busybox_image", "containers"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "python_image: builds ecssd-python:3 (slow once; make test and CI run it; ECSSD_TEST_PYTHON_IMAGE=1)",
    )


@pytest.hookimpl(tryfirst=True)  # before the built-in -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs the Docker engine with ``docker``."""
    for item in items:
        if _DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)

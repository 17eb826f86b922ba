"""Environment hygiene: rule zero says no test traffic leaves the machine.

Applied to ``os.environ`` when tests/conftest.py is imported, before any boto3 or docker
client exists, so every in-process client and every subprocess (agent, Lambda handlers,
CLIs) inherits fake credentials, a fixed region, and no way to reach real AWS, the EC2
instance metadata address, or a Docker engine the tests did not start.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import NoReturn
from urllib.parse import urlparse

import pytest

REGION = "us-east-1"

#: Forced values. The config/credentials files point nowhere so a developer's ~/.aws
#: (profiles, credential_process, SSO) can never be picked up.
FAKE_AWS_ENV: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/ecssd-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/ecssd-tests/aws-credentials",
}

#: Belt and braces behind AWS_EC2_METADATA_DISABLED: if something still asks IMDS,
#: it asks a closed loopback port (discard), not 169.254.169.254.
DEAD_IMDS_ENDPOINT = "http://127.0.0.1:9/"

#: Variables that could route credentials or requests somewhere real.
REMOVED_VARS: tuple[str, ...] = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
)

#: ECSSD_* variables that steer the test infrastructure itself. Every other ECSSD_*
#: variable is an agent/Lambda setting and is dropped, so a developer's shell (say
#: ECSSD_HOSTED_ZONE_ID) cannot change what the tests' subprocesses do.
INFRA_VARS = frozenset(
    {
        "ECSSD_TEST_DOCKER_HOST",
        "ECSSD_REQUIRE_DOCKER",
        "ECSSD_CACHE",
        "ECSSD_TEST_PYTHON_IMAGE",
        "ECSSD_SKIP_PIP",
        "ECSSD_DEBIAN_MIRROR",
    }
)

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def apply_safe_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Make ``environ`` (default ``os.environ``) safe for tests; idempotent."""
    env = os.environ if environ is None else environ
    for name in REMOVED_VARS:
        env.pop(name, None)
    # Endpoints are set per test by the ``aws`` fixture; a stale one must not leak in.
    for name in [n for n in env if n.startswith("AWS_ENDPOINT_URL")]:
        del env[name]
    for name in [n for n in env if n.startswith("ECSSD_") and n not in INFRA_VARS]:
        del env[name]
    env.update(FAKE_AWS_ENV)
    imds = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "")
    if urlparse(imds).hostname not in _LOOPBACK_HOSTS:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = DEAD_IMDS_ENDPOINT
    # A proxy must never see loopback traffic (requests/botocore honour these).
    for name in ("NO_PROXY", "no_proxy"):
        present = [p for p in env.get(name, "").split(",") if p]
        env[name] = ",".join(present + [h for h in sorted(_LOOPBACK_HOSTS) if h not in present])


def require_docker() -> bool:
    """CI sets ECSSD_REQUIRE_DOCKER=1: a missing real part is then a failure, not a skip."""
    return os.environ.get("ECSSD_REQUIRE_DOCKER") == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip locally, fail when the real parts are required (CI)."""
    if require_docker():
        pytest.fail(f"{reason} (ECSSD_REQUIRE_DOCKER=1, so this is a failure)", pytrace=False)
    pytest.skip(reason)


def is_ci() -> bool:
    """True on CI (CI=true/1), where slow-but-real tests run too."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}

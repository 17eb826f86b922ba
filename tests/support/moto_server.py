"""moto in server mode, spoken to over HTTP (fixtures ``moto_server`` and ``aws``).

Why a server instead of ``mock_aws``: the integration tests run the real agent CLI and
the real Lambda handlers, often as subprocesses; boto3 >= 1.28 honours AWS_ENDPOINT_URL,
so pointing them at this server needs no test-only code path.

Its Route 53 is the test world's strict one (:mod:`tests.support.strict_route53`): it refuses
what Route 53 refuses (quotas, with Route 53's codes and words) and accepts and deletes what
Route 53 does. ``set_zone_record_limit`` gives a zone another record-set quota.

Quirks handled here (moto 5.2.x):
- ``/moto-api/reset`` wipes the backends but NOT the state manager's transitions;
  ``reset()`` therefore also unsets every transition set through this object.
- ECS tasks advance one lifecycle step per read unless ``manual_ecs_transitions()``.
- The server shares this process's moto backends: an in-process ``mock_aws`` test also
  resets them, which is harmless as long as each test starts with ``aws`` (a reset).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from tests.support import strict_route53
from tests.support.env import FAKE_AWS_ENV, REGION

_API_TIMEOUT = 15.0


class MotoServer:
    """A running ThreadedMotoServer bound to 127.0.0.1 on a free port."""

    def __init__(self, server: ThreadedMotoServer) -> None:
        self._server = server
        host, port = server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self._transitions: set[str] = set()

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (os.environ + fake creds + endpoint = this server)."""
        return {**os.environ, **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.url}

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` talking HTTP to this server."""
        kwargs.setdefault("config", Config(retries={"mode": "standard", "max_attempts": 2}))
        return boto3.client(
            service,  # type: ignore[call-overload, unused-ignore]
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            **kwargs,
        )

    def reset(self) -> None:
        """Empty every backend and restore default state transitions."""
        self._post("/moto-api/reset")
        for model_name in sorted(self._transitions):
            self._post("/moto-api/state-manager/unset-transition", {"model_name": model_name})
        self._transitions.clear()

    def set_transition(self, model_name: str, transition: dict[str, Any]) -> None:
        self._post(
            "/moto-api/state-manager/set-transition",
            {"model_name": model_name, "transition": transition},
        )
        self._transitions.add(model_name)

    def manual_ecs_transitions(self) -> None:
        """Keep ECS tasks RUNNING until StopTask (moto advances them on every read)."""
        self.set_transition("ecs::task", {"progression": "manual", "times": 1_000_000_000})

    def set_zone_record_limit(self, zone_id: str, limit: int | None) -> None:
        """The zone's record-set quota (GetHostedZoneLimit MAX_RRSETS_BY_ZONE); None: 10,000."""
        self._post(strict_route53.ZONE_LIMIT_PATH, {"HostedZoneId": zone_id, "Value": limit})

    def stop(self) -> None:
        self._server.stop()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        response = requests.post(f"{self.url}{path}", json=body, timeout=_API_TIMEOUT)
        response.raise_for_status()


def start_moto_server() -> MotoServer:
    strict_route53.install()
    # werkzeug logs every request at INFO; that drowns real failures in pytest output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return MotoServer(server)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server per session, on 127.0.0.1 and a free port."""
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A freshly reset moto server; in-process boto3 clients created in the test use it."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    return moto_server

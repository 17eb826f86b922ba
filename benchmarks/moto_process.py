"""moto in its own process, as AWS is to the code under measurement.

The in-process server would share the measured code's GIL and CPU (moto's DescribeTasks is
O(tasks requested x tasks stored)), so its time would count as ours. Its Route 53 is the test
world's strict one (``python -m tests.support.strict_route53``: quotas, exact deletes).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.support import strict_route53
from tests.support.env import FAKE_AWS_ENV
from tests.support.poll import wait_for

_REPO_ROOT = Path(__file__).resolve().parent.parent


class MotoProcess:
    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.strict_route53", "-H", "127.0.0.1",
             "-p", str(port)], cwd=_REPO_ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: requests.get(f"{self.url}/moto-api/data.json", timeout=2).ok,
                 timeout=60, what="the moto server", ignore=(requests.RequestException,))

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.url,  # type: ignore[call-overload, unused-ignore]
                            region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (the agent) that talks to this server."""
        return {**os.environ, **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.url}

    def manual_ecs_transitions(self) -> None:
        """Tasks stay RUNNING until StopTask (moto advances them on every read otherwise)."""
        requests.post(f"{self.url}/moto-api/state-manager/set-transition", timeout=15,
                      json={"model_name": "ecs::task",
                            "transition": {"progression": "manual", "times": 10**9}}
                      ).raise_for_status()

    def set_zone_record_limit(self, zone_id: str, limit: int | None) -> None:
        """The zone's record-set quota, as a quota increase would set it (None: 10,000)."""
        requests.post(f"{self.url}{strict_route53.ZONE_LIMIT_PATH}", timeout=15,
                      json={"HostedZoneId": zone_id, "Value": limit}).raise_for_status()

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=15)

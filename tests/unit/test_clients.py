"""The boto3 client cache: one Config, one set of request counters, one session.

The daemon in direct mode holds two Route 53 clients (one with botocore's retries for reads,
one with a single attempt for writes). Built from separate sessions, each loaded Route 53's
service model again: about 10 MB more of the agent's peak RSS (the benchmark's 60 MB goal).
"""

from __future__ import annotations

import pytest

from ecssd_agent.aws.clients import Clients


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_clients_share_one_session_and_so_one_loaded_model() -> None:
    clients = Clients(region="us-east-1", max_attempts=8)
    reads = clients.client("route53")
    writes = clients.client("route53", max_attempts=1)
    assert reads is not writes and clients.client("route53") is reads  # cached
    assert reads._loader is writes._loader  # one session: the model is loaded once
    assert reads.meta.config.retries == {"mode": "standard", "total_max_attempts": 9}
    assert writes.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}

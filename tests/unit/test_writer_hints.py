"""The sweep's verify hints for the zone writer (ecssd_agent/sweep/writer_hints.py): which record
sets they name, and that a failure to send them is reported, never raised. Sending against
SQS, batching and the whole sweep are in tests/integration/test_queued_sweep.py."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from ecssd_agent.agent.settings import SettingsError
from ecssd_agent.core import ownership
from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.sweep.settings import SweepSettings
from ecssd_agent.sweep.writer_hints import hints_for, send

ZONE = "sd.internal."


def record(name: str, owner: Owner | None, rtype: str = "SRV") -> RecordSet:
    ident = ownership.set_identifier(owner) if owner is not None else None
    return RecordSet(f"{name}.{ZONE}", rtype, ("1 1 8080 x.sd.internal.",), 0, ident, weight=1)


def instance(host: str, container: str = "0123456789ab") -> Owner:
    return Owner(host=host, container=container, port="8080/tcp", cluster="c1", task="t1")


def test_one_hint_per_host_naming_the_names_its_record_sets_were_deleted_under() -> None:
    deleted = [
        record("web", instance("ip-10-0-0-2")),
        record("api", instance("ip-10-0-0-2", "ba9876543210")),
        record("web", instance("ip-10-0-0-2", "ffffffffffff")),
        record("ip-10-0-0-3", Owner(host="ip-10-0-0-3"), "A"),  # a host's own A record
        record("web", instance("ip-10-0-0-3")),
        # not the writer's: a task's record (the task-events Lambda's) and a foreign one
        record("xray", Owner(kind=Kind.TASK, cluster="c1", task="t9", port="2000/udp"), "A"),
        record("legacy", None),
    ]

    hints = hints_for(ZONE, deleted)

    assert [(h.host, h.zone, h.seq, h.verify) for h in hints] == [
        ("ip-10-0-0-2", ZONE, 0, (f"api.{ZONE}", f"web.{ZONE}")),
        ("ip-10-0-0-3", ZONE, 0, (f"ip-10-0-0-3.{ZONE}", f"web.{ZONE}")),
    ]
    assert hints_for(ZONE, []) == []


class Refusing:
    """An SQS client whose every call fails as SQS fails (the queue is gone, say)."""

    def __getattr__(self, name: str) -> Any:
        def call(**_kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue",
                                         "Message": "The specified queue does not exist."}},
                              "SendMessageBatch")
        return call


def test_a_failed_send_is_an_error_in_the_summary_not_an_exception() -> None:
    summary: dict[str, Any] = {"errors": ["an earlier one"]}

    send(Refusing(), "https://sqs.us-east-1.amazonaws.com/1/q", ZONE,
         [record("web", instance("ip-10-0-0-2"))], summary)

    assert summary["writer_hints"] == 0
    assert summary["errors"][0] == "an earlier one"
    assert summary["errors"][1].startswith("verify hints to the zone writer (1 host(s)) not sent")
    assert "does not exist" in summary["errors"][1]


def test_nothing_to_hint_sends_nothing() -> None:
    summary: dict[str, Any] = {"errors": []}
    send(Refusing(), "https://sqs.us-east-1.amazonaws.com/1/q", ZONE,
         [record("xray", Owner(kind=Kind.TASK, cluster="c1", task="t9", port="2000/udp"), "A")],
         summary)
    assert summary == {"errors": [], "writer_hints": 0}


def test_the_queue_url_setting() -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/ecssd-ChangeQueue-X"
    assert SweepSettings.from_env({"CHANGE_QUEUE_URL": url}).change_queue_url == url
    assert SweepSettings.from_env({}).change_queue_url == ""  # direct mode
    with pytest.raises(SettingsError, match="CHANGE_QUEUE_URL='ecssd-hints' is not a queue URL"):
        SweepSettings.from_env({"CHANGE_QUEUE_URL": "ecssd-hints"})

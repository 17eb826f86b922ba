"""The daemon's adapters: event parsing and reconnects, task events, ECS introspection, status."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import docker.errors
import pytest
import requests
from botocore.exceptions import ClientError
from moto import mock_aws
from prometheus_client.parser import text_string_to_metric_families

from ecssd_agent.agent.docker_events import ContainerEvent, EventStream, parse_event
from ecssd_agent.agent.ecs_introspection import EcsIntrospection, IntrospectionUnavailable
from ecssd_agent.agent.status import Status, StatusServer
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.eventbridge import (
    SOURCE,
    STARTED,
    STOPPED,
    TaskEvent,
    TaskEventSender,
    put_events,
    to_entry,
)
from tests.support.poll import wait_for

TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef0123456789abcdef"


# --- events ------------------------------------------------------------------------------

def test_parse_event_modern_and_legacy_shapes() -> None:
    modern = {"Type": "container", "Action": "kill", "Actor": {"ID": "abc", "Attributes": {
        "signal": "15", "com.amazonaws.ecs.task-arn": TASK_ARN}}, "time": 5, "timeNano": 5_000_000_123}
    event = parse_event(modern)
    assert event == ContainerEvent("abc", "kill", {"signal": "15",
                                                   "com.amazonaws.ecs.task-arn": TASK_ARN},
                                   5_000_000_123)
    assert event.ends_container and not event.starts_container
    legacy = parse_event({"status": "start", "id": "def", "time": 7})
    assert legacy is not None and legacy.starts_container and legacy.time_ns == 7_000_000_000
    health = parse_event({"Type": "container", "Action": "health_status: healthy",
                          "Actor": {"ID": "x"}})
    assert health is not None and health.action == "health_status"
    assert parse_event({"Type": "network", "Action": "connect", "Actor": {"ID": "n"}}) is None


@pytest.mark.parametrize(("action", "signal", "ends"), [
    ("kill", "15", True), ("kill", "9", True), ("kill", "SIGTERM", True), ("kill", "1", False),
    ("kill", "10", False), ("stop", "", True), ("die", "", False),
])
def test_which_events_end_a_container(action: str, signal: str, ends: bool) -> None:
    assert ContainerEvent("c", action, {"signal": signal}).ends_container is ends


class _BlockingStream:
    """An event stream that stays open until closed, like a quiet engine."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.closed.wait(30)
        return iter(())

    def close(self) -> None:
        self.closed.set()


class _Client:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.filters: Any = None
        self.since: Any = None

    def events(self, decode: bool, filters: Any, since: Any = None) -> Any:
        self.filters, self.since = filters, since
        return self.stream

    def close(self) -> None:
        pass


def test_event_stream_reconnects_with_backoff_and_reports_each_state() -> None:
    calls: list[str] = []
    raw = [{"Type": "container", "Action": "start", "Actor": {"ID": "c1"}, "timeNano": 5 * 10**9},
           {"Type": "container", "Action": "die", "Actor": {"ID": "c1"}, "timeNano": 7 * 10**9 + 1}]
    blocking = _BlockingStream()
    clients: list[Any] = []

    def factory(base_url: str | None) -> Any:
        n = len(clients)
        clients.append(None)
        if n == 0:
            raise docker.errors.DockerException("engine down")
        client = _Client(iter(raw) if n == 1 else blocking)
        clients[-1] = client
        return client

    stream = EventStream(None, lambda e: calls.append(f"event {e.action}"),
                         lambda: calls.append("connect"),
                         lambda reason: calls.append(f"disconnect: {reason}"),
                         client_factory=factory, backoff_min=0.01, backoff_max=0.05)
    stream.start()
    wait_for(lambda: len(clients) >= 3 and calls[-1] == "connect", timeout=10,
             what="the third connection")
    assert calls[0].startswith("disconnect: cannot subscribe")
    assert calls[1:] == ["connect", "event start", "event die",
                         "disconnect: the engine closed the stream", "connect"]
    assert stream.reconnects == 1
    assert "start" in clients[2].filters["event"] and "exec_start" not in clients[2].filters["event"]
    assert clients[1].since is None
    assert clients[2].since == "7.000000001"  # resumes after the last event: none is lost
    started = time.monotonic()
    stream.stop()
    assert time.monotonic() - started < 2 and blocking.closed.is_set()


# --- EventBridge -------------------------------------------------------------------------

def test_entry_has_the_reference_shape() -> None:
    when = datetime(2024, 1, 2, tzinfo=timezone.utc)
    entry = to_entry(TaskEvent(STARTED, "abc", TASK_ARN, "ip-10-0-0-12.ec2.internal", when))
    assert entry == {"Source": SOURCE, "DetailType": "Task Started",
                     "Detail": json.dumps({"dockerId": "abc", "TaskArn": TASK_ARN}),
                     "Resources": ["ip-10-0-0-12.ec2.internal"], "Time": when}


@pytest.fixture
def bus() -> Iterator[tuple[Clients, Any, str]]:
    """moto EventBridge with a rule forwarding our Task Stopped events to an SQS queue.

    Only one detail-type is forwarded because moto spends ~0.4 s delivering each event to a
    target (it builds a JSONPath parser per event); the Started ones are counted as accepted.
    """
    with mock_aws():
        clients = Clients(region="us-east-1")
        sqs = clients.client("sqs")
        queue = sqs.create_queue(QueueName="task-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        events = clients.client("events")
        events.put_rule(Name="ecssd", EventPattern=json.dumps(
            {"source": [SOURCE], "detail-type": [STOPPED]}))
        events.put_targets(Rule="ecssd", Targets=[{"Id": "q", "Arn": arn}])
        yield clients, sqs, queue


def received(sqs: Any, queue: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return out
        out.extend(json.loads(m["Body"]) for m in messages)
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


def test_put_events_sends_ten_entries_per_call(bus: tuple[Clients, Any, str]) -> None:
    clients, sqs, queue = bus
    now = datetime.now(timezone.utc)
    events = [TaskEvent(STARTED if i else STOPPED, f"c{i}", TASK_ARN, "h1", now)
              for i in range(23)]
    accepted, errors = put_events(clients.client("events"), events)
    assert (accepted, errors) == (23, [])
    assert clients.stats.attempts("PutEvents") == 3
    assert [e["detail"]["dockerId"] for e in received(sqs, queue)] == ["c0"]


def test_sender_resolves_arns_batches_and_never_blocks(bus: tuple[Clients, Any, str]) -> None:
    clients, sqs, queue = bus
    looked_up: list[str] = []

    def resolve(docker_id: str) -> str | None:
        looked_up.append(docker_id)
        return TASK_ARN.replace("0123", "9999") if docker_id.startswith("ecs") else None

    results: dict[str, int] = {}
    sender = TaskEventSender(lambda: clients.client("events"), "ip-10-0-0-12", resolve,
                             on_result=lambda o, n: results.__setitem__(o, results.get(o, 0) + n))
    for i in range(12):  # labelled ECS containers: the label wins, no lookup
        sender.notify("start", f"lab{i}", {"com.amazonaws.ecs.task-arn": TASK_ARN})
    sender.notify("start", "ecs-nolabel", {})
    sender.notify("start", "plain", {})  # no task: no event
    sender.notify("kill", "lab0", {})  # not a start/die: ignored
    sender.notify("die", "ecs-nolabel", {})  # ARN remembered from its start
    sender.start()
    sender.stop(timeout=10)
    (stopped,) = received(sqs, queue)
    assert stopped["detail"] == {"dockerId": "ecs-nolabel",
                                 "TaskArn": TASK_ARN.replace("0123", "9999")}
    assert stopped["resources"] == ["ip-10-0-0-12"] and stopped["source"] == SOURCE
    assert looked_up == ["ecs-nolabel", "plain"]
    assert clients.stats.attempts("PutEvents") == 2
    assert results == {"sent": 14}


def test_sender_failure_is_counted_not_raised() -> None:
    class Broken:
        def put_events(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                              "PutEvents")

    results: dict[str, int] = {}
    sender = TaskEventSender(lambda: Broken(), "h", None,
                             on_result=lambda o, n: results.__setitem__(o, n))
    sender.start()
    sender.notify("start", "c1", {"com.amazonaws.ecs.task-arn": TASK_ARN})
    sender.stop(timeout=5)
    assert results == {"failed": 1}


def test_sender_queue_full_drops_without_blocking() -> None:
    results: dict[str, int] = {}
    sender = TaskEventSender(lambda: None, "h", None, max_queue=1,
                             on_result=lambda o, n: results.__setitem__(o, results.get(o, 0) + n))
    started = time.monotonic()
    for i in range(5):
        sender.notify("start", f"c{i}", {})
    assert time.monotonic() - started < 0.5
    assert results == {"dropped": 4}


# --- ECS introspection -------------------------------------------------------------------

@pytest.fixture
def ecs_agent() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            docker_id = parse_qs(url.query).get("dockerid", [""])[0]
            if url.path == "/v1/tasks" and docker_id == "known":
                body = json.dumps({"Arn": TASK_ARN, "DesiredStatus": "RUNNING",
                                   "Containers": [{"DockerId": "known"}]}).encode()
                self.send_response(200)
            elif docker_id == "broken":
                body = b"oops"
                self.send_response(500)
            else:
                body = b"Unable to find task for dockerid"
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_introspection_finds_the_task_of_a_container(ecs_agent: str) -> None:
    api = EcsIntrospection(ecs_agent)
    assert api.task_arn("known") == TASK_ARN
    assert api.task_arn("unknown") is None
    with pytest.raises(IntrospectionUnavailable):
        api.task_arn("broken")


def test_introspection_unreachable_is_unknown_not_none() -> None:
    with pytest.raises(IntrospectionUnavailable):
        EcsIntrospection("http://127.0.0.1:9", timeout=1).task_arn("x")


# --- status --------------------------------------------------------------------------------

def test_healthz_and_metrics_over_http() -> None:
    with mock_aws():
        clients = Clients(region="us-east-1")
        clients.client("route53").list_hosted_zones()
        status = Status(clients.stats)
        server = StatusServer(status, "127.0.0.1", 0)
        server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            first = requests.get(f"{base}/readyz", timeout=5)
            assert first.status_code == 503 and "docker" in first.text
            alive = requests.get(f"{base}/healthz", timeout=5)
            assert alive.status_code == 200 and "not ready: docker" in alive.text
            status.docker_up()
            assert requests.get(f"{base}/readyz", timeout=5).status_code == 503  # no reconcile yet
            status.reconciled("startup", 0.02, owned=3)
            for path in ("/healthz", "/readyz"):
                ok = requests.get(f"{base}{path}", timeout=5)
                assert (ok.status_code, ok.text) == (200, "ok\n")
            status.docker_down("stream error: connection reset")
            down = requests.get(f"{base}/readyz", timeout=5)
            assert down.status_code == 503 and "connection reset" in down.text
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200  # not for long
            status.changes.labels("CREATE").inc(3)
            status.event_latency.observe(0.3)
            text = requests.get(f"{base}/metrics", timeout=5).text
        finally:
            server.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("ecssd_records_owned", ())] == 3
    assert samples[("ecssd_changes_applied_total", (("action", "CREATE"),))] == 3
    assert samples[("ecssd_docker_connected", ())] == 0
    assert samples[("ecssd_aws_requests_total", (("operation", "ListHostedZones"),
                                                 ("outcome", "attempt"), ("service", "route53")))] == 1
    assert samples[("ecssd_event_to_applied_seconds_count", ())] == 1
    assert samples[("ecssd_last_successful_reconcile_timestamp_seconds", ())] > 1.7e9
    assert ("ecssd_reconcile_duration_seconds_count", (("kind", "startup"),)) in samples

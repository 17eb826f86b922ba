"""The health sweep in queued mode: a record it deletes of a live host comes back.

Real parts: a moto server (ECS, EC2, Route 53, DynamoDB, SQS), real HTTP servers for the
health checks, the real sweep handler, the agent's own code publishing each host's state
(:class:`~ecssd_agent.agent.host_agent.Agent` with a :class:`~ecssd_agent.writer.publish.Publisher`) and the
real zone writer polling the queue (:class:`~ecssd_agent.writer.cli.Poller`, what
``ecssd-writer --once`` runs).

With STOP_UNHEALTHY=false the sweep deletes an unhealthy instance's record and leaves its
task running; the host's agent goes on publishing the same state. The writer plans against
what it knows it applied, so without the sweep's verify hint it would see nothing to do until
its daily full verification.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import QueuedSink
from ecssd_agent.aws.change_queue import ChangeQueue, Hint, parse_hint
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.core.model import Host, Routing
from ecssd_agent.writer.cli import Poller, build_writer
from ecssd_agent.writer.publish import Publisher
from ecssd_agent.writer.settings import WriterSettings
from ecssd_agent.writer.zone_writer import WriteOutcome
from tests.integration.sweep_world import ERROR, OK, SweepWorld, WorldHost, _FakeDocker
from tests.integration.test_health_lambda import fleet, session, sweep, world
from tests.support.queued import create_hint_queue, create_host_table

__all__ = ["fleet", "session", "sweep", "world"]  # fixtures

TABLE = "ecssd-hosts"
#: Decisive sweeps: tasks started just now are judged, any share of records may go, a failure
# is acted on at once. These tests are about the hints that follow deletions, not the guards
# and the failures in a row that come first (tests/integration/test_health_lambda.py,
# test_sweep_evidence.py and tests/unit/test_sweep_guards.py).
SWEEP_ENV = {"GRACE_SECONDS": "0", "MAX_DELETE_FRACTION": "1", "CHECK_FAILURES": "1",
             "STOP_UNHEALTHY": "false"}


class Queued:
    """The queued mode's table and queue, one publishing agent per host, and the writer."""

    def __init__(self, world: SweepWorld) -> None:
        self.world = world
        self.clients = Clients(region="us-east-1")
        self.table = create_host_table(self.clients.client("dynamodb"), TABLE)
        self.url = create_hint_queue(self.clients.client("sqs"))
        self.queue = ChangeQueue(self.clients.client("sqs"), self.url)
        self.store = HostStore(self.clients.client("dynamodb"), self.table)
        self.agents: dict[str, Agent] = {}
        self.writes: list[WriteOutcome] = []
        settings = WriterSettings(hosted_zone_id=world.zone_id, host_table=self.table,
                                  change_queue=self.url, batch_window=0.0, once=True)
        self.settings = settings
        self.writer = build_writer(settings, self.clients)

    def publish(self, host: WorldHost) -> None:
        """The host's agent reconciles (startup or a resync): publishes its whole state."""
        agent = self.agents.get(host.label)
        if agent is None:
            publisher = Publisher(self.store, self.queue, host.label,
                                  self.world.zone.zone.name)
            agent = self.agents[host.label] = Agent(
                QueuedSink(publisher), _FakeDocker(host),  # type: ignore[arg-type]
                Host(host.label, host.ip), Routing.WEIGHTED)
        agent.sync()

    def write(self) -> list[WriteOutcome]:
        """``ecssd-writer --once``: write what the queue holds; the outcomes of its writes."""
        outcomes: list[WriteOutcome] = []
        write: Callable[..., WriteOutcome] = self.writer.write

        def observed(*args: Any, **kwargs: Any) -> WriteOutcome:
            outcome = write(*args, **kwargs)
            outcomes.append(outcome)
            return outcome

        self.writer.write = observed  # type: ignore[method-assign]
        try:
            assert Poller(self.writer, self.queue, self.settings, threading.Event()).run() == 0
        finally:
            del self.writer.write
        self.writes.extend(outcomes)
        return outcomes


@pytest.fixture
def queued(world: SweepWorld) -> Queued:
    return Queued(world)


def test_a_record_the_sweep_deleted_of_a_running_task_comes_back_after_one_resync(
        world: SweepWorld, sweep: Any, queued: Queued) -> None:
    h1, h2 = world.host("c1"), world.host("c1")
    sick, well = world.task(h1, ERROR), world.task(h1, OK)
    elsewhere = world.task(h2, OK)
    for h in (h1, h2):
        queued.publish(h)
    queued.write()
    sick_srv = next(r for r in world.records() if r.type == "SRV"
                    and (r.set_identifier or "").endswith(":" + sick.id))
    written = {r.key for r in world.records()}
    assert {world.srv_key(t) for t in (sick, well, elsewhere)} <= written

    summary = sweep(CHANGE_QUEUE_URL=queued.url, **SWEEP_ENV)

    assert summary["errors"] == [] and summary["deleted"] == 1 and summary["stopped"] == []
    assert summary["writer_hints"] == 1
    assert summary["aws_requests"]["sqs:SendMessageBatch"] == 1
    assert {r.key for r in world.records()} == written - {sick_srv.key}
    assert world.task_state(sick)["lastStatus"] == "RUNNING"  # not stopped: still published

    before = len(queued.writes)
    queued.write()  # the verify hint: h1's name read, what it owns there stored; no change
    queued.publish(h1)  # h1's agent resyncs: the same state as before
    queued.write()

    assert {r.key for r in world.records()} == written, "the deleted record is back"
    healing = queued.writes[before:]
    cost = {"hosts_verified": sum(w.hosts_verified for w in healing),
            "read_requests": sum(w.read_requests for w in healing),
            "change_requests": sum(w.change_requests for w in healing),
            "changes": sum(w.changes for w in healing)}
    print(f"healing cost: {cost}")
    assert cost == {"hosts_verified": 1, "read_requests": 1, "change_requests": 1, "changes": 1}

    # Unhealthy still: the next sweep deletes it again, and hints again.
    again = sweep(CHANGE_QUEUE_URL=queued.url, **SWEEP_ENV)
    assert again["deleted"] == 1 and again["writer_hints"] == 1


def test_the_sweep_sends_one_hint_per_host_ten_per_request(
        world: SweepWorld, sweep: Any, queued: Queued) -> None:
    hosts = [world.host("c1") for _ in range(12)]
    for h in hosts:
        world.task(h, ERROR)
        world.task(h, ERROR, service="api")
        world.task(h, OK)
    world.sync()  # records as any agent writes them: the hints are the same either way
    before = world.records()

    summary = sweep(CHANGE_QUEUE_URL=queued.url, **SWEEP_ENV)

    assert summary["errors"] == [] and summary["deleted"] == 24
    assert summary["writer_hints"] == 12
    assert summary["aws_requests"]["sqs:SendMessageBatch"] == 2  # 10 + 2 hints
    after = {r.key for r in world.records()}
    deleted_names = {h.label: sorted({r.name for r in before if r.key not in after
                                      and (r.set_identifier or "").startswith(
                                          f"ecssd:h:{h.label}:")})
                     for h in hosts}
    assert all(len(names) == 2 for names in deleted_names.values())  # web's and api's
    hints: list[Hint] = []
    while batch := queued.queue.receive(0):
        hints.extend(parse_hint(m.body) for m in batch)
    assert sorted((h.host, list(h.verify)) for h in hints) == sorted(deleted_names.items())
    assert {h.zone for h in hints} == {world.zone.zone.name}


def test_no_queue_url_or_a_dry_run_sends_nothing_and_a_failed_send_is_only_reported(
        world: SweepWorld, sweep: Any, queued: Queued) -> None:
    h = world.host("c1")
    world.task(h, ERROR)
    world.task(h, OK)
    world.sync()
    written = {r.key for r in world.records()}

    dry = sweep(CHANGE_QUEUE_URL=queued.url, DRY_RUN="true", **SWEEP_ENV)
    assert dry["deleted"] == 1 and {r.key for r in world.records()} == written
    assert not any(op.startswith("sqs:") for op in dry["aws_requests"])

    direct = sweep(CHANGE_QUEUE_URL="", **SWEEP_ENV)  # direct mode: the agents read the zone
    assert direct["deleted"] == 1 and direct["errors"] == [] and "writer_hints" not in direct
    assert not any(op.startswith("sqs:") for op in direct["aws_requests"])

    world.sync()  # the agent puts the record back
    missing = queued.url.rsplit("/", 1)[0] + "/no-such-queue"
    failed = sweep(CHANGE_QUEUE_URL=missing, **SWEEP_ENV)
    assert failed["deleted"] == 1 and failed["writer_hints"] == 0
    (error,) = failed["errors"]
    assert error.startswith("verify hints to the zone writer (1 host(s)) not sent:"), error
    assert len(written - {r.key for r in world.records()}) == 1  # the sweep still did its work

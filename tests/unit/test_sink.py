"""The agent's one output interface (ecssd_agent/agent/sink.py): both sinks implement all of it,
and the agent and its daemon work through it alone, whatever sink they were given.

Why: before the sink, the agent held a nullable zone plus a publisher, and the daemon and CLI
branched on ``publisher is None`` in five places; a behaviour added to one mode and forgotten
in the other was a branch away. Here a third, recording sink drives the whole daemon loop: if
the agent or the daemon needed anything of a particular sink, it would fail.
"""

from __future__ import annotations

import ast
import inspect
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import EndpointConnectionError

from ecssd_agent.agent.daemon import PRESSURE_SECONDS, Daemon
from ecssd_agent.agent.docker_events import ContainerEvent
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import Delivery, DirectSink, QueuedSink, Sink
from ecssd_agent.agent.status import Status
from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Owns
from tests.unit.test_daemon_loop import HOST, Clock, FakeDocker, FakeStream, cid, settle

ZONE = "servicediscovery.internal."
AGENT = Path(__file__).resolve().parents[2] / "ecssd_agent" / "agent"
#: The interface, as the Protocol declares it (its own members, not object's).
OPERATIONS = sorted(n for n in vars(Sink) if not n.startswith("_"))


def _signature(cls: type, name: str) -> inspect.Signature:
    member = inspect.getattr_static(cls, name)
    if isinstance(member, property):
        assert member.fget is not None
        member = member.fget
    return inspect.signature(member)


def test_both_sinks_implement_every_operation_of_the_interface_with_its_signature() -> None:
    assert {"sync", "remove", "reconcile", "deregister", "read_due", "watch_throttling",
            "owned"} <= set(OPERATIONS)
    for cls in (DirectSink, QueuedSink):
        for name in OPERATIONS:
            assert _signature(cls, name) == _signature(Sink, name), (cls.__name__, name)
            assert isinstance(inspect.getattr_static(cls, name), property) == isinstance(
                inspect.getattr_static(Sink, name), property), (cls.__name__, name)
    # the data member: set by each constructor
    for init in (DirectSink.__init__, QueuedSink.__init__):
        assert "self.zone_name =" in inspect.getsource(init)


def test_the_agent_and_the_daemon_never_name_a_particular_sink() -> None:
    """No import of a sink class or of what only one mode has (Route 53, the publisher), no
    isinstance: the choice is made in cli.build_sink only."""
    mode_names = {"DirectSink", "QueuedSink", "Publisher", "Route53Zone", "publisher", "zone"}
    for module in ("host_agent.py", "daemon.py"):
        tree = ast.parse((AGENT / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not mode_names & {a.name for a in node.names}, (module, node.module)
            elif isinstance(node, ast.Attribute):
                assert node.attr not in mode_names, (module, node.lineno, node.attr)
            elif isinstance(node, ast.Name):
                assert node.id not in mode_names, (module, node.lineno, node.id)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in {"isinstance", "type"}):
                asked = ast.unparse(node.args[0]) if node.args else ""
                assert "sink" not in asked, (module, node.lineno, asked)


class RecordingSink:
    """A third sink, neither direct nor queued: records what the agent and daemon ask of it."""

    def __init__(self) -> None:
        self.zone_name = ZONE
        self.calls: list[tuple[Any, ...]] = []
        self.due = False
        self.fail: Exception | None = None
        self.doubts = 0
        self.attached: dict[str, Any] = {}
        self.on_throttled: Callable[[], None] | None = None

    def sync(self, desired: Sequence[RecordSet], owns: Owns, *, dry_run: bool) -> Delivery:
        self.calls.append(("sync", len(desired), dry_run))
        return Delivery(summary="synced")

    def remove(self, owns: Owns, *, dry_run: bool) -> Delivery:
        self.calls.append(("remove", dry_run))
        return Delivery(summary="removed")

    def attach(self, *, resync: float, clock: Callable[[], float],
               rng: random.Random) -> None:
        self.attached = {"resync": resync, "clock": clock, "rng": rng}

    def reconcile(self, desired: Sequence[RecordSet], owns: Owns, *, full: bool,
                  read_zone: bool, dry_run: bool) -> Delivery:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        self.calls.append(("reconcile", sorted(r.name for r in desired), full, read_zone))
        return Delivery(summary="recorded")

    def deregister(self, owns: Owns, *, dry_run: bool) -> Delivery:
        self.calls.append(("deregister", dry_run))
        return Delivery(summary="deregistered")

    def read_due(self, now: float) -> bool:
        return self.due

    def doubt(self) -> None:
        self.doubts += 1

    def watch_throttling(self, on_throttled: Callable[[], None]) -> None:
        self.on_throttled = on_throttled

    @property
    def owned(self) -> int:
        return 0


def test_the_agent_and_daemon_work_through_the_interface_alone() -> None:
    sink = RecordingSink()
    typed: Sink = sink  # mypy: the recording sink is a Sink too
    docker, clock, rng = FakeDocker(), Clock(), random.Random(7)
    agent = Agent(typed, docker, HOST)  # type: ignore[arg-type]
    daemon = Daemon(agent, coalesce=0.25, resync=300.0, status=Status(),
                    stream_factory=FakeStream, clock=clock, rng=rng)
    stream: FakeStream = daemon._stream  # type: ignore[assignment]
    assert sink.attached == {"resync": 300.0, "clock": clock, "rng": rng}
    names = [f"{HOST.label}.{ZONE}", f"web.{ZONE}"]

    docker.run(cid(1), "web", 32001)
    stream.on_connect()
    assert settle(daemon, clock) == ["startup"]
    assert sink.calls[-1] == ("reconcile", names, True, False)

    # an event: not full, and no read unless the daemon asks for one
    docker.stop(cid(1))
    clock.advance(10.0)
    stream.on_event(ContainerEvent(cid(1), "die", {}))
    assert settle(daemon, clock) == ["event"]
    assert sink.calls[-1] == ("reconcile", [f"{HOST.label}.{ZONE}"], False, False)

    # a resync while the sink says a read is due: full, with a read
    sink.due = True
    clock.advance(300 * 1.1)
    assert settle(daemon, clock) == ["resync"]
    assert sink.calls[-1] == ("reconcile", [f"{HOST.label}.{ZONE}"], True, True)

    # an ambiguous error: the sink is told to doubt what it knows; the retry is full
    sink.due = False
    sink.fail = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    docker.run(cid(2), "web", 32002)
    stream.on_event(ContainerEvent(cid(2), "start", {}))
    assert settle(daemon, clock) == ["event", "retry"]
    assert sink.doubts == 1
    assert sink.calls[-1] == ("reconcile", names, True, False)

    # the sink's throttling signal starts the daemon's back pressure
    assert sink.on_throttled is not None
    sink.on_throttled()
    assert daemon._pressure_until == clock.t + PRESSURE_SECONDS

    # one-shot modes and the deregistration on exit go through the same sink
    assert agent.sync().summary == "synced" and sink.calls[-1] == ("sync", 2, False)
    assert agent.remove().summary == "removed" and sink.calls[-1] == ("remove", False)
    daemon.deregister_on_exit = True
    daemon.stop()
    daemon._run_loop()
    assert sink.calls[-1] == ("deregister", False)
    assert daemon.wait(0.1)


class _Publisher:
    """Records the publications the queued sink asks for."""

    zone = ZONE

    def __init__(self) -> None:
        self.published: list[tuple[int, bool, bool]] = []
        self.last: tuple[RecordSet, ...] | None = None

    def publish(self, desired: Sequence[RecordSet], *, force: bool = False,
                verify: bool = False) -> bool:
        records = tuple(desired)
        if not force and not verify and records == self.last:
            return False
        self.published.append((len(records), force, verify))
        self.last = records
        return True


def test_the_queued_sink_forces_full_reconciles_and_verifies_a_one_shot_removal() -> None:
    publisher = _Publisher()
    sink = QueuedSink(publisher)  # type: ignore[arg-type]
    a = RecordSet(f"{HOST.label}.{ZONE}", "A", ("10.0.0.12",), 0)
    owns: Owns = lambda r: True  # noqa: E731
    first = sink.reconcile([a], owns, full=False, read_zone=False, dry_run=False)
    again = sink.reconcile([a], owns, full=False, read_zone=True, dry_run=False)
    forced = sink.reconcile([a], owns, full=True, read_zone=False, dry_run=False)
    assert (first.notable, again.notable, forced.notable) == (True, False, True)
    sink.deregister(owns, dry_run=False)
    sink.remove(owns, dry_run=False)
    sink.sync([a], owns, dry_run=True)  # a dry run publishes nothing
    assert publisher.published == [(1, False, False), (1, True, False), (0, True, False),
                                   (0, True, True)]
    assert not sink.read_due(float("inf")) and sink.owned == 0

"""The daemon's reconcile loop, driven step by step: fake engine and clock, Route 53 from moto.

The loop is exercised through ``Daemon.poll()`` with a fake clock, so every timing decision
(coalescing window, retry backoff, resync, early deregistration) is checked without sleeping.
Route 53 is moto in-process behind the real adapter, and every request is counted by the
real Clients stats: "an event costs exactly one change request and no listing" is asserted
on the requests actually made.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from ecssd_agent.agent.daemon import (
    ENDING_GRACE,
    PRESSURE_WINDOW,
    RETRY_MAX,
    RETRY_MIN,
    THROTTLED_RETRY_MAX,
    Daemon,
)
from ecssd_agent.agent.docker_events import ContainerEvent
from ecssd_agent.agent.docker_source import DockerUnavailable
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.agent.status import Status
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.coalescer import CAP_FACTOR, CAP_GROWTH, Coalescer
from ecssd_agent.core.model import Container, Host

ZONE = "servicediscovery.internal"
HOST = Host("ip-10-0-0-12", "10.0.0.12")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeDocker:
    """The DockerSource interface over a dict; ``down`` makes every call fail like a dead engine."""

    def __init__(self) -> None:
        self.by_id: dict[str, Container] = {}
        self.down = False
        self.lists = 0
        self.inspects = 0

    def run(self, cid: str, name: str, port: int, running: bool = True) -> Container:
        container = Container(id=cid, name=f"c-{cid[:4]}", env={"SERVICE_8081_NAME": name},
                              labels={}, ports={"8081/tcp": (port,)}, running=running)
        self.by_id[cid] = container
        return container

    def stop(self, cid: str) -> None:
        c = self.by_id[cid]
        self.by_id[cid] = Container(c.id, c.name, c.env, c.labels, c.ports, c.network_mode, False)

    def containers(self) -> list[Container]:
        self.lists += 1
        if self.down:
            raise DockerUnavailable("engine down")
        return [c for c in self.by_id.values() if c.running]

    def inspect(self, cid: str) -> Container | None:
        self.inspects += 1
        if self.down:
            raise DockerUnavailable("engine down")
        return self.by_id.get(cid)


class FakeStream:
    """Stands in for EventStream: the test calls the daemon's callbacks itself."""

    def __init__(self, base_url: str | None, on_event: Callable[[ContainerEvent], None],
                 on_connect: Callable[[], None], on_disconnect: Callable[[str], None]) -> None:
        self.on_event, self.on_connect, self.on_disconnect = on_event, on_connect, on_disconnect

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass


def settle(daemon: Daemon, clock: Clock, limit: int = 400) -> list[str]:
    """Advance the clock step by step, doing whatever falls due; the kinds of work done."""
    done = []
    for _ in range(limit):
        work = daemon.poll()
        if work is not None:
            done.append(work.kind)
            continue
        if not daemon._dirty and not daemon._relist and daemon._retry_at is None:
            break
        clock.advance(0.05)
    return done


def cid(n: int) -> str:
    return f"{n:02d}" * 32


class World:
    """The daemon under test plus the test's own view of the zone (a separate client, so
    that the daemon's request counts are its own)."""

    def __init__(self, clients: Clients, zone: Route53Zone, docker: FakeDocker, clock: Clock,
                 daemon: Daemon) -> None:
        self.clients, self.docker, self.clock, self.daemon = clients, docker, clock, daemon
        self.zone = Route53Zone(Clients(region="us-east-1").client("route53"), zone.zone)
        self.stream: FakeStream = daemon._stream  # type: ignore[assignment]

    def requests(self, operation: str) -> int:
        return self.clients.stats.attempts(operation)

    def records(self) -> dict[str, str]:
        """name -> SRV/A value of every record set of HOST."""
        return {f"{r.type} {r.name}": r.values[0] for r in self.zone.records()
                if (r.set_identifier or "").startswith(f"ecssd:h:{HOST.label}")}

    def event(self, n: int, action: str, **attributes: str) -> None:
        self.stream.on_event(ContainerEvent(cid(n), action, attributes))

    def settle(self, limit: int = 400) -> list[str]:
        return settle(self.daemon, self.clock, limit)


def direct(world: World) -> DirectSink:
    """The daemon's sink: its Route 53 client, known state and read counts."""
    sink = world.daemon.sink
    assert isinstance(sink, DirectSink)
    return sink


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        clients = Clients(region="us-east-1")
        r53 = clients.client("route53")
        vpc = "vpc-0123456789abcdef0"  # moto does not check it: no EC2 backend to start
        r53.create_hosted_zone(Name=ZONE, CallerReference="t",
                               HostedZoneConfig={"PrivateZone": True},
                               VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        zone = Route53Zone(r53, find_zone(r53, ZONE))
        docker = FakeDocker()
        clock = Clock()
        agent = Agent(DirectSink(zone), docker, HOST)  # type: ignore[arg-type]
        daemon = Daemon(agent, coalesce=0.25, resync=300.0,
                        status=Status(clients.stats, clock=clock),
                        stream_factory=FakeStream, clock=clock, rng=random.Random(7))
        yield World(clients, zone, docker, clock, daemon)


def started(world: World, *containers: tuple[int, str, int]) -> None:
    for n, name, port in containers:
        world.docker.run(cid(n), name, port)
    world.stream.on_connect()
    assert world.settle() == ["startup"]
    world.clock.advance(10.0)  # a lull: the next event is a lone one


def test_startup_lists_once_and_registers_everything_in_one_request(world: World) -> None:
    started(world, (1, "web", 32001), (2, "api", 32002))
    assert world.records() == {
        f"A {HOST.label}.{ZONE}.": "10.0.0.12",
        f"SRV web.{ZONE}.": f"1 1 32001 {HOST.label}.{ZONE}.",
        f"SRV api.{ZONE}.": f"1 1 32002 {HOST.label}.{ZONE}.",
    }
    assert world.requests("ChangeResourceRecordSets") == 1
    assert world.requests("ListResourceRecordSets") == 1
    assert world.daemon.status.ready() == (True, "ok")


def test_an_event_costs_one_change_request_and_no_listing(world: World) -> None:
    started(world)
    lists = world.requests("ListResourceRecordSets")
    world.docker.run(cid(3), "web", 32003)
    world.event(3, "start")
    assert world.daemon.poll() is None  # inside the coalescing window: nothing yet
    assert world.settle() == ["event"]
    assert f"SRV web.{ZONE}." in world.records()
    assert world.requests("ChangeResourceRecordSets") == 2
    assert world.requests("ListResourceRecordSets") == lists


def test_events_within_the_window_are_one_change_request(world: World) -> None:
    started(world)
    before = world.requests("ChangeResourceRecordSets")
    for n in range(10, 60):  # 50 starts, 0.1 s apart: a burst spread over 5 s
        world.docker.run(cid(n), f"svc{n}", 30000 + n)
        world.event(n, "start")
        world.clock.advance(0.1)
        world.daemon.poll()
    world.settle()
    assert len([k for k in world.records() if k.startswith("SRV")]) == 50
    assert world.requests("ChangeResourceRecordSets") - before <= 3


def test_started_and_died_before_processing_leaves_nothing(world: World) -> None:
    started(world)
    world.docker.run(cid(4), "flash", 32004, running=False)  # exited at once
    world.event(4, "start")
    world.event(4, "die")
    world.settle()
    assert f"SRV flash.{ZONE}." not in world.records()
    assert world.requests("ChangeResourceRecordSets") == 1  # the startup one only


def test_kill_deregisters_early_and_restart_brings_it_back(world: World) -> None:
    started(world, (5, "web", 32005))
    world.event(5, "kill", signal="15")  # still running: shutting down
    world.settle()
    assert f"SRV web.{ZONE}." not in world.records()
    world.event(5, "die")
    world.event(5, "stop")
    world.docker.stop(cid(5))
    world.settle()
    assert f"SRV web.{ZONE}." not in world.records()
    world.docker.run(cid(5), "web", 32105)  # docker start / restart: a new host port
    world.event(5, "start")
    world.settle()
    assert world.records()[f"SRV web.{ZONE}."] == f"1 1 32105 {HOST.label}.{ZONE}."


def test_a_reload_signal_does_not_deregister(world: World) -> None:
    started(world, (6, "web", 32006))
    world.event(6, "kill", signal="1")  # SIGHUP: reload
    world.settle()
    assert f"SRV web.{ZONE}." in world.records()


def test_a_container_ignoring_sigterm_is_registered_again_after_the_grace(world: World) -> None:
    started(world, (7, "web", 32007))
    world.event(7, "kill", signal="15")
    world.settle()
    assert f"SRV web.{ZONE}." not in world.records()
    world.clock.advance(ENDING_GRACE)
    world.daemon.poll()
    world.settle()
    assert f"SRV web.{ZONE}." in world.records()


def test_engine_unreachable_keeps_records_and_retries(world: World) -> None:
    started(world, (8, "web", 32008))
    world.docker.down = True
    world.event(8, "die")
    world.clock.advance(1.0)
    assert world.daemon.poll() is not None
    assert f"SRV web.{ZONE}." in world.records()  # unknown is not gone
    healthy, reason = world.daemon.status.ready()
    assert not healthy and "cannot inspect" in reason
    world.docker.down = False
    world.docker.stop(cid(8))
    world.clock.advance(RETRY_MIN)
    assert world.settle() == ["retry"]
    assert f"SRV web.{ZONE}." not in world.records()
    assert world.daemon.status.ready() == (True, "ok")


def test_no_listing_of_the_containers_means_no_change(world: World) -> None:
    world.docker.run(cid(9), "web", 32009)
    world.docker.down = True
    world.stream.on_connect()
    world.daemon.poll()
    assert world.requests("ChangeResourceRecordSets") == 0
    assert world.requests("ListResourceRecordSets") == 0
    world.docker.down = False
    world.clock.advance(RETRY_MIN)
    world.settle()
    assert f"SRV web.{ZONE}." in world.records()


def test_route53_unreachable_keeps_desired_state_and_converges_later(world: World) -> None:
    started(world)
    client: Any = direct(world).zone.client
    real = client.change_resource_record_sets
    calls = {"n": 0}

    def failing(**kwargs: Any) -> Any:
        calls["n"] += 1
        raise EndpointConnectionError(endpoint_url="https://route53.amazonaws.com")

    client.change_resource_record_sets = failing
    world.docker.run(cid(11), "web", 32011)
    world.event(11, "start")
    world.settle(limit=7)
    assert calls["n"] >= 1
    assert not world.daemon.status.ready()[0]
    retry_at = world.daemon._retry_at
    assert retry_at is not None
    # backoff grows while it keeps failing
    world.clock.t = retry_at
    world.daemon.poll()
    assert world.daemon._retry_at is not None and world.daemon._retry_at - world.clock.t > RETRY_MIN
    client.change_resource_record_sets = real
    world.clock.t = world.daemon._retry_at
    world.settle()
    assert f"SRV web.{ZONE}." in world.records()
    assert world.daemon.status.ready() == (True, "ok")


def test_hand_deleted_record_is_repaired_by_the_resync(world: World) -> None:
    started(world, (12, "web", 32012))
    srv = next(r for r in world.zone.records() if r.type == "SRV")
    from ecssd_agent.core.model import Action, Change
    world.zone.apply([Change(Action.DELETE, srv)])
    world.clock.advance(300 * 1.1)
    assert world.settle() == ["resync"]
    assert f"SRV web.{ZONE}." in world.records()


def test_a_rejected_batch_is_replanned_on_a_fresh_listing(world: World) -> None:
    started(world, (13, "web", 32013), (14, "api", 32014))
    srv = next(r for r in world.zone.records() if r.name.startswith("web."))
    from ecssd_agent.core.model import Action, Change
    world.zone.apply([Change(Action.DELETE, srv)])  # by hand, behind the daemon's back
    world.docker.stop(cid(13))
    world.docker.stop(cid(14))
    world.event(13, "die")
    world.event(14, "die")
    assert world.settle() == ["event"]
    assert set(world.records()) == {f"A {HOST.label}.{ZONE}."}
    assert world.daemon.status.ready() == (True, "ok")


def test_deregister_on_exit_deletes_only_this_hosts_records(world: World) -> None:
    started(world, (15, "web", 32015))
    other = {"Name": f"web.{ZONE}.", "Type": "SRV", "TTL": 0, "Weight": 1,
             "SetIdentifier": "ecssd:h:ip-10-0-0-99:aaaaaaaaaaaa:8081/tcp::",
             "ResourceRecords": [{"Value": f"1 1 1 ip-10-0-0-99.{ZONE}."}]}
    client: Any = world.zone.client
    client.change_resource_record_sets(HostedZoneId=world.zone.zone.id, ChangeBatch={
        "Changes": [{"Action": "CREATE", "ResourceRecordSet": other}]})
    world.daemon.deregister_on_exit = True
    lists = world.requests("ListResourceRecordSets")
    world.daemon.stop()
    world.daemon._run_loop()
    assert world.records() == {}
    assert any(r.set_identifier == other["SetIdentifier"] for r in world.zone.records())
    assert world.requests("ListResourceRecordSets") == lists  # it knew what it owned
    assert world.daemon.wait(0.1)


def test_reconnect_relists_every_container(world: World) -> None:
    started(world, (16, "web", 32016))
    world.stream.on_disconnect("engine restarting")
    assert world.daemon.status.ready()[0] is False
    world.docker.stop(cid(16))  # stopped while nobody listened: no event
    world.docker.run(cid(17), "api", 32017)
    world.stream.on_connect()
    assert world.settle() == ["relist"]
    assert f"SRV web.{ZONE}." not in world.records()
    assert f"SRV api.{ZONE}." in world.records()
    assert world.daemon.status.ready() == (True, "ok")


def test_coalescer_window_cap_and_growth() -> None:
    c = Coalescer(0.25)
    assert c.due() is None
    c.add(10.0)
    assert c.due() == 10.25
    c.add(10.2)
    assert c.due() == pytest.approx(10.45)  # extended while events keep coming
    for i in range(1, 20):
        c.add(10.0 + i * 0.1)
    assert c.due() == 10.0 + 0.25 * CAP_FACTOR  # but capped
    c.close()
    c.requested(11.0)
    c.add(11.5)  # a burst goes on: the next batch gathers longer, and waits out short gaps
    assert c.busy and c.cap == 0.25 * CAP_FACTOR * CAP_GROWTH
    assert c.due() == 11.5 + c.cap / 2  # closes after a silence of half its cap
    c.close()
    c.requested(12.5)
    c.add(12.6)
    assert c.cap == 0.25 * CAP_FACTOR * CAP_GROWTH ** 2
    c.close()
    c.requested(13.0)
    c.add(100.0)  # after a lull: quick again
    assert not c.busy and c.due() == 100.25
    c.close()
    c.requested(100.25)
    c.add(100.5)  # busy again
    c.add(100.6, removal=True)
    assert c.busy and c.due() == 100.6 + 0.25 * CAP_FACTOR  # a removal does not wait long
    c.close()
    for t in (110.5, 111.0, 111.5):  # batches that needed no change request: no burst
        c.add(t)
        assert not c.busy
        c.close()


def batches(events: list[float]) -> int:
    """How many batches the coalescer makes of events at these times."""
    c = Coalescer(0.25)
    t, count, pending = 0.0, 0, 0
    events = sorted(events)
    while events or pending:
        due = c.due()
        if events and (due is None or events[0] < due):
            t = events.pop(0)
            c.add(t)
            pending += 1
        else:
            assert due is not None
            t = due
            c.close()
            c.requested(t)
            count, pending = count + 1, 0
    return count


def test_a_batch_opened_during_a_reconcile_that_made_a_request_is_in_the_burst() -> None:
    c = Coalescer(0.25)
    c.add(10.0)
    c.close()  # taken at 11.0, say; the reconcile takes a while
    c.add(11.2)  # an event meanwhile: no request known yet, so it looks like a lull
    assert not c.busy and c.due() == pytest.approx(11.45)
    c.requested(11.3)  # the reconcile made its request
    assert c.busy and c.due() == pytest.approx(11.2 + c.cap / 2)
    c.close()
    c.add(14.0)  # the burst goes on during the next reconcile: the cap keeps growing
    c.requested(14.1)
    assert c.cap == 0.25 * CAP_FACTOR * CAP_GROWTH ** 2


@pytest.mark.parametrize("gap", [0.02, 0.14, 0.2, 0.24])
def test_a_burst_of_50_is_three_batches_whatever_the_pace_of_its_events(gap: float) -> None:
    """50 starts ``gap`` apart, up to 12 s: an idle engine here starts ~7/s, a loaded one ~4/s."""
    assert batches([i * gap for i in range(50)]) <= 3


def test_a_long_trickle_costs_one_request_per_max_cap() -> None:
    assert batches([i * 0.6 for i in range(100)]) <= 2 + 60 / (0.25 * 36) + 1


def test_isolated_events_are_batches_of_their_own() -> None:
    assert batches([i * 2.0 for i in range(10)]) == 10


def test_startup_retries_route53_errors_and_stops_at_once() -> None:
    import threading
    import time

    from ecssd_agent.agent import daemon as daemon_module
    from ecssd_agent.aws.route53 import ZoneError

    calls: list[float] = []
    sentinel: Any = object()

    def flaky(settings: Any) -> Any:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        return sentinel

    stop = threading.Event()
    status = Status()
    status.docker_up()  # (so that /readyz names start-up, not Docker)
    assert daemon_module._build_until_stopped(None, flaky, stop, status) is sentinel  # type: ignore[arg-type]
    assert len(calls) == 3 and calls[2] - calls[0] >= RETRY_MIN * 3  # backed off
    # start-up retrying AWS is alive (/healthz), not ready (/readyz)
    assert status.health()[0] is True
    ready, why = status.ready()
    assert not ready and "starting: cannot reach Route 53" in why

    def no_zone(settings: Any) -> Any:
        raise ZoneError("no private hosted zone named x.")

    with pytest.raises(ZoneError):  # not transient: the CLI reports it and exits 1
        daemon_module._build_until_stopped(None, no_zone, stop, status)  # type: ignore[arg-type]

    def hanging(settings: Any) -> Any:
        time.sleep(30)  # botocore retrying an endpoint that does not answer

    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    assert daemon_module._build_until_stopped(None, hanging, stop, status) is None  # type: ignore[arg-type]
    assert time.monotonic() - started < 2


# --- reads at fleet scale (issue 10: name-scoped, budgeted reads) ---------------------------

def foreign(name: str, n: int) -> dict[str, Any]:
    """A record set of another host, under ``name``."""
    return {"Name": f"{name}.{ZONE}.", "Type": "SRV", "TTL": 0, "Weight": 1,
            "SetIdentifier": f"ecssd:h:ip-10-1-{n // 250}-{n % 250}:{n:012d}:8081/tcp::",
            "ResourceRecords": [{"Value": f"1 1 {20000 + n} ip-10-1-{n // 250}-{n % 250}.{ZONE}."}]}


def fill(world: World, count: int) -> None:
    """``count`` record sets of other hosts, spread over names before, between and after this
    host's names, 99 under the very name this host publishes (Route 53 takes 100 weighted
    record sets of one name and type: this host's is the 100th)."""
    sets = [foreign("web" if n % 10 == 0 and n < 990 else
                    ("aaa", "mmm", "web", "zzz")[n % 4] + f"{n % 50:02d}", n)
            for n in range(count)]
    client: Any = world.zone.client
    for i in range(0, count, 500):
        client.change_resource_record_sets(HostedZoneId=world.zone.zone.id, ChangeBatch={
            "Changes": [{"Action": "CREATE", "ResourceRecordSet": r} for r in sets[i:i + 500]]})


def test_a_periodic_resync_on_a_big_zone_reads_only_this_hosts_names(world: World) -> None:
    fill(world, 1500)  # 1,504 record sets: a full listing is 6 pages
    started(world, (21, "web", 32021), (22, "zzzzz", 32022))
    assert world.requests("ListResourceRecordSets") == 6  # startup: the one full listing
    assert direct(world).full_reads == 1
    # a resync while the fleet's read budget does not allow a read: no listing at all
    world.clock.advance(300 * 1.1)
    assert world.settle() == ["resync"]
    assert world.requests("ListResourceRecordSets") == 6
    # a record deleted by hand is repaired by the first budgeted read, which lists only
    # this host's 3 names (A, web, zzzzz), one page each at most.
    srv = next(r for r in world.zone.records() if r.type == "SRV" and r.name.startswith("zzzzz.")
               and (r.set_identifier or "").startswith(f"ecssd:h:{HOST.label}"))
    from ecssd_agent.core.model import Action, Change
    world.zone.apply([Change(Action.DELETE, srv)])
    world.clock.t = max(direct(world)._schedule.next_at, world.daemon._next_resync) + 0.1
    assert world.settle() == ["resync"]
    assert f"SRV zzzzz.{ZONE}." in world.records()
    listed = world.requests("ListResourceRecordSets") - 6
    assert 1 <= listed <= 3
    assert direct(world).full_reads == 1
    # every foreign record set is untouched
    others = {r.set_identifier for r in world.zone.records()
              if (r.set_identifier or "").startswith("ecssd:h:ip-10-1-")}
    assert len(others) == 1500


def throttling(**kwargs: Any) -> Any:
    raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}},
                      "ChangeResourceRecordSets")


def test_throttling_keeps_the_known_state_and_gathers_longer(world: World) -> None:
    started(world, (23, "web", 32023))
    lists = world.requests("ListResourceRecordSets")
    client: Any = direct(world).zone.client
    real = client.change_resource_record_sets
    client.change_resource_record_sets = throttling
    world.docker.run(cid(24), "api", 32024)
    world.event(24, "start")
    world.settle(limit=8)
    assert world.daemon._retry_at is not None  # failed, retrying
    world.docker.run(cid(25), "db", 32025)
    world.event(25, "start")  # within a minute of the Throttling answer: a 10 s window
    assert world.daemon._coalescer.window >= PRESSURE_WINDOW
    client.change_resource_record_sets = real
    world.clock.advance(RETRY_MAX)
    world.settle()
    assert {f"SRV api.{ZONE}.", f"SRV db.{ZONE}."} <= set(world.records())
    assert world.requests("ListResourceRecordSets") == lists  # a definite answer: no read


def test_an_ambiguous_error_rereads_only_this_hosts_names(world: World) -> None:
    started(world, (26, "web", 32026))
    lists = world.requests("ListResourceRecordSets")
    client: Any = direct(world).zone.client
    real = client.change_resource_record_sets

    def timeout(**kwargs: Any) -> Any:
        client.change_resource_record_sets = real
        raise EndpointConnectionError(endpoint_url="https://route53.amazonaws.com")

    client.change_resource_record_sets = timeout
    world.docker.run(cid(27), "api", 32027)
    world.event(27, "start")
    world.settle()
    assert f"SRV api.{ZONE}." in world.records()
    assert world.requests("ListResourceRecordSets") > lists  # the write may have happened
    assert direct(world).full_reads == 1  # ... but only this host's names were read


def test_throttled_writes_are_retried_soon_and_replanned(world: World) -> None:
    """A definite answer (Throttling) is retried after random x min(2^k, 8) s, not botocore's
    up-to-20 s waits nor the 30 s cap for unknown errors, and the retry carries what became
    pending meanwhile."""
    started(world, (28, "web", 32028))
    client: Any = direct(world).zone.client
    real = client.change_resource_record_sets
    calls: list[int] = []

    def throttled(**kwargs: Any) -> Any:
        calls.append(len(kwargs["ChangeBatch"]["Changes"]))
        if len(calls) >= 6:
            client.change_resource_record_sets = real
            return real(**kwargs)
        return throttling()

    client.change_resource_record_sets = throttled
    world.docker.run(cid(29), "api", 32029)
    world.event(29, "start")
    delays = []
    for _ in range(5):
        for _ in range(400):  # step until the write has failed and a retry is scheduled
            if world.daemon._retry_at is not None:
                break
            if world.daemon.poll() is None:
                world.clock.advance(0.05)
        delays.append(world.daemon._retry_at - world.clock())
        if len(delays) == 2:  # a new container while the write is pending joins the retry
            world.docker.run(cid(30), "db", 32030)
            world.event(30, "start")
        world.clock.advance(delays[-1])
        world.daemon.poll()
    world.settle()
    assert all(0 <= d <= min(2 ** k, THROTTLED_RETRY_MAX) for k, d in enumerate(delays)), delays
    assert {f"SRV api.{ZONE}.", f"SRV db.{ZONE}."} <= set(world.records())
    assert calls[-1] == 2  # the last, successful request carried both pending changes

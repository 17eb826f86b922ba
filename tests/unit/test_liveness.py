"""``/healthz`` is liveness: the loop alive and making progress. Route 53 throttling, an
outage or a failing reconcile are retried by the loop and never fail it; a stuck loop and a
Docker event stream lost beyond its bound do. Driven with the fake clock of test_daemon_loop;
Route 53 is moto in-process behind the real adapter."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ecssd_agent.agent.liveness import Bounds, Liveness
from ecssd_agent.core.model import Container
from tests.unit.test_daemon_loop import ZONE, Clock, World, cid, direct, started, world

__all__ = ["world"]  # fixture


def throttled(**kwargs: Any) -> Any:
    raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                       "ResponseMetadata": {"HTTPStatusCode": 400}}, "ChangeResourceRecordSets")


def test_an_agent_whose_every_route53_write_is_throttled_stays_alive(world: World) -> None:
    started(world, (1, "web", 32001))
    client: Any = direct(world).zone.write_client
    client.change_resource_record_sets = throttled
    world.docker.run(cid(2), "api", 32002)
    world.event(2, "start")
    failures = 0
    for _ in range(2000):  # half an hour of fake time: resyncs and retries, all throttled
        work = world.daemon.poll()
        if work is not None:
            failures += work.kind in ("event", "retry", "resync")
            assert world.daemon.status.health()[0], world.daemon.status.health()
        world.clock.advance(1.0)
    assert failures >= 20
    alive, body = world.daemon.status.health()
    assert alive and "not ready: reconcile: " in body and "Throttling" in body
    assert world.daemon.status.ready()[0] is False
    errors = world.daemon.status.reconcile_errors.labels("Throttling")._value.get()
    assert errors >= 20
    assert f"SRV api.{ZONE}." not in world.records()


def test_a_reconcile_stuck_past_its_bound_fails_healthz(world: World) -> None:
    started(world, (1, "web", 32001))
    seen: list[tuple[bool, str]] = []
    real = world.docker.containers

    def hanging() -> list[Container]:  # Docker answers after 11 minutes
        seen.append(world.daemon.status.health())
        world.clock.advance(Bounds().stuck + 60)
        seen.append(world.daemon.status.health())
        return real()

    world.docker.containers = hanging  # type: ignore[method-assign]
    world.clock.advance(300 * 1.1)
    assert world.daemon.poll() is not None  # the resync lists the containers
    assert seen[0] == (True, "ok")
    assert seen[1][0] is False and seen[1][1].startswith("stuck: one reconcile has run")
    assert world.daemon.status.health() == (True, "ok")  # it finished: alive again


def test_docker_lost_beyond_its_bound_fails_healthz(world: World) -> None:
    started(world, (1, "web", 32001))
    world.stream.on_disconnect("stream error: connection reset")
    world.clock.advance(Bounds().docker - 1)
    alive, body = world.daemon.status.health()
    assert alive and "not ready: docker" in body
    world.clock.advance(2)
    alive, body = world.daemon.status.health()
    assert not alive and body.startswith("docker: stream error: connection reset for ")
    world.stream.on_connect()
    assert world.daemon.status.health()[0]


def test_a_loop_that_does_not_wake_when_work_is_due_fails_healthz() -> None:
    clock = Clock()
    liveness = Liveness(clock)
    liveness.waiting(clock() + 30)
    clock.advance(30 + Bounds().late)
    assert liveness.check() == (True, "alive")
    clock.advance(1)
    alive, reason = liveness.check()
    assert not alive and "has not woken up 61s after work was due" in reason

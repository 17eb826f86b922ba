"""The health sweep acts on evidence, and no single service, host or task definition can stall
or crash it: end to end against the moto server, real HTTP and TCP listeners on loopback and
records written by the agent's own code (tests/integration/sweep_world.py).

Each test is a way an operator saw the sweep go wrong: a small cluster never cleaned, a
service that does not speak HTTP judged as if it did, a forged record at a sidecar's port
getting a healthy task stopped, one task definition's health-check path crashing every
sweep, and a broken path from the sweep passing for sick instances (all of them, or one
host's). Each runs the sweep as often as it takes: an instance is acted on after
CHECK_FAILURES (2) failing sweeps in a row, a count ECS keeps as a tag of the task.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from ecssd_agent.core import naming
from ecssd_agent.core.model import Action, Change, Routing
from ecssd_agent.core.ownership import Owner
from ecssd_agent.core.records import routed, srv_value
from tests.integration.sweep_world import (
    ERROR,
    HANG,
    OK,
    REDIS,
    REFUSE,
    SILENT,
    HttpFleet,
    SweepWorld,
    WorldTask,
    keys,
)
from tests.integration.test_health_lambda import fleet, session, stop_calls, sweep, world

__all__ = ["fleet", "session", "sweep", "world"]  # fixtures


def _running(world: SweepWorld, tasks: Sequence[WorldTask]) -> bool:
    return all(world.task_state(t)["lastStatus"] == "RUNNING" for t in tasks)


def _probed(fleet: HttpFleet, task: WorldTask, port: int | None = None) -> bool:
    return (task.host.ip, port or task.port) in {(ip, p) for ip, p, _ in fleet.requests}


def test_a_cluster_of_two_is_cleaned_and_its_sick_instance_stopped(
        world: SweepWorld, sweep: Any, fleet: HttpFleet) -> None:
    """One healthy and one sick instance, a host that is gone and a task ECS says is STOPPED.
    Before: 1 of 2 probed failed, at least PROBE_OUTAGE_FRACTION=0.5, so every run refused
    everything, the gone host's and the stopped task's records included, forever."""
    h1, h2, gone_host = world.host("c1"), world.host("c1"), world.host("c1")
    healthy, sick = world.task(h1, OK), world.task(h2, ERROR)
    on_gone = world.task(gone_host, OK)
    stopped = world.task(h1, OK)
    world.sync()
    gone_keys = world.owned_by(gone_host)
    stopped_key = world.srv_key(stopped)
    world.kill_host(gone_host)
    world.stop_task(stopped)
    before = keys(world.records())

    first = sweep()

    # ECS's word needs no probe: the gone host's records and the stopped task's go now.
    assert before - keys(world.records()) == gone_keys | {stopped_key}
    assert first["deletion_reasons"] == {"host gone": 2, "task gone": 1}
    assert not _probed(fleet, on_gone) and not _probed(fleet, stopped)
    # The sick instance has failed once: counted on its task, not yet acted on.
    assert [(f["task"], f["failures"]) for f in first["failing"]] == [(f"c1/{sick.id}", 1)]
    assert world.task_tags(sick) == {f"ecssd:check-failures:{sick.port}": "1"}
    assert stop_calls(sweep) == 0 and first["outcome"] == "ok" and not first["refused"]

    second = sweep()  # a fresh execution environment: the count is read back from ECS

    assert before - keys(world.records()) == gone_keys | {stopped_key, world_srv(before, sick)}
    assert second["stopped"] == [f"c1/{sick.id}"] and stop_calls(sweep) == 1
    assert world.task_state(sick)["lastStatus"] == "STOPPED"
    assert world.task_state(sick)["stoppedReason"] == "ecssd health check failed: HTTP 500"
    assert _running(world, [healthy]) and second["healthy"] == 1
    assert second["errors"] == [] and second["outcome"] == "ok"


def world_srv(before: set[tuple[str, str, str | None]],
              task: WorldTask) -> tuple[str, str, str | None]:
    return next(k for k in before if k[1] == "SRV" and (k[2] or "").endswith(":" + task.id))


def test_services_that_do_not_speak_http_are_kept_and_clean_up_goes_on(
        world: SweepWorld, sweep: Any, fleet: HttpFleet) -> None:
    """Two Redis-like services answer GET /health with -ERR: before, their address looked
    unreachable and the guard refused every sweep (a stopped task's record stayed forever);
    with fewer of them they were stopped as unhealthy. Now a service that answers in another
    protocol is judged by its TCP connection (accepted: healthy), SERVICE_<port>_CHECK=tcp
    asks for a TCP check (a service that never speaks first passes it), and =none for none."""
    cache, other = world.host("c1"), world.host("c1")
    redis = [world.task(cache, REDIS) for _ in range(2)]
    quiet = world.task(cache, HANG, env={"SERVICE_8080_CHECK": "tcp"})
    unchecked = world.task(cache, REFUSE, env={"SERVICE_8080_CHECK": "none"})
    web = [world.task(other, OK) for _ in range(2)]
    stopped = world.task(other, OK)
    world.sync()
    stopped_key = world.srv_key(stopped)
    world.stop_task(stopped)
    before = keys(world.records())

    summaries = [sweep() for _ in range(2)]  # CHECK_FAILURES sweeps

    assert before - keys(world.records()) == {stopped_key}
    assert stop_calls(sweep) == 0 and _running(world, [*redis, quiet, unchecked, *web])
    for summary in summaries:  # nothing of them is ever counted
        assert summary["failing"] == [] and summary["held"] == [] and summary["unhealthy"] == []
        assert summary["healthy"] == 5 and summary["errors"] == []
    assert all(world.task_tags(t) == {} for t in [*redis, quiet])
    assert not _probed(fleet, unchecked)  # CHECK=none: never probed, its record kept
    assert _probed(fleet, redis[0])
    # CHECK=tcp: connected and closed, no request sent (the server read an empty line).
    assert {path for ip, port, path in fleet.requests if (ip, port) == (cache.ip, quiet.port)} \
        == {""}


def test_a_forged_record_at_a_sidecars_port_is_never_probed(
        world: SweepWorld, sweep: Any, fleet: HttpFleet) -> None:
    """A record naming the victim's task and the host port ECS bound for its second,
    undeclared port (a metrics sidecar answering 404 at /health). Before: probed, judged
    unhealthy, the task stopped, although the README promised otherwise."""
    victim_host, other = world.host("c1"), world.host("c1")
    victim = world.task(victim_host, OK, sidecar=True)
    others = [world.task(other) for _ in range(3)]
    world.sync()
    forged = routed(naming.record_name("web", world.zone.zone.name), "SRV",
                    [srv_value(victim.sidecar_port, naming.host_record_name(
                        victim_host.label, world.zone.zone.name))],
                    Owner(host=victim_host.label, container="f0f0f0f0f0f0", port="9100/tcp",
                          cluster="c1", task=victim.id), Routing.WEIGHTED, 0)
    world.zone.apply([Change(Action.CREATE, forged)])
    before = keys(world.records())

    summaries = [sweep() for _ in range(2)]

    assert keys(world.records()) == before  # the forged record too: it is not evidence
    assert stop_calls(sweep) == 0 and _running(world, [victim, *others])
    assert not _probed(fleet, victim, victim.sidecar_port) and _probed(fleet, victim)
    assert world.task_tags(victim) == {}
    for summary in summaries:
        assert [s["instance"] for s in summary["suspect"]] == [forged.set_identifier]
        assert "declares no SERVICE_9100_NAME" in summary["suspect"][0]["reason"]
        assert summary["healthy"] == 4 and summary["failing"] == [] and not summary["unhealthy"]


def test_a_path_that_is_not_ascii_is_that_instances_no_verdict(
        world: SweepWorld, sweep: Any, fleet: HttpFleet,
        caplog: pytest.LogCaptureFixture) -> None:
    """SERVICE_8080_CHECK_HTTP=/santé in one task definition. Before: UnicodeEncodeError out
    of the probe and out of lambda_handler, so no sweep completed anywhere while that task
    ran, and no summary was logged. Now that instance has no verdict, logged with its task
    and the cause, and the rest of the sweep is done."""
    host, other = world.host("c1"), world.host("c1")
    accented = world.task(host, OK, check_http="/santé")
    sick = world.task(other, ERROR)
    fine = [world.task(other) for _ in range(2)]
    stopped = world.task(host)
    world.sync()
    stopped_key = world.srv_key(stopped)
    world.stop_task(stopped)
    before = keys(world.records())

    with caplog.at_level(logging.INFO):
        summary = sweep()

    assert before - keys(world.records()) == {stopped_key}
    (no_verdict,) = summary["no_verdict"]
    assert no_verdict["task"] == f"c1/{accented.id}"
    assert "SERVICE_8080_CHECK_HTTP='/santé' is not ASCII" in no_verdict["reason"]
    lines = [r.getMessage() for r in caplog.records if r.name == "ecssd_agent.sweep.runner"
             and r.getMessage().startswith("no verdict")]
    assert lines == [f"no verdict for {no_verdict['instance']} (task c1/{accented.id}): "
                     f"{no_verdict['reason']}"]
    assert not _probed(fleet, accented)
    assert [f["task"] for f in summary["failing"]] == [f"c1/{sick.id}"]
    assert summary["healthy"] == 2 and summary["errors"] == []
    summaries = [r for r in caplog.records if r.name == "health_lambda.summary"]
    assert len(summaries) == 1  # the sweep finished and said so
    assert _running(world, [accented, *fine]) and world.task_tags(accented) == {}


def test_a_total_outage_acts_on_nothing_but_what_ecs_says_is_gone(
        world: SweepWorld, sweep: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Every probe fails: some hosts drop the connection attempts, others refuse or answer
    HTTP 500 on every port (a dependency every check includes). No verdict is acted on, for
    as many sweeps as it lasts; the STOPPED task's record still goes, since ECS says so.
    Before, the outage guard refused it too."""
    dropped, broken = world.host("c1"), world.host("c1")
    failing = [world.task(dropped, SILENT) for _ in range(2)]
    failing += [world.task(broken, ERROR), world.task(broken, REFUSE)]
    stopped = world.task(broken)
    world.sync()
    stopped_key = world.srv_key(stopped)
    world.stop_task(stopped)
    before = keys(world.records())

    with caplog.at_level(logging.WARNING, logger="ecssd_agent.sweep.runner"):
        summaries = [sweep() for _ in range(3)]

    assert before - keys(world.records()) == {stopped_key}
    assert stop_calls(sweep) == 0 and _running(world, failing)
    assert all(world.task_tags(t) == {} for t in failing)
    for summary in summaries:
        assert summary["outcome"] == "held" and summary["guard"]["fail_open"]
        assert "every one of the 4 probed instances failed" in summary["held_back"]
        assert len(summary["held"]) == 4 and summary["failing"] == []
    lines = [r for r in caplog.records if getattr(r, "metric", "") == "ecssd_sweep_refused"]
    assert len(lines) == 3 and {r.outcome for r in lines} == {"held"}


def test_one_unreachable_host_holds_back_only_its_own_instances(
        world: SweepWorld, sweep: Any) -> None:
    """Nothing at one host answers (its connection attempts are dropped); another host
    answers for three healthy instances and one sick one. Before, that one host (and 3 of 6
    failing) refused the whole run: the sick instance elsewhere was never stopped."""
    dark, lit = world.host("c1"), world.host("c1")
    unreachable = [world.task(dark, SILENT) for _ in range(2)]
    healthy = [world.task(lit, OK) for _ in range(3)]
    sick = world.task(lit, ERROR)
    world.sync()
    before = keys(world.records())

    first, second = sweep(), sweep()

    assert before - keys(world.records()) == {world_srv(before, sick)}
    assert world.task_state(sick)["lastStatus"] == "STOPPED"
    assert _running(world, [*unreachable, *healthy])
    assert all(world.task_tags(t) == {} for t in unreachable)
    assert second["stopped"] == [f"c1/{sick.id}"]
    assert first["outcome"] == "held" and first["guard"]["unreachable"] == [dark.ip]
    assert sorted(h["task"] for h in first["held"]) == sorted(f"c1/{t.id}" for t in unreachable)
    assert all(f"nothing at {dark.ip} answered" in h["held"] for h in first["held"])
    assert [f["task"] for f in first["failing"]] == [f"c1/{sick.id}"]

"""The health sweep Lambda against a moto server (ECS, EC2, Route 53) and real HTTP servers.

Each test builds hosts (EC2 instances on 127.0.x.y registered as container instances),
starts tasks on them with StartTask, lets each host's agent write its records with the
agent's own code, then calls ``lambda_handler`` and asserts the exact deletions and
StopTask calls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from ecssd_agent.aws.clients import Clients
from ecssd_agent.core import naming
from ecssd_agent.core.model import Action, Change, RecordSet, Routing
from ecssd_agent.core.ownership import Owner
from ecssd_agent.core.records import routed, srv_value
from health_lambda import handler
from tests.integration.sweep_world import ERROR, HANG, OK, REFUSE, HttpFleet, SweepWorld, keys
from tests.support.moto_server import MotoServer

FAST_CHECKS = {"CHECK_TIMEOUT": "0.5", "CHECK_RETRIES": "2", "CHECK_CONCURRENCY": "16"}


class FakeContext:
    function_name = "ecssd-health-sweep"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture
def fleet() -> Iterator[HttpFleet]:
    servers = HttpFleet()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def world(aws: MotoServer, fleet: HttpFleet) -> SweepWorld:
    aws.manual_ecs_transitions()  # tasks stay RUNNING until StopTask
    return SweepWorld(aws.client, fleet)


@pytest.fixture(scope="module")
def session() -> boto3.session.Session:
    """One botocore session for every sweep of the module: parsing the EC2 model is what a
    Lambda cold start pays once, and tests need not pay it per sweep."""
    return boto3.session.Session()


@pytest.fixture
def sweep(world: SweepWorld, monkeypatch: pytest.MonkeyPatch,
          session: boto3.session.Session) -> Iterator[Any]:
    """``sweep(**env)`` runs the handler with these variables and fresh clients; ``hooks``
    are (botocore event, handler) pairs registered on those clients (fault injection).
    ``ecs_agent``: DescribeTasks reports the world's port bindings, as real ECS does
    (:meth:`SweepWorld.report_bindings`); off, the sweep sees moto's answer as it is."""
    made: list[Clients] = []

    def run(event: Any = None, context: Any = None,
            hooks: Sequence[tuple[str, Callable[..., Any]]] = (), ecs_agent: bool = True,
            **env: str) -> dict[str, Any]:
        def factory() -> Clients:
            clients = Clients(region="us-east-1", max_attempts=2, session=session)
            for name, hook in [*([world.bindings_hook()] if ecs_agent else []), *hooks]:
                clients.client(name.split(".")[1]).meta.events.register(name, hook)
            made.append(clients)
            return clients

        for name in ("ECS_CLUSTERS", "DRY_RUN", "MAX_DELETE_FRACTION", "STOP_UNHEALTHY",
                     "CHECK_HEALTH", "CHECK_FAILURES"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {"HOSTED_ZONE_ID": world.zone_id, **FAST_CHECKS, **env}.items():
            monkeypatch.setenv(name, value)
        handler.runtime.reset(lambda: handler.build(clients=factory()))
        summary = handler.lambda_handler({} if event is None else event,
                                         FakeContext() if context is None else context)
        if made:
            run.stats = made[-1].stats  # type: ignore[attr-defined]
        return summary

    yield run
    handler.runtime.reset()


def error_response(code: str, message: str, status: int = 400) -> tuple[AWSResponse, dict[str, Any]]:
    """What a before-call hook returns to make botocore raise this ClientError."""
    return (AWSResponse("https://aws.invalid", status, HTTPHeaders(), None),
            {"Error": {"Code": code, "Message": message},
             "ResponseMetadata": {"HTTPStatusCode": status}})


def stop_calls(run: Any) -> int:
    return int(run.stats.attempts("StopTask"))


def test_healthy_left_alone_unhealthy_deleted_and_stopped(world: SweepWorld, sweep: Any,
                                                          fleet: HttpFleet) -> None:
    h1, h2 = world.host("c1"), world.host("c1")
    healthy = world.task(h1, OK, check_http="/ready")  # its own path, from the definition
    bad = {b: world.task(h1, b) for b in (ERROR, HANG, REFUSE)}
    others = [world.task(h2, OK) for _ in range(3)]
    world.sync()
    before = world.records()
    bad_srv = {world.srv_key(t) for t in bad.values()}

    # The first failure is counted, on the task itself: nothing deleted or stopped yet.
    first = sweep()
    assert keys(world.records()) == keys(before) and stop_calls(sweep) == 0
    assert sorted((f["task"], f["failures"]) for f in first["failing"]) == sorted(
        (f"c1/{t.id}", 1) for t in bad.values())
    assert first["counts_written"] == 3 and first["outcome"] == "ok"
    for task in bad.values():
        assert world.task_tags(task) == {f"ecssd:check-failures:{task.port}": "1"}
    assert world.task_tags(healthy) == {}

    summary = sweep()  # a new execution environment: the count comes back from ECS

    after = keys(world.records())
    assert after == keys(before) - bad_srv
    assert summary["deleted"] == 3 and summary["change_requests"] == 1
    assert summary["healthy"] == 4 and summary["errors"] == [] and not summary["refused"]
    reasons = {u["task"].split("/")[1]: u["reason"] for u in summary["unhealthy"]}
    assert reasons == {bad[ERROR].id: "HTTP 500", bad[HANG].id: "timed out after 0.5s",
                       bad[REFUSE].id: "connection refused"}
    # Stopped with the reason, once each; the healthy ones are RUNNING.
    assert stop_calls(sweep) == 3
    assert sorted(summary["stopped"]) == sorted(f"c1/{t.id}" for t in bad.values())
    for task in bad.values():
        state = world.task_state(task)
        assert state["lastStatus"] == "STOPPED"
        assert state["stoppedReason"] == f"ecssd health check failed: {reasons[task.id]}"
    for task in [healthy, *others]:
        assert world.task_state(task)["lastStatus"] == "RUNNING"
    # The checks went only to the hosts' real IPs, and the healthy task at its own path.
    assert {ip for ip, _, _ in fleet.requests} == {h1.ip, h2.ip}
    assert (h1.ip, healthy.port, "/ready") in fleet.requests
    assert summary["clusters"] == ["c1"] and summary["tasks"] == 7
    assert summary["records_seen"] == len(before)  # the zone's SOA and NS included

    # A third sweep finds nothing more to do (the stopped tasks' records are gone already).
    again = sweep()
    assert again["deleted"] == 0 and stop_calls(sweep) == 0 and again["healthy"] == 4


def test_dead_host_stopped_task_and_foreign_records(world: SweepWorld, sweep: Any) -> None:
    live_host, dead_host = world.host("c1"), world.host("c1")
    # Five healthy instances: the four deletions stay below half of the 9 deletable.
    stays = [world.task(live_host) for _ in range(5)]
    stopped = world.task(live_host)
    on_dead = [world.task(dead_host) for _ in range(2)]
    world.sync()
    foreign = [
        RecordSet("www.sd.internal.", "A", ("10.9.9.9",), 60),
        RecordSet("legacy.sd.internal.", "SRV", (f"1 1 80 {dead_host.label}.sd.internal.",), 60,
                  set_identifier=f"{dead_host.label}:x:80", weight=1),
        RecordSet("z.sd.internal.", "A", ("10.9.9.8",), 60, set_identifier="ecssd:h:", weight=1),
        RecordSet("txt.sd.internal.", "TXT", ('"hello"',), 60),
    ]
    world.zone.apply([Change(Action.CREATE, r) for r in foreign])
    dead_keys = world.owned_by(dead_host)
    assert len(dead_keys) == 3  # its A record and two SRV records
    world.kill_host(dead_host)
    world.stop_task(stopped)
    before = keys(world.records())

    summary = sweep()

    expected = dead_keys | {world_srv for world_srv in [_srv_key(before, stopped.id)]}
    assert before - keys(world.records()) == expected
    assert keys(foreign) <= keys(world.records())
    assert summary["deleted"] == 4 and stop_calls(sweep) == 0 and summary["stopped"] == []
    assert summary["deletion_reasons"] == {"host gone": 3, "task gone": 1}
    assert summary["healthy"] == len(stays) and summary["unhealthy"] == []
    assert summary["owned"] == 1 + 6 + 3 + 0  # foreign records are not counted as ours
    del on_dead


def _srv_key(records: set[tuple[str, str, str | None]], tid: str) -> tuple[str, str, str | None]:
    return next(k for k in records if k[1] == "SRV" and (k[2] or "").endswith(":" + tid))


def test_dry_run_reports_everything_and_changes_nothing(world: SweepWorld, sweep: Any) -> None:
    host, dead_host = world.host("c1"), world.host("c1")
    for _ in range(4):
        world.task(host)
    bad = world.task(host, ERROR)
    world.task(dead_host)
    world.sync()
    world.kill_host(dead_host)
    before = keys(world.records())

    summary = sweep(DRY_RUN="true")

    assert keys(world.records()) == before
    assert stop_calls(sweep) == 0 and world.task_state(bad)["lastStatus"] == "RUNNING"
    assert summary["dry_run"] is True and summary["change_requests"] == 0
    assert summary["deleted"] == 2  # would delete: the dead host's 2
    assert [(f["task"], f["failures"]) for f in summary["failing"]] == [(f"c1/{bad.id}", 1)]
    assert summary["counts_written"] == 0 and world.task_tags(bad) == {}  # not even a count
    assert sweep.stats.attempts("ChangeResourceRecordSets") == 0
    assert sweep.stats.attempts("TagResource") == 0

    decisive = sweep(DRY_RUN="true", CHECK_FAILURES="1")
    assert keys(world.records()) == before and stop_calls(sweep) == 0
    assert decisive["deleted"] == 3  # the dead host's 2, the unhealthy one's 1
    assert decisive["stopped"] == [f"c1/{bad.id}"]
    assert decisive["unhealthy"][0]["reason"] == "HTTP 500"


def test_restricted_to_some_clusters(world: SweepWorld, sweep: Any) -> None:
    hosts = {c: (world.host(c), world.host(c)) for c in ("c1", "c2")}
    stopped = {}
    for cluster, (live_host, dead_host) in hosts.items():
        for _ in range(4):
            world.task(live_host)
        stopped[cluster] = world.task(live_host)
        world.task(dead_host)
    world.sync()
    dead = {c: world.owned_by(h[1]) for c, h in hosts.items()}
    for cluster, (_, dead_host) in hosts.items():
        world.kill_host(dead_host)
        world.stop_task(stopped[cluster])
    before = keys(world.records())

    summary = sweep(ECS_CLUSTERS="c1")

    gone = before - keys(world.records())
    assert gone == dead["c1"] | {_srv_key(before, stopped["c1"].id)}
    assert summary["clusters"] == ["c1"]
    assert summary["out_of_scope"] == 6 + 2  # c2's two hosts: live (A + 5) and dead (A + 1)
    # Everything of c2, the dead host's records included, is still there.
    assert dead["c2"] <= keys(world.records())

    summary = sweep()  # all clusters: now c2's orphans go too
    assert before - keys(world.records()) == gone | dead["c2"] | {
        _srv_key(before, stopped["c2"].id)}


def test_an_unknown_cluster_in_ecs_clusters_is_an_error_not_an_empty_cluster(
        world: SweepWorld, sweep: Any) -> None:
    host = world.host("c1")
    world.task(host)
    world.sync()
    summary = sweep(ECS_CLUSTERS="c1,nope")
    assert any("nope" in e for e in summary["errors"])
    assert summary["deleted"] == 0 and summary["healthy"] == 1


def test_describe_tasks_failure_deletes_nothing_of_that_cluster(
        world: SweepWorld, sweep: Any) -> None:
    c1_live, c1_dead = world.host("c1"), world.host("c1")
    c2_host = world.host("c2")
    for _ in range(4):
        world.task(c1_live)
        world.task(c2_host)
    c1_stopped, c2_stopped = world.task(c1_live), world.task(c2_host)
    c1_bad = world.task(c1_live, ERROR)
    world.task(c1_dead)
    world.sync()
    world.kill_host(c1_dead)
    world.stop_task(c1_stopped)
    world.stop_task(c2_stopped)
    before = keys(world.records())

    failing: list[str] = []

    def fail_describe_tasks(params: dict[str, Any], **_: Any) -> Any:
        # before-call sees the serialised request: ECS speaks JSON.
        if json.loads(params["body"] or b"{}").get("cluster") == "c1":
            failing.append("c1")
            return error_response("ServerException", "injected failure", 500)
        return None

    summary = sweep(hooks=[("before-call.ecs.DescribeTasks", fail_describe_tasks)])

    assert failing, summary
    # c1: nothing deleted (not the dead host's, not the stopped task's, not the unhealthy
    # one's, which is not even checked) and nothing stopped. c2: its stopped task's record goes.
    assert before - keys(world.records()) == {_srv_key(before, c2_stopped.id)}
    assert stop_calls(sweep) == 0
    assert world.task_state(c1_bad)["lastStatus"] == "RUNNING"
    assert any("c1" in e and "injected failure" in e for e in summary["errors"])
    assert summary["skipped"] >= 1 + 6 + 2  # c1's task records and the dead host's


def test_fraction_guard_refuses_then_allows(world: SweepWorld, sweep: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    small, big = world.host("c1"), world.host("c1")
    world.task(small)
    for _ in range(4):
        world.task(big)
    world.sync()
    world.kill_host(big)
    before = keys(world.records())

    with caplog.at_level(logging.WARNING, logger="ecssd_agent.sweep.runner"):
        summary = sweep()  # 5 of the 7 record sets ECS and EC2 speak for would go

    assert keys(world.records()) == before
    assert "MAX_DELETE_FRACTION=0.5" in summary["refused"]
    assert "5 of 7 deletable" in summary["refused"]
    assert summary["refused_by"] == "delete_fraction" and summary["outcome"] == "refused"
    assert summary["guard"]["planned"] == 5 and summary["guard"]["deletable"] == 7
    assert summary["deleted"] == 0 and summary["change_requests"] == 0
    # One structured line for the stack's metric filter: the outcome, the guard, its figures.
    refusals = [r for r in caplog.records if getattr(r, "metric", "") == "ecssd_sweep_refused"]
    assert len(refusals) == 1
    assert (refusals[0].outcome, refusals[0].guard, refusals[0].planned) == (
        "refused", "delete_fraction", 5)

    summary = sweep(MAX_DELETE_FRACTION="0.9")
    assert summary["deleted"] == 5 and not summary["refused"] and summary["outcome"] == "ok"
    assert before - keys(world.records()) == {k for k in before if big.label in (k[2] or "")}


def test_malformed_event_and_context_do_not_crash(world: SweepWorld, sweep: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    host = world.host("c1")
    world.task(host)
    world.sync()
    for event, context in [("garbage", None), ([1, 2], object()), (None, "ctx"),
                           ({"detail": None}, 42)]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="health_lambda.summary"):
            summary = sweep(event=event, context=context)
        assert summary["healthy"] == 1 and summary["errors"] == []
        # ... and the summary is logged as one JSON line.
        lines = [r.getMessage() for r in caplog.records if r.name == "health_lambda.summary"]
        assert len(lines) == 1 and "\n" not in lines[0]
        assert json.loads(lines[0]) == json.loads(json.dumps(summary))


def test_bad_configuration_is_reported_not_raised(world: SweepWorld, sweep: Any) -> None:
    summary = sweep(CHECK_RETRIES="lots")
    assert summary["errors"] and "CHECK_RETRIES" in summary["errors"][0]


def test_rejected_batch_is_recomputed_once(world: SweepWorld, sweep: Any) -> None:
    """The zone changes between the read and the delete: re-read and re-plan, not resend."""
    host, dead_host = world.host("c1"), world.host("c1")
    for _ in range(4):
        world.task(host)
    world.task(dead_host)
    world.task(dead_host)
    world.sync()
    world.kill_host(dead_host)
    dead_keys = world.owned_by(dead_host)
    changed = next(r for r in world.records() if r.type == "SRV"
                   and (r.set_identifier or "").startswith(f"ecssd:h:{dead_host.label}:"))
    batches: list[int] = []

    def someone_else_was_first(params: dict[str, Any], **_: Any) -> Any:
        batches.append(params["body"].count(b"<Change>"))
        if len(batches) == 1:  # the record is deleted by someone else; Route 53 says no
            world.zone.apply([Change(Action.DELETE, changed)])
            return error_response("InvalidChangeBatch", "Tried to delete resource record "
                                  "set but it was not found")
        return None

    summary = sweep(hooks=[("before-call.route53.ChangeResourceRecordSets",
                            someone_else_was_first)])

    assert batches == [3, 2]  # the first batch was rejected, the re-planned one applied
    assert not (dead_keys & keys(world.records()))
    assert summary["deleted"] == 2 and summary["apply_attempts"] == 2
    assert summary["change_requests"] == 1 and summary["errors"] == []


def test_rejected_twice_is_reported_not_retried(world: SweepWorld, sweep: Any) -> None:
    host, dead_host = world.host("c1"), world.host("c1")
    for _ in range(4):
        world.task(host)
    world.task(dead_host)
    world.sync()
    world.kill_host(dead_host)
    before = keys(world.records())
    batches: list[int] = []

    def always_rejected(params: dict[str, Any], **_: Any) -> Any:
        batches.append(1)
        return error_response("InvalidChangeBatch", "injected rejection")

    summary = sweep(hooks=[("before-call.route53.ChangeResourceRecordSets", always_rejected)])

    assert len(batches) == 2 and keys(world.records()) == before
    assert summary["deleted"] == 0
    assert any("rejected the deletions again" in e for e in summary["errors"])


# --- the sweep's safety ---------------------------------------------------------------

def _all_running(world: SweepWorld, tasks: Sequence[Any]) -> bool:
    return all(world.task_state(t)["lastStatus"] == "RUNNING" for t in tasks)


def test_one_failing_instance_per_host_acts_on_nothing(world: SweepWorld, sweep: Any) -> None:
    """One service per host, each refusing: every probe failed, so no verdict is acted on,
    however many sweeps in a row (fail open); the run says so."""
    tasks = [world.task(world.host("c1"), REFUSE) for _ in range(2)]
    world.sync()
    before = keys(world.records())

    for _ in range(3):
        summary = sweep(CHECK_FAILURES="1")
        assert keys(world.records()) == before
        assert stop_calls(sweep) == 0 and _all_running(world, tasks)
        assert summary["outcome"] == "held" and summary["guard"]["fail_open"]
        assert "every one of the 2 probed instances failed" in summary["held_back"]
        assert summary["counts_written"] == 0


def test_a_forged_record_does_not_stop_its_victim(world: SweepWorld, sweep: Any,
                                                  fleet: HttpFleet) -> None:
    """One host's write credentials: a record naming another host's task at a closed port.
    Before, the sweep probed that port at the victim's host, got "connection refused" and
    stopped the victim, whose own record answers 200."""
    victim_host, other = world.host("c1"), world.host("c1")
    victim = world.task(victim_host)
    others = [world.task(other) for _ in range(3)]
    world.sync()
    closed = fleet.add(victim_host.ip, REFUSE)
    forged = routed(naming.record_name("web", world.zone.zone.name), "SRV",
                    [srv_value(closed, naming.host_record_name(victim_host.label,
                                                               world.zone.zone.name))],
                    Owner(host=victim_host.label, container="f0f0f0f0f0f0", port="8080/tcp",
                          cluster="c1", task=victim.id), Routing.WEIGHTED, 0)
    world.zone.apply([Change(Action.CREATE, forged)])
    before = keys(world.records())

    summary = sweep()

    assert keys(world.records()) == before  # the victim's records, and the forged one
    assert stop_calls(sweep) == 0 and _all_running(world, [victim, *others])
    assert summary["healthy"] == 4 and summary["unhealthy"] == []
    assert [s["instance"] for s in summary["suspect"]] == [forged.set_identifier]
    assert f"port {closed}/tcp" in summary["suspect"][0]["reason"]
    assert (victim_host.ip, closed) not in {(ip, port) for ip, port, _ in fleet.requests}


def test_a_task_ecs_reports_healthy_is_not_stopped(world: SweepWorld, sweep: Any) -> None:
    """Its definition has a healthCheck and ECS (moto) reports the container HEALTHY: our
    failed check alone does not stop it. The same failure without a healthCheck does."""
    host = world.host("c1")
    vouched = world.task(host, ERROR, health_check=True)
    plain = world.task(host, ERROR)
    for _ in range(4):
        world.task(host)
    world.sync()
    before = keys(world.records())

    summary = sweep(CHECK_FAILURES="1")

    assert world.task_state(vouched)["lastStatus"] == "RUNNING"
    assert world.task_state(plain)["lastStatus"] == "STOPPED"
    assert before - keys(world.records()) == {_srv_key(before, plain.id)}
    assert summary["stopped"] == [f"c1/{plain.id}"]
    assert [e["task"] for e in summary["ecs_healthy"]] == [f"c1/{vouched.id}"]
    assert "HEALTHY" in summary["ecs_healthy"][0]["ecs"]


def test_ports_ecs_does_not_confirm_are_not_judged(world: SweepWorld, sweep: Any) -> None:
    """moto as it is reports no networkBindings: no port is confirmed, so no check decides
    anything, while a stopped task's record still goes (ECS's word, not a probe's)."""
    host = world.host("c1")
    bad = world.task(host, ERROR)
    fine = [world.task(host) for _ in range(3)]
    gone = world.task(host)
    world.sync()
    world.stop_task(gone)
    before = keys(world.records())

    summary = sweep(ecs_agent=False)

    assert before - keys(world.records()) == {_srv_key(before, gone.id)}
    assert stop_calls(sweep) == 0 and _all_running(world, [bad, *fine])
    assert summary["healthy"] == 0 and summary["unhealthy"] == [] and not summary["refused"]
    assert sum("no port bindings" in s["reason"] for s in summary["skipped_detail"]) == 4

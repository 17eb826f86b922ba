"""The sweep's safety, pure: the probe-outage and delete-fraction guards, the port ECS must
confirm before a record's task is probed, ECS's own health checks and the per-service grace.

Every scenario here was a deletion or a StopTask before these rules: a sweep whose
own network path broke deleted and stopped everything it probed; a forged record naming
another task at a closed port got that task stopped. Records and views come from the
helpers of test_sweep.py, built by the agent's and the task-events Lambda's own code.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ecssd_agent.agent.settings import SettingsError
from ecssd_agent.core import naming
from ecssd_agent.core.ecs_task import PortBinding, TaskContainer
from ecssd_agent.core.metadata import Declaration
from ecssd_agent.core.model import RecordSet, Routing
from ecssd_agent.core.ownership import Owner
from ecssd_agent.core.records import routed, srv_value
from ecssd_agent.sweep.decide import Assessment, ClusterView, Plan, Rules, Scope, Verdict, assess, decide
from ecssd_agent.sweep.evidence import definition_problems
from ecssd_agent.sweep.probe import check
from ecssd_agent.sweep.runner import empty_summary, rules_of
from ecssd_agent.sweep.settings import SweepSettings
from tests.unit.test_sweep_decide import (
    C_OK,
    H1,
    H2,
    H_OTHER,
    NOW,
    ZONE,
    agent,
    spec,
    task,
    task_records,
    with_task,
)

DEFAULTS = Rules()  # the shipped settings: both guards at 0.5
TIMEOUT = Verdict(False, "timed out after 2s")
REFUSED = Verdict(False, "connection refused")


def _assess(records: Sequence[RecordSet], clusters: Sequence[ClusterView] = (C_OK,),
            rules: Rules = DEFAULTS, all_clusters: bool = True) -> Assessment:
    return assess(Scope(tuple(clusters), all_clusters=all_clusters), records, rules, NOW)


def _nothing_done(plan: Plan) -> None:
    assert plan.refused and plan.deletions and plan.stops  # planned, and refused whole


# --- 1. the guards -----------------------------------------------------------------------

def test_every_probe_timing_out_acts_on_nothing() -> None:
    """The sweep's path is cut (SG, NACL, route): every probe times out. H_OTHER's records
    (a cluster this sweep does not cover) made the old guard's denominator large enough to
    let 3 of 7 through."""
    result = _assess([*H1, *H2, *H_OTHER], all_clusters=False)
    plan = decide(result, {t.key: TIMEOUT for t in result.targets}, DEFAULTS)
    _nothing_done(plan)
    assert plan.refused_by == "probe_outage"
    assert "3 of 3 probed instances failed" in plan.refused
    assert "PROBE_OUTAGE_FRACTION=0.5" in plan.refused
    assert (plan.guard.probed, plan.guard.failed) == (3, 3)


def test_exactly_half_refused_one_service_per_host() -> None:
    """One service per host: each host has an SRV and an A record, so every probe failing
    deleted exactly half of the owned record sets, which the old strict test let through."""
    h1 = agent("ip-10-0-0-1", "10.0.0.1", ("web", 32768, 8080, "c", "t1"))
    result = _assess([*h1, *H2])
    assert result.owned == 4 and len(result.targets) == 2
    plan = decide(result, {t.key: REFUSED for t in result.targets}, DEFAULTS)
    _nothing_done(plan)
    assert plan.refused_by == "probe_outage" and "2 of 2 probed" in plan.refused


def test_exactly_half_deletable_is_refused_by_the_fraction_guard() -> None:
    h1 = agent("ip-10-0-0-1", "10.0.0.1", ("web", 32768, 8080, "c", "t1"))
    rules = replace(DEFAULTS, probe_outage_fraction=1.0)
    result = _assess([*h1, *H2], rules=rules)
    plan = decide(result, {t.key: Verdict(t.port == 32768, "HTTP 500")
                           for t in result.targets}, rules)
    assert (plan.guard.planned, plan.guard.deletable) == (1, 2)
    assert plan.refused_by == "delete_fraction" and "1 of 2 deletable" in plan.refused


def test_a_tiny_scope_is_refused_unless_the_guard_is_off() -> None:
    """One deletable record set (a stopped task's SRV; the live host's A record cannot go):
    deleting it is all of the scope. MAX_DELETE_FRACTION=1 is the operator's way out."""
    clusters = [replace(C_OK, tasks={"t3": task("t3", 2, last="STOPPED", desired="STOPPED")})]
    result = _assess([*H2], clusters)
    plan = decide(result, {}, DEFAULTS)
    assert plan.refused_by == "delete_fraction" and "1 of 1 deletable" in plan.refused
    off = replace(DEFAULTS, max_delete_fraction=1.0)
    assert not decide(result, {}, off).refused


def test_one_host_silent_on_every_port_refuses_the_sweep() -> None:
    """Host 1's two instances time out while host 2's four answer: 2 of 6 is below the share,
    but a host whose every port is silent while ECS reports its tasks RUNNING is a path
    problem, not two broken tasks."""
    ports = {"t1": (8080, 32768), "t2": (9000, 32769)}
    h2 = agent("ip-10-0-0-2", "10.0.0.2",
               *[("web", 32770 + n, 8080, "c", f"u{n}") for n in range(4)])
    tasks = {**{t: task(t, 1, containers=(TaskContainer("web", bindings=(PortBinding(*p),)),))
                for t, p in ports.items()},
             **{f"u{n}": task(f"u{n}", 2, containers=(TaskContainer(
                 "web", bindings=(PortBinding(8080, 32770 + n),)),)) for n in range(4)}}
    result = _assess([*H1, *h2], [replace(C_OK, tasks=tasks)])
    verdicts = {t.key: (TIMEOUT if t.ip == "10.0.0.1" else Verdict(True, "HTTP 200"))
                for t in result.targets}
    plan = decide(result, verdicts, DEFAULTS)
    _nothing_done(plan)
    assert plan.refused_by == "probe_outage" and plan.guard.unreachable == ["10.0.0.1"]
    assert "10.0.0.1" in plan.refused

    # The same host answering HTTP 500 on both ports is reachable: its tasks are broken.
    verdicts = {k: (Verdict(False, "HTTP 500") if v is TIMEOUT else v)
                for k, v in verdicts.items()}
    plan = decide(result, verdicts, DEFAULTS)
    assert not plan.refused and len(plan.stops) == 2 and plan.guard.unreachable == []


def test_one_failing_instance_among_many_is_still_acted_on() -> None:
    result = _assess([*H1, *H2])
    plan = decide(result, {t.key: Verdict(t.port != 32770, "timed out after 2s")
                           for t in result.targets}, DEFAULTS)
    assert not plan.refused and [s.task for s in plan.stops] == ["t3"]
    assert (plan.guard.probed, plan.guard.failed, plan.guard.deletable) == (3, 1, 3)


def test_outage_refuses_orphan_deletions_too() -> None:
    """"Act on nothing": a stopped task's record waits for a sweep that can see."""
    clusters = [replace(C_OK, tasks={**C_OK.tasks, "t2": task("t2", last="STOPPED",
                                                              desired="STOPPED")})]
    result = _assess([*H1, *H2], clusters)
    assert len(result.orphans) == 1
    plan = decide(result, {t.key: TIMEOUT for t in result.targets}, DEFAULTS)
    assert plan.refused_by == "probe_outage"


def test_the_outage_share_setting() -> None:
    result = _assess([*H1, *H2])
    verdicts = {t.key: Verdict(t.port == 32768, "HTTP 503") for t in result.targets}  # 2 of 3
    lenient = replace(DEFAULTS, probe_outage_fraction=0.7, max_delete_fraction=1.0)
    assert not decide(result, verdicts, lenient).refused
    strict = replace(lenient, probe_outage_fraction=0.6)
    assert decide(result, verdicts, strict).refused_by == "probe_outage"


# --- 2. probe only a port ECS confirms ---------------------------------------------------

def _forged(host_label: str, tid: str, port: int, cluster: str = "c") -> RecordSet:
    """What one host's write credentials can put in the zone: a record naming another
    host's task (its id is visible to anyone who can list tasks) at a closed port."""
    owner = Owner(host=host_label, container="f0f0f0f0f0f0", port="8080/tcp", cluster=cluster,
                  task=tid)
    target = naming.host_record_name(host_label, ZONE)
    return routed(naming.record_name("web", ZONE), "SRV", [srv_value(port, target)], owner,
                  Routing.WEIGHTED, 0)


def test_a_forged_record_naming_a_victim_task_at_a_closed_port_is_suspect() -> None:
    forged = _forged("ip-10-0-0-2", "t3", 40000)
    result = _assess([*H2, forged])
    assert [t.port for t in result.targets] == [32770]  # the victim's own record only
    assert [s.what for s in result.suspect] == [forged.set_identifier]
    assert "task t3 at port 40000/tcp" in result.suspect[0].reason
    assert "32770" in result.suspect[0].reason
    # The victim's own record answers 200; the forged port is closed (the old sweep probed
    # it, got "connection refused" and stopped the victim). Guards off: the rule alone.
    verdicts = {forged.set_identifier or "": REFUSED,
                **{t.key: Verdict(True, "HTTP 200") for t in result.targets}}
    plan = decide(result, verdicts, replace(DEFAULTS, probe_outage_fraction=1.0,
                                            max_delete_fraction=1.0))
    assert not plan.stops and not plan.deletions and not plan.refused


def test_the_container_port_must_match_too() -> None:
    """The host port is bound, but to another container port than the record names."""
    records = agent("ip-10-0-0-2", "10.0.0.2", ("web", 32770, 9999, "c", "t3"))
    result = _assess(records)
    assert not result.targets and len(result.suspect) == 1


def test_no_bindings_reported_means_unconfirmed_never_judged() -> None:
    """moto, or a task whose containers ECS has not bound yet: nothing confirms the port."""
    bare = task("t3", 2, containers=(TaskContainer("web"),))
    result = _assess([*H2], [replace(C_OK, tasks={"t3": bare})])
    assert not result.targets and not result.suspect
    assert any("no port bindings" in s.reason for s in result.skipped)


def test_a_task_not_yet_running_is_not_judged() -> None:
    pending = with_task(C_OK.tasks["t3"], last_status="PENDING")
    result = _assess([*H2], [replace(C_OK, tasks={"t3": pending})])
    assert not result.targets and any("PENDING" in s.reason for s in result.skipped)


def test_awsvpc_ports_come_from_the_definition() -> None:
    t1 = task_records("c", "tt1", "10.1.0.1", 8080)
    forged = task_records("c", "tt1", "10.1.0.1", 9999)[1]  # same task, another port
    view = task("tt1", eni_ips=("10.1.0.1",))
    result = _assess([*t1, forged], [replace(C_OK, tasks={"tt1": view})])
    assert [(t.ip, t.port) for t in result.targets] == [("10.1.0.1", 8080)]
    assert len(result.suspect) == 1 and "9999/tcp" in result.suspect[0].reason
    unmapped = task("tt1", eni_ips=("10.1.0.1",), specs=[spec("web")])
    result = _assess(t1, [replace(C_OK, tasks={"tt1": unmapped})])
    assert not result.targets and any("maps no port" in s.reason for s in result.skipped)


def test_the_records_own_container_decides_when_ecs_gives_runtime_ids() -> None:
    """Two containers; the record's container (by docker id) is not the one bound to its
    port: ECS does not back the record."""
    records = agent("ip-10-0-0-2", "10.0.0.2", ("web", 32770, 8080, "c", "t3"),
                    container="aaaaaa")
    containers = (TaskContainer("web", "aaaaaa000000" + "0" * 52, bindings=(
                      PortBinding(8080, 31000),)),
                  TaskContainer("side", "bbbbbb000000" + "0" * 52, bindings=(
                      PortBinding(8080, 32770),)))
    result = _assess(records, [replace(C_OK, tasks={"t3": task("t3", 2,
                                                               containers=containers)})])
    assert not result.targets and len(result.suspect) == 1


# --- 3. ECS's own health check and the grace ---------------------------------------------

def _checked(health: str, start_period: float = 0.0, started: float = NOW - 3600,
             grace: str = "") -> ClusterView:
    env = {"SERVICE_8080_NAME": "web", **({"SERVICE_8080_CHECK_GRACE": grace} if grace else {})}
    view = task("t3", 2, started=started, containers=(
        TaskContainer("web", health_status=health, bindings=(PortBinding(8080, 32770),)),),
        specs=(spec("web", env, ports=(PortBinding(8080),), health_check=True,
                    start_period=start_period),))
    return replace(C_OK, tasks={"t3": view})


def test_a_container_ecs_reports_healthy_is_not_stopped_on_our_probe() -> None:
    rules = replace(DEFAULTS, probe_outage_fraction=1.0, max_delete_fraction=1.0)
    result = _assess([*H2], [_checked("HEALTHY")], rules)
    assert result.targets[0].ecs_healthy == "ECS reports container web of task t3 HEALTHY"
    plan = decide(result, {result.targets[0].key: Verdict(False, "HTTP 500")}, rules)
    assert not plan.deletions and not plan.stops and not plan.unhealthy
    assert [t.task for t, _ in plan.ecs_healthy] == ["t3"]
    assert (plan.guard.planned, plan.guard.deletable) == (0, 1)


def test_ecs_unhealthy_or_unknown_leaves_it_to_the_probe() -> None:
    rules = replace(DEFAULTS, probe_outage_fraction=1.0, max_delete_fraction=1.0)
    for health in ("UNHEALTHY", "UNKNOWN"):
        result = _assess([*H2], [_checked(health)], rules)
        plan = decide(result, {result.targets[0].key: Verdict(False, "HTTP 500")}, rules)
        assert [s.task for s in plan.stops] == ["t3"], health


def test_healthy_without_a_health_check_means_nothing() -> None:
    """moto reports every container HEALTHY; ECS reports UNKNOWN without a healthCheck.
    Only a definition's own healthCheck gives ECS's word weight."""
    view = with_task(task("t3", 2, specs=(spec("web", {"SERVICE_8080_NAME": "web"},
                                                ports=(PortBinding(8080),)),),
                          containers=_checked("HEALTHY").tasks["t3"].task.containers),
                     health_status="HEALTHY")
    result = _assess([*H2], [replace(C_OK, tasks={"t3": view})])
    assert result.targets[0].ecs_healthy == ""


def test_the_task_health_speaks_when_the_container_cannot_be_told() -> None:
    view = with_task(task("t3", 2, specs=(spec("other", health_check=True),),
                          containers=_checked("UNKNOWN").tasks["t3"].task.containers),
                     health_status="HEALTHY")
    result = _assess([*H2], [replace(C_OK, tasks={"t3": view})])
    assert result.targets[0].ecs_healthy == "ECS reports task t3 HEALTHY"


def test_grace_is_the_longest_of_grace_seconds_check_grace_and_start_period() -> None:
    def judged(cluster: ClusterView) -> bool:
        return bool(_assess([*H2], [cluster]).targets)

    # GRACE_SECONDS (60) alone: a task up for 100 s is judged.
    assert judged(_checked("UNKNOWN", started=NOW - 100))
    # The container's healthCheck startPeriod (300 s): not yet, then yes.
    assert not judged(_checked("UNKNOWN", start_period=300, started=NOW - 100))
    assert judged(_checked("UNKNOWN", start_period=300, started=NOW - 301))
    # SERVICE_8080_CHECK_GRACE=600 on the service's container: not yet at 400 s.
    graced = _checked("UNKNOWN", started=NOW - 400, grace="600")
    assert not judged(graced)
    skipped = _assess([*H2], [graced]).skipped
    assert any("started less than 600s ago" in s.reason for s in skipped)


def test_check_grace_parsed_and_a_bad_one_named_without_blocking_others() -> None:
    specs = (spec("web", {"SERVICE_8080_NAME": "web", "SERVICE_8080_CHECK_GRACE": "120"}),
             spec("api", {"SERVICE_9000_NAME": "api"}, {"SERVICE_9000_CHECK_GRACE": "soon"}),
             spec("adm", {"SERVICE_7000_NAME": "adm", "SERVICE_7000_CHECK_GRACE": "-5"}))
    evidence = task("t3", specs=specs)
    assert evidence.services == (Declaration("web", 8080, "", 120.0),
                                 Declaration("api", 9000, "", None),
                                 Declaration("adm", 7000, "", None))
    assert evidence.definition is not None
    problems = [str(p) for p in definition_problems(evidence.definition)]
    assert len(problems) == 2
    assert problems[0] == "container api: SERVICE_9000_CHECK_GRACE: 'soon' is not a number of seconds"
    assert "container adm" in problems[1] and "SERVICE_7000_CHECK_GRACE" in problems[1]


def test_verdict_answered_tells_an_http_status_from_silence() -> None:
    assert Verdict(False, "HTTP 500").answered and Verdict(True, "HTTP 200").answered
    assert not TIMEOUT.answered and not REFUSED.answered
    assert not Verdict(False, "ConnectionResetError: [Errno 104] reset").answered


def test_live_instances_not_probed_still_count_as_deletable() -> None:
    """A sweep that probes nothing (CHECK_HEALTH off, or ports not yet confirmed) still
    deletes a stopped task's record: the live instances' records are in the denominator."""
    clusters = [replace(C_OK, tasks={**C_OK.tasks, "t2": task("t2", last="STOPPED",
                                                              desired="STOPPED")})]
    off = replace(DEFAULTS, check_health=False)
    plan = decide(_assess([*H1, *H2], clusters, off), {}, off)
    assert not plan.refused and len(plan.deletions) == 1
    assert (plan.guard.planned, plan.guard.deletable) == (1, 3)
    unbound = [replace(clusters[0], tasks={t: with_task(v, containers=())
                                           for t, v in clusters[0].tasks.items()})]
    plan = decide(_assess([*H1, *H2], unbound), {}, DEFAULTS)
    assert not plan.refused and len(plan.deletions) == 1 and plan.guard.deletable == 3


def test_the_outage_setting_is_read_and_checked() -> None:
    assert SweepSettings.from_env({}).probe_outage_fraction == 0.5
    assert SweepSettings.from_env({"PROBE_OUTAGE_FRACTION": "0.8"}).probe_outage_fraction == 0.8
    for bad in ("-0.1", "most", "nan"):
        with pytest.raises(SettingsError, match="PROBE_OUTAGE_FRACTION"):
            SweepSettings.from_env({"PROBE_OUTAGE_FRACTION": bad})
    rules = rules_of(SweepSettings.from_env({"PROBE_OUTAGE_FRACTION": "0.3"}))
    assert rules.probe_outage_fraction == 0.3


def test_the_probes_own_verdicts_classify_as_answered_or_not() -> None:
    """Verdict.answered reads the probe's wording: tie the two together on real sockets."""

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as reserved:  # bound, not listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        closed = reserved.getsockname()[1]
        try:
            answered = check("127.0.0.1", server.server_address[1], "/health", 2.0, 1)
            refused = check("127.0.0.1", closed, "/health", 2.0, 1)
        finally:
            server.shutdown()
            server.server_close()
    assert (answered.healthy, answered.answered) == (False, True)
    assert (refused.healthy, refused.answered) == (False, False)


def test_every_summary_key_exists_before_anything_ran() -> None:
    summary = empty_summary(dry_run=True)
    assert summary["refused"] == "" and summary["refused_by"] == ""
    assert summary["suspect"] == [] and summary["ecs_healthy"] == []
    assert summary["guard"] == {"deletable": 0, "planned": 0, "probed": 0, "failed": 0,
                                "unreachable": []}

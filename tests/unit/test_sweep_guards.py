"""The sweep's safety, pure: evidence deletions apart from probe verdicts, the path evidence
that holds verdicts back, the failures in a row kept on the task, the ports a task declares
and ECS confirms, what a service says about its own check, ECS's own health checks and the
per-service grace.

Every scenario here was a wrong deletion, a wrong StopTask, or a sweep that never cleaned
anything before these rules. Records and views come from the helpers of
test_sweep_decide.py, built by the agent's and the task-events Lambda's own code.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ecssd_agent.agent.settings import SettingsError
from ecssd_agent.core import naming
from ecssd_agent.core.ecs_task import PortBinding, TaskContainer
from ecssd_agent.core.metadata import Check, Declaration
from ecssd_agent.core.model import RecordSet, Routing
from ecssd_agent.core.ownership import Owner
from ecssd_agent.core.records import routed, srv_value
from ecssd_agent.sweep.decide import (
    DELETE_FLOOR,
    Assessment,
    ClusterView,
    Plan,
    Rules,
    Scope,
    TagChange,
    Verdict,
    assess,
    decide,
)
from ecssd_agent.sweep.evidence import TaskEvidence, definition_problems, failure_tag
from ecssd_agent.sweep.probe import check
from ecssd_agent.sweep.runner import empty_summary, outcome_of, rules_of
from ecssd_agent.sweep.settings import SweepSettings
from tests.unit.test_sweep_decide import (
    C_OK,
    H1,
    H2,
    H_PLAIN,
    NOW,
    ZONE,
    agent,
    live,
    spec,
    srv,
    task,
    task_records,
    with_task,
)

DEFAULTS = Rules()  # the shipped settings: MAX_DELETE_FRACTION 0.5, CHECK_FAILURES 2
TIMEOUT = Verdict(False, "timed out after 2s")  # connected, never answered: the host did
SILENT = Verdict(False, "no connection within 2s", reached=False)  # nothing came back
REFUSED = Verdict(False, "connection refused")  # the host's reset: it is there
OK = Verdict(True, "HTTP 200")
SICK = Verdict(False, "HTTP 500")
# H3: a third host, four instances of u0..u3 on 10.0.0.3 (enough healthy neighbours).
U_PORTS = {f"u{n}": 32780 + n for n in range(4)}
H3 = agent("ip-10-0-0-3", "10.0.0.3", *[("web", p, 8080, "c", t) for t, p in U_PORTS.items()])


def _task_on(tid: str, host: int, port: int, tags: Mapping[str, str] | None = None,
             **kwargs: object) -> TaskEvidence:
    view = task(tid, host, containers=(TaskContainer("web", bindings=(
        PortBinding(8080, port),)),), specs=(spec("web", {"SERVICE_8080_NAME": "web"}),),
        **kwargs)  # type: ignore[arg-type]
    return with_task(view, tags=dict(tags or {}))


C3 = replace(C_OK, hosts=(live(1), live(2), live(3)),
             tasks={**C_OK.tasks, **{t: _task_on(t, 3, p) for t, p in U_PORTS.items()}})


def _assess(records: Sequence[RecordSet], clusters: Sequence[ClusterView] = (C3,),
            rules: Rules = DEFAULTS, all_clusters: bool = True) -> Assessment:
    return assess(Scope(tuple(clusters), all_clusters=all_clusters), records, rules, NOW)


def _verdicts(result: Assessment, by_ip: Mapping[str, Verdict],
              by_port: Mapping[int, Verdict] | None = None) -> dict[str, Verdict]:
    """Every target's verdict: by its port when given, else by its address, else healthy."""
    by_port = by_port or {}
    return {t.key: by_port.get(t.port, by_ip.get(t.ip, OK)) for t in result.targets}


def _acted(plan: Plan) -> set[str]:
    return {s.task for s in plan.stops}


# --- 1. two kinds of decision ---------------------------------------------------------------

def test_a_cluster_of_two_is_cleaned_and_its_sick_instance_acted_on() -> None:
    """One healthy and one sick instance, a gone host and a STOPPED task. The old sweep
    refused the whole run (1 of 2 probed failed, at least half) every 5 minutes, forever."""
    gone_host = agent("ip-10-0-0-9", "10.0.0.9", ("web", 32790, 8080, "c", "t9"))
    cluster = ClusterView("c", hosts=(live(1), live(2)), tasks={
        "t1": _task_on("t1", 1, 32768), "t3": _task_on("t3", 2, 32770),
        "t2": task("t2", last="STOPPED", desired="STOPPED")},
        gone_tasks=frozenset({"t9"}))
    h1 = agent("ip-10-0-0-1", "10.0.0.1", ("web", 32768, 8080, "c", "t1"),
               ("api", 32769, 9000, "c", "t2"))
    result = _assess([*h1, *H2, *gone_host], [cluster])
    assert len(result.orphans) == 3  # the stopped task's SRV, the gone host's SRV and A
    verdicts = _verdicts(result, {"10.0.0.2": SICK})

    first = decide(result, verdicts, DEFAULTS)
    assert not first.refused and not first.held and not first.stops
    assert {d.record.key for d in first.deletions} == {d.record.key for d in result.orphans}
    assert [(f.target.task, f.failures) for f in first.failing] == [("t3", 1)]
    assert first.tags == [TagChange("c", "arn:aws:ecs:us-east-1:1:task/c/t3",
                                    ((failure_tag(32770), "1"),))]

    # The next sweep reads the count back from the task (a cold start changes nothing).
    tagged = replace(cluster, tasks={**cluster.tasks, "t3": _task_on(
        "t3", 2, 32770, {failure_tag(32770): "1"})})
    result = _assess([*(r for r in h1 if r != srv(h1, "t2")), *H2], [tagged])
    second = decide(result, _verdicts(result, {"10.0.0.2": SICK}), DEFAULTS)
    assert _acted(second) == {"t3"} and not second.tags
    assert {d.record.key for d in second.deletions} == {H2[1].key}
    assert second.deletions[0].reason == "unhealthy: HTTP 500"


def test_orphans_go_even_when_every_probe_fails() -> None:
    """Orphans rest on ECS's word, which no network path can fake: a run whose probes all
    fail still deletes a STOPPED task's record; it acts on no verdict."""
    clusters = [replace(C3, tasks={**C3.tasks, "t2": task("t2", last="STOPPED",
                                                          desired="STOPPED")})]
    result = _assess([*H1, *H2, *H3], clusters, replace(DEFAULTS, check_failures=1))
    plan = decide(result, {t.key: SILENT for t in result.targets},
                  replace(DEFAULTS, check_failures=1))
    assert [d.record for d in plan.deletions] == [srv(H1, "t2")] and not plan.stops
    assert plan.guard.fail_open and len(plan.held) == 6
    assert "every one of the 6 probed instances failed" in plan.held_back


@pytest.mark.parametrize("verdict", [SILENT, REFUSED, TIMEOUT, SICK])
def test_every_probe_failing_acts_on_nothing(verdict: Verdict) -> None:
    """However they fail, even answering HTTP 500 (a dependency every check includes):
    stopping every task helps nothing, so no verdict is acted on, and no count written."""
    rules = replace(DEFAULTS, check_failures=1)
    result = _assess([*H1, *H2, *H3], rules=rules)
    plan = decide(result, {t.key: verdict for t in result.targets}, rules)
    assert not plan.deletions and not plan.stops and not plan.tags and not plan.failing
    assert plan.guard.fail_open and plan.held_back
    assert outcome_of({**empty_summary(False), "held_back": plan.held_back})[0] == "held"


def test_the_fraction_guard_refuses_orphans_only_and_never_two() -> None:
    """ECS says most of the zone is gone: the orphans wait for a human; the verdicts of the
    instances ECS shows alive are still acted on. Two orphans or fewer always go."""
    rules = replace(DEFAULTS, check_failures=1)
    clusters = [replace(C3, hosts=(live(2), live(3)), tasks={
        k: v for k, v in C3.tasks.items() if k not in ("t1", "t2")},
        gone_tasks=frozenset({"t1", "t2"}))]
    many = [*agent("ip-10-0-0-7", "10.0.0.7", *[("w", 40000 + n, 8080, "c", f"g{n}")
                                                 for n in range(8)])]
    gone = {f"g{n}" for n in range(8)} | {"t1", "t2"}
    clusters = [replace(clusters[0], gone_tasks=frozenset(gone))]
    result = _assess([*H1, *many, *H2, *H3], clusters, rules)
    plan = decide(result, _verdicts(result, {}, {32770: SICK}), rules)
    assert plan.refused_by == "delete_fraction" and "12 of 19 deletable" in plan.refused
    assert {d.record.key for d in plan.deletions} == {H2[1].key} and _acted(plan) == {"t3"}

    two = [srv(H1, "t1"), srv(H1, "t2")]  # the host's A record is not in the zone
    small = decide(_assess([*two, *H3], clusters, rules), {}, rules)  # 2 of 7
    assert not small.refused and len(small.deletions) == DELETE_FLOOR == 2
    alone = decide(_assess([*H1], clusters, rules), {}, rules)  # 3 of 3: every one
    assert alone.refused_by == "delete_fraction"
    off = decide(_assess([*H1], clusters, rules), {}, replace(rules, max_delete_fraction=1))
    assert not off.refused and len(off.deletions) == 3


# --- 2. a broken path is not a sick instance ----------------------------------------------

def test_one_unreachable_host_holds_back_only_its_own_instances() -> None:
    """Nothing at 10.0.0.1 answers (no connection, no reset): its two instances are held;
    10.0.0.3's sick one is acted on. The old sweep refused everything for that one host."""
    rules = replace(DEFAULTS, check_failures=1)
    result = _assess([*H1, *H2, *H3], rules=rules)
    plan = decide(result, _verdicts(result, {"10.0.0.1": SILENT}, {32781: SICK}), rules)
    assert _acted(plan) == {"u1"}
    assert {f.target.task for f in plan.held} == {"t1", "t2"}
    assert all("nothing at 10.0.0.1 answered" in f.held for f in plan.held)
    assert plan.guard.unreachable == ["10.0.0.1"] and not plan.guard.fail_open
    assert "10.0.0.1" in plan.held_back


@pytest.mark.parametrize(("answer", "acted"), [(REFUSED, True), (TIMEOUT, True),
                                               (SICK, True), (SILENT, False)])
def test_an_instance_alone_at_its_address_is_judged_when_its_host_answered(
        answer: Verdict, acted: bool) -> None:
    """A reset or an accepted connection comes from the host: the path works (security
    groups and NACLs drop, they never reset). Only silence is held."""
    rules = replace(DEFAULTS, check_failures=1)
    result = _assess([*H2, *H3], rules=rules)
    plan = decide(result, _verdicts(result, {"10.0.0.2": answer}), rules)
    assert (_acted(plan) == {"t3"}) is acted
    assert bool(plan.held) is not acted


def test_a_silent_instance_beside_answering_ones_is_judged() -> None:
    """Its host answered for its neighbours: the path to that address works."""
    rules = replace(DEFAULTS, check_failures=1)
    result = _assess([*H3], rules=rules)
    plan = decide(result, _verdicts(result, {}, {32780: SILENT}), rules)
    assert _acted(plan) == {"u0"} and not plan.held


# --- 3. failures in a row, kept on the task -------------------------------------------------

def test_failures_in_a_row_are_counted_on_the_task_then_acted_on() -> None:
    rules = replace(DEFAULTS, check_failures=3)
    for count, acted in ((0, False), (1, False), (2, True)):
        tags = {failure_tag(32781): str(count)} if count else {}
        cluster = replace(C3, tasks={**C3.tasks, "u1": _task_on("u1", 3, 32781, tags)})
        result = _assess([*H3], [cluster], rules)
        assert [t.failures for t in result.targets if t.task == "u1"] == [count]
        plan = decide(result, _verdicts(result, {}, {32781: TIMEOUT}), rules)
        assert (_acted(plan) == {"u1"}) is acted
        if not acted:
            assert [(f.target.task, f.failures) for f in plan.failing] == [("u1", count + 1)]
            assert plan.tags == [TagChange("c", "arn:aws:ecs:us-east-1:1:task/c/u1",
                                           ((failure_tag(32781), str(count + 1)),))]
            assert not plan.deletions
        else:
            assert not plan.tags  # a stopped task needs no count


def test_a_healthy_answer_clears_the_count_and_an_unreadable_one_counts_nothing() -> None:
    cluster = replace(C3, tasks={**C3.tasks,
                                 "u1": _task_on("u1", 3, 32781, {failure_tag(32781): "1"}),
                                 "u2": _task_on("u2", 3, 32782, {failure_tag(32782): "lots"})})
    result = _assess([*H3], [cluster])
    assert {t.task: t.failures for t in result.targets}["u2"] == 0
    plan = decide(result, _verdicts(result, {}), DEFAULTS)
    assert plan.tags == [TagChange("c", "arn:aws:ecs:us-east-1:1:task/c/u1", (),
                                   (failure_tag(32781),))]


def test_held_and_ecs_vouched_failures_leave_the_count_alone() -> None:
    cluster = replace(C3, tasks={**C3.tasks,
                                 "t3": _task_on("t3", 2, 32770, {failure_tag(32770): "1"})})
    result = _assess([*H2, *H3], [cluster])
    plan = decide(result, _verdicts(result, {"10.0.0.2": SILENT}), DEFAULTS)
    assert not plan.tags and not plan.stops and [f.target.task for f in plan.held] == ["t3"]


def test_without_stop_unhealthy_the_count_stays_on_the_running_task() -> None:
    rules = replace(DEFAULTS, stop_unhealthy=False)
    cluster = replace(C3, tasks={**C3.tasks,
                                 "u1": _task_on("u1", 3, 32781, {failure_tag(32781): "1"})})
    result = _assess([*H3], [cluster], rules)
    plan = decide(result, _verdicts(result, {}, {32781: SICK}), rules)
    assert not plan.stops and len(plan.deletions) == 1
    assert plan.tags == [TagChange("c", "arn:aws:ecs:us-east-1:1:task/c/u1",
                                   ((failure_tag(32781), "2"),))]
    # At the threshold it stays there: acted on again at once, no tag written again.
    cluster = replace(C3, tasks={**C3.tasks,
                                 "u1": _task_on("u1", 3, 32781, {failure_tag(32781): "2"})})
    result = _assess([*H3], [cluster], rules)
    plan = decide(result, _verdicts(result, {}, {32781: SICK}), rules)
    assert len(plan.deletions) == 1 and not plan.tags


def test_an_instance_without_an_ecs_task_has_nowhere_to_count() -> None:
    """A container ECS did not start: with CHECK_FAILURES above 1 it is held (its agent
    withdraws it when it stops); at 1 it is acted on, records only."""
    cluster = replace(C3, hosts=(live(1), live(3)))
    result = _assess([*H_PLAIN, *H3], [cluster])
    plain = {t.key for t in result.targets if not t.task}
    assert len(plain) == 1
    verdicts = {k: (SICK if k in plain else v) for k, v in _verdicts(result, {}).items()}
    plan = decide(result, verdicts, DEFAULTS)
    assert not plan.deletions and "no ECS task" in plan.held[0].held
    plan = decide(result, verdicts, replace(DEFAULTS, check_failures=1))
    assert len(plan.deletions) == 1 and not plan.stops


# --- 4. probe only a declared port ECS confirms ---------------------------------------------

def _forged(host_label: str, tid: str, port: int, cluster: str = "c",
            container_port: int = 8080) -> RecordSet:
    """What one host's write credentials can put in the zone: a record naming another
    host's task (its id is visible to anyone who can list tasks) at some port."""
    owner = Owner(host=host_label, container="f0f0f0f0f0f0", port=f"{container_port}/tcp",
                  cluster=cluster, task=tid)
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


def test_a_bound_but_undeclared_sidecar_port_is_suspect() -> None:
    """The victim's task binds a second port (a metrics sidecar, 9100 -> 32799) that no
    container declares a SERVICE_9100_NAME for: a record there is never probed."""
    containers = (TaskContainer("web", bindings=(PortBinding(8080, 32770),)),
                  TaskContainer("metrics", bindings=(PortBinding(9100, 32799),)))
    specs = (spec("web", {"SERVICE_8080_NAME": "web"}), spec("metrics", {"SCRAPE": "1"}))
    victim = task("t3", 2, containers=containers, specs=specs)
    forged = _forged("ip-10-0-0-2", "t3", 32799, container_port=9100)
    result = _assess([*H2, forged], [replace(C3, tasks={**C3.tasks, "t3": victim})])
    assert [t.port for t in result.targets if t.task == "t3"] == [32770]
    assert "container metrics's port 9100, which declares no SERVICE_9100_NAME" in \
        result.suspect[0].reason
    # Declared through the task's container overrides (RunTask), it is a service.
    declared = with_task(victim, env_overrides={"metrics": {"SERVICE_9100_NAME": "m"}})
    result = _assess([*H2, forged], [replace(C3, tasks={**C3.tasks, "t3": declared})])
    assert sorted(t.port for t in result.targets if t.task == "t3") == [32770, 32799]
    # SERVICE_9100_IGNORE withdraws the declaration again.
    ignored = with_task(victim, env_overrides={"metrics": {"SERVICE_9100_NAME": "m",
                                                           "SERVICE_9100_IGNORE": "true"}})
    result = _assess([*H2, forged], [replace(C3, tasks={**C3.tasks, "t3": ignored})])
    assert len(result.suspect) == 1


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
    undeclared = task("tt1", eni_ips=("10.1.0.1",), specs=[spec("web", ports=(
        PortBinding(8080),))])
    result = _assess(t1, [replace(C_OK, tasks={"tt1": undeclared})])
    assert not result.targets and "declares no SERVICE_8080_NAME" in result.suspect[0].reason


def test_the_records_own_container_decides_when_ecs_gives_runtime_ids() -> None:
    """Two containers; the record's container (by docker id) is not the one bound to its
    port: ECS does not back the record."""
    records = agent("ip-10-0-0-2", "10.0.0.2", ("web", 32770, 8080, "c", "t3"),
                    container="aaaaaa")
    containers = (TaskContainer("web", "aaaaaa000000" + "0" * 52, bindings=(
                      PortBinding(8080, 31000),)),
                  TaskContainer("side", "bbbbbb000000" + "0" * 52, bindings=(
                      PortBinding(8080, 32770),)))
    specs = (spec("web", {"SERVICE_8080_NAME": "web"}), spec("side", {"SERVICE_8080_NAME": "s"}))
    result = _assess(records, [replace(C_OK, tasks={"t3": task("t3", 2, containers=containers,
                                                               specs=specs)})])
    assert not result.targets and len(result.suspect) == 1


# --- 5. a service says how it is checked ----------------------------------------------------

def _declaring(env: Mapping[str, str]) -> ClusterView:
    view = task("t3", 2, specs=(spec("web", {"SERVICE_8080_NAME": "web", **env}),))
    return replace(C_OK, tasks={"t3": view})


def test_check_tcp_and_none() -> None:
    (target,) = _assess([*H2], [_declaring({"SERVICE_8080_CHECK": "TCP"})]).targets
    assert (target.check, target.url) == (Check.TCP, "tcp://10.0.0.2:32770")
    result = _assess([*H2], [_declaring({"SERVICE_8080_CHECK": "none"})])
    assert not result.targets and result.kept == 2 and not result.skipped


@pytest.mark.parametrize(("env", "cause"), [
    ({"SERVICE_8080_CHECK": "htpp"}, "SERVICE_8080_CHECK='htpp' is not one of http, tcp, none"),
    ({"SERVICE_8080_CHECK_HTTP": "/santé"},
     "SERVICE_8080_CHECK_HTTP='/santé' is not ASCII: percent-encode it ('/sant%C3%A9' for "
     "UTF-8)"),
    ({"SERVICE_8080_CHECK_HTTP": "/a b"}, "contains a space or a control character"),
])
def test_a_declaration_that_cannot_be_checked_is_that_instances_no_verdict(
        env: Mapping[str, str], cause: str) -> None:
    result = _assess([*H2, *H3], [replace(C3, tasks={**C3.tasks, **_declaring(env).tasks})])
    assert [t.task for t in result.targets] == ["u0", "u1", "u2", "u3"]
    (no_verdict,) = result.no_verdict
    assert no_verdict.task == "c/t3" and cause in no_verdict.reason
    # Its records are ECS's live instance's: they count for the fraction guard, and stay.
    assert {r.key for r in H2 if r.type == "SRV"} <= result.alive


def test_a_non_ascii_path_is_fine_with_a_tcp_check() -> None:
    env = {"SERVICE_8080_CHECK": "tcp", "SERVICE_8080_CHECK_HTTP": "/santé"}
    assert [t.check for t in _assess([*H2], [_declaring(env)]).targets] == [Check.TCP]


def test_a_probe_error_is_no_verdict() -> None:
    result = _assess([*H2, *H3])
    broken = Verdict(False, "the check itself failed: ValueError: x", reached=False,
                     judged=False)
    plan = decide(result, _verdicts(result, {"10.0.0.2": broken}), DEFAULTS)
    assert [(t.task, cause) for t, cause in plan.no_verdict] == [("t3", broken.detail)]
    assert not plan.held and not plan.failing and plan.guard.probed == 4


# --- 6. ECS's own health check and the grace ----------------------------------------------

def _checked(health: str, start_period: float = 0.0, started: float = NOW - 3600,
             grace: str = "") -> ClusterView:
    env = {"SERVICE_8080_NAME": "web", **({"SERVICE_8080_CHECK_GRACE": grace} if grace else {})}
    view = task("t3", 2, started=started, containers=(
        TaskContainer("web", health_status=health, bindings=(PortBinding(8080, 32770),)),),
        specs=(spec("web", env, ports=(PortBinding(8080),), health_check=True,
                    start_period=start_period),))
    return replace(C3, tasks={**C3.tasks, "t3": view})


def test_a_container_ecs_reports_healthy_is_not_stopped_on_our_probe() -> None:
    rules = replace(DEFAULTS, check_failures=1)
    result = _assess([*H2, *H3], [_checked("HEALTHY")], rules)
    (vouched,) = [t for t in result.targets if t.task == "t3"]
    assert vouched.ecs_healthy == "ECS reports container web of task t3 HEALTHY"
    plan = decide(result, _verdicts(result, {"10.0.0.2": SICK}), rules)
    assert not plan.deletions and not plan.stops and not plan.unhealthy and not plan.tags
    assert [t.task for t, _ in plan.ecs_healthy] == ["t3"]


def test_ecs_unhealthy_or_unknown_leaves_it_to_the_probe() -> None:
    rules = replace(DEFAULTS, check_failures=1)
    for health in ("UNHEALTHY", "UNKNOWN"):
        result = _assess([*H2, *H3], [_checked(health)], rules)
        plan = decide(result, _verdicts(result, {"10.0.0.2": SICK}), rules)
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


def test_grace_is_the_longest_of_grace_seconds_check_grace_and_start_period() -> None:
    def judged(cluster: ClusterView) -> bool:
        return any(t.task == "t3" for t in _assess([*H2], [cluster]).targets)

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


def test_check_variables_parsed_and_a_bad_one_named_without_blocking_others() -> None:
    specs = (spec("web", {"SERVICE_8080_NAME": "web", "SERVICE_8080_CHECK_GRACE": "120"}),
             spec("api", {"SERVICE_9000_NAME": "api"}, {"SERVICE_9000_CHECK_GRACE": "soon"}),
             spec("adm", {"SERVICE_7000_NAME": "adm", "SERVICE_7000_CHECK_GRACE": "-5"}),
             spec("db", {"SERVICE_5432_NAME": "db", "SERVICE_5432_CHECK": "ping"}))
    evidence = task("t3", specs=specs)
    assert evidence.services[:3] == (Declaration("web", 8080, "", 120.0),
                                     Declaration("api", 9000, "", None),
                                     Declaration("adm", 7000, "", None))
    assert evidence.services[3].unusable.startswith("SERVICE_5432_CHECK='ping'")
    assert evidence.definition is not None
    problems = [str(p) for p in definition_problems(evidence.definition)]
    assert len(problems) == 3
    assert problems[0] == ("container api: SERVICE_9000_CHECK_GRACE: 'soon' is not a number "
                           "of seconds: GRACE_SECONDS applies")
    assert "container adm" in problems[1] and "SERVICE_7000_CHECK_GRACE" in problems[1]
    assert problems[2] == ("container db: SERVICE_5432_CHECK: 'ping' is not one of http, "
                           "tcp, none: the service is not checked")


# --- 7. settings, real sockets, the summary --------------------------------------------------

def test_the_check_failures_setting_is_read_and_checked() -> None:
    assert SweepSettings.from_env({}).check_failures == 2
    assert SweepSettings.from_env({"CHECK_FAILURES": "3"}).check_failures == 3
    for bad in ("0", "two", "1001"):
        with pytest.raises(SettingsError, match="CHECK_FAILURES"):
            SweepSettings.from_env({"CHECK_FAILURES": bad})
    assert rules_of(SweepSettings.from_env({"CHECK_FAILURES": "1"})).check_failures == 1


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_the_probes_own_verdicts_say_whether_the_host_answered() -> None:
    """Verdict.reached reads the socket's outcome: tie the two together on real sockets.
    A 500, a reset (refused) and an accepted connection that never answers all came from
    the host; a connection the host never completed did not."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as reserved, socket.socket() as full, socket.socket() as filler:
        reserved.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # one pending connection fills its queue; later SYNs are dropped
        filler.connect(full.getsockname())
        hung = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
        try:
            answered = check("127.0.0.1", server.server_address[1], "/health", 2.0, 1)
            refused = check("127.0.0.1", reserved.getsockname()[1], "/health", 2.0, 1)
            timed_out = check("127.0.0.1", hung.getsockname()[1], "/health", 0.3, 1)
            silent = check("127.0.0.1", full.getsockname()[1], "/health", 0.3, 1)
            silent_tcp = check("127.0.0.1", full.getsockname()[1], "", 0.3, 1, Check.TCP)
            accepted_tcp = check("127.0.0.1", hung.getsockname()[1], "", 0.3, 1, Check.TCP)
        finally:
            hung.close()
            server.shutdown()
            server.server_close()
    assert (answered.healthy, answered.reached, answered.detail) == (False, True, "HTTP 500")
    assert (refused.healthy, refused.reached) == (False, True)
    assert (timed_out.healthy, timed_out.reached, timed_out.detail) == (
        False, True, "timed out after 0.3s")
    assert (silent.healthy, silent.reached, silent.detail) == (
        False, False, "no connection within 0.3s")
    assert (silent_tcp.healthy, silent_tcp.reached) == (False, False)
    assert (accepted_tcp.healthy, accepted_tcp.detail) == (True, "accepts connections")


def test_every_summary_key_exists_before_anything_ran() -> None:
    summary = empty_summary(dry_run=True)
    assert summary["refused"] == "" and summary["refused_by"] == "" and summary["held_back"] == ""
    assert summary["suspect"] == [] and summary["ecs_healthy"] == []
    assert summary["failing"] == [] and summary["held"] == [] and summary["no_verdict"] == []
    assert summary["outcome"] == "ok" and outcome_of(summary) == ("ok", "")
    assert summary["guard"] == {"deletable": 0, "planned": 0, "probed": 0, "failed": 0,
                                "unreachable": [], "fail_open": False}

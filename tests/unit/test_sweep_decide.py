"""The sweep's pure decisions, as tables: an observation + the owned records -> actions.

Records are built by the agent's own code (``records.host_records``) and, for task-events
records, by ``records.routed`` with the task owner, exactly as the writers build them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import pytest

from ecssd_agent.core import naming
from ecssd_agent.core.ecs_task import (
    ContainerDefinition,
    PortBinding,
    Task,
    TaskContainer,
    TaskDefinition,
)
from ecssd_agent.core.metadata import Declaration
from ecssd_agent.core.model import Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import host_records, routed, srv_value
from ecssd_agent.sweep.decide import (
    Assessment,
    ClusterView,
    HostView,
    Rules,
    Scope,
    Verdict,
    assess,
    decide,
    referenced_tasks,
)
from ecssd_agent.sweep.evidence import TaskEvidence

ZONE = "sd.internal."
NOW = 1_700_000_000.0
# Decisive: the delete-fraction guard off, a verdict acted on at the first failure (the
# guards and the failures in a row have their own tests, test_sweep_guards.py).
RULES = Rules(max_delete_fraction=1.0, check_failures=1)
# What ECS reports bound for each task of the tables below: (container port, host port).
PORTS = {"t1": (8080, 32768), "t2": (9000, 32769), "t3": (8080, 32770), "t4": (8080, 32771),
         "t9": (8080, 32772)}


def arn(n: int) -> str:
    return f"arn:aws:ecs:us-east-1:1:container-instance/c/{n}"


def live(n: int, ip: str | None = None, cluster_label: str = "") -> HostView:
    ip = ip or f"10.0.0.{n}"
    return HostView(arn(n), f"i-{n}", cluster_label or f"ip-10-0-0-{n}", ip, True, "running")


def task(tid: str, host: int = 1, last: str = "RUNNING", desired: str = "RUNNING",
         started: float | None = NOW - 3600, *, containers: Sequence[TaskContainer] | None = None,
         specs: Sequence[ContainerDefinition] | None = None, eni_ips: tuple[str, ...] = (),
         health: str = "", network_mode: str = "") -> TaskEvidence:
    """A task as ECS reports it: bridge tasks with the networkBindings of PORTS, awsvpc ones
    (``eni_ips``) with a definition mapping port 8080; either's container "web" declares
    ``SERVICE_<port>_NAME`` for its port. ``specs``: its task definition's container
    definitions (``()``: a definition without any)."""
    if eni_ips:
        network_mode = network_mode or "awsvpc"
        if specs is None:
            specs = (spec("web", {"SERVICE_8080_NAME": "web"}, ports=(PortBinding(8080),)),)
    elif specs is None and tid in PORTS:
        cport = PORTS[tid][0]
        specs = (spec("web", {f"SERVICE_{cport}_NAME": "web"}, ports=(PortBinding(cport),)),)
    if containers is None:
        containers = (TaskContainer("web", bindings=(PortBinding(*PORTS[tid]),)),) \
            if tid in PORTS and not eni_ips else ()
    when = datetime.fromtimestamp(started, timezone.utc) if started is not None else None
    described = Task(f"arn:aws:ecs:us-east-1:1:task/c/{tid}", tid, "c", last, desired,
                     container_instance_arn=arn(host), eni_ips=eni_ips,
                     containers=tuple(containers), started_at=when, health_status=health)
    definition = TaskDefinition("td:1", network_mode or "bridge", tuple(specs or ()))
    return TaskEvidence(described, definition)


def spec(name: str, env: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
         ports: Sequence[PortBinding] = (), health_check: bool = False,
         start_period: float = 0.0) -> ContainerDefinition:
    """A container definition (``env`` and ``labels``: its SERVICE_ variables)."""
    return ContainerDefinition(name, dict(env or {}), dict(labels or {}), tuple(ports),
                               health_check, start_period)


def with_task(evidence: TaskEvidence, **changes: object) -> TaskEvidence:
    """The same evidence, the task's own fields changed (``last_status=...``)."""
    return replace(evidence, task=replace(evidence.task, **changes))  # type: ignore[arg-type]


def agent(label: str, ip: str, *services: tuple[str, int, int, str, str],
          container: str = "c0ffee") -> list[RecordSet]:
    """An agent's records: (name, host port, container port, cluster, task id) per service."""
    instances = [
        ServiceInstance(name=name, protocol="tcp", container_port=cport, port=hport,
                        container_id=f"{container}{i:06d}{'0' * 52}", cluster=cluster,
                        task_arn=f"arn:aws:ecs:us-east-1:1:task/{cluster}/{tid}" if tid else "")
        for i, (name, hport, cport, cluster, tid) in enumerate(services)
    ]
    records, problems = host_records(Host(label, ip), instances, ZONE, Routing.WEIGHTED, 0)
    assert not problems
    return records


def task_records(cluster: str, tid: str, ip: str, port: int = 8080) -> list[RecordSet]:
    """What the task-events Lambda writes for an awsvpc task: task A, SRV, service A."""
    target = naming.record_name(f"{tid}.task", ZONE)
    a_owner = Owner(kind=Kind.TASK, cluster=cluster, task=tid)
    return [
        routed(target, "A", [ip], a_owner, Routing.WEIGHTED, 0),
        routed(naming.record_name("web", ZONE), "SRV", [srv_value(port, target)],
               Owner(kind=Kind.TASK, cluster=cluster, task=tid, port=f"{port}/tcp"),
               Routing.WEIGHTED, 0),
        routed(naming.record_name("web", ZONE), "A", [ip], a_owner, Routing.WEIGHTED, 0),
    ]


FOREIGN = [
    RecordSet("www.sd.internal.", "A", ("10.9.9.9",), 60),
    RecordSet("x.sd.internal.", "A", ("10.9.9.8",), 60, set_identifier="someone-else", weight=1),
    RecordSet("y.sd.internal.", "A", ("10.9.9.7",), 60, set_identifier="ecssd:h:", weight=1),
]


def srv(records: Sequence[RecordSet], task_id: str) -> RecordSet:
    return next(r for r in records if r.type == "SRV" and (r.set_identifier or "").endswith(task_id))


def a_record(records: Sequence[RecordSet]) -> RecordSet:
    return next(r for r in records if r.type == "A")


@dataclass
class Case:
    id: str
    clusters: Sequence[ClusterView]
    records: Sequence[RecordSet]
    deleted: Sequence[RecordSet] = ()
    probed: Sequence[tuple[str, int]] = ()  # (ip, port) of each target
    skipped: int = 0
    out_of_scope: int = 0
    all_clusters: bool = True
    rules: Rules = RULES
    errors: int = 0
    kept: int | None = None
    reasons: Sequence[str] = field(default_factory=tuple)  # substrings of the deletion reasons


H1 = agent("ip-10-0-0-1", "10.0.0.1", ("web", 32768, 8080, "c", "t1"), ("api", 32769, 9000, "c", "t2"))
H2 = agent("ip-10-0-0-2", "10.0.0.2", ("web", 32770, 8080, "c", "t3"))
H_CUSTOM = agent("web-1", "10.0.0.3", ("web", 32771, 8080, "c", "t4"))
H_PLAIN = agent("ip-10-0-0-1", "10.0.0.1", ("plain", 5000, 5000, "", ""), container="abcdef")
H_OTHER = agent("ip-10-0-5-5", "10.0.5.5", ("web", 32772, 8080, "other", "t9"))
H_ONLY_A = agent("ip-10-0-6-6", "10.0.6.6")
T1 = task_records("c", "tt1", "10.1.0.1")

C_OK = ClusterView("c", hosts=(live(1), live(2)),
                   tasks={t: task(t, 1 if t in ("t1", "t2") else 2) for t in ("t1", "t2", "t3")})

CASES = [
    Case("live hosts, running tasks: probe each at its instance's IP",
         [C_OK], [*H1, *H2, *FOREIGN],
         probed=[("10.0.0.1", 32768), ("10.0.0.1", 32769), ("10.0.0.2", 32770)], kept=2),
    Case("a stopped task: its record goes, the host and its other task stay",
         [replace(C_OK, tasks={**C_OK.tasks, "t2": task("t2", last="STOPPED", desired="STOPPED")})],
         [*H1, *H2], deleted=[srv(H1, "t2")],
         probed=[("10.0.0.1", 32768), ("10.0.0.2", 32770)], reasons=["task t2", "STOPPED"]),
    Case("desiredStatus STOPPED counts as stopping",
         [replace(C_OK, tasks={**C_OK.tasks, "t2": task("t2", desired="STOPPED")})],
         [*H1], deleted=[srv(H1, "t2")], probed=[("10.0.0.1", 32768)]),
    Case("a task ECS does not know (MISSING) is gone",
         [replace(C_OK, tasks={"t1": C_OK.tasks["t1"]}, gone_tasks=frozenset({"t2"}))],
         [*H1], deleted=[srv(H1, "t2")], probed=[("10.0.0.1", 32768)],
         reasons=["no longer exists"]),
    Case("a task whose state is unknown (describe failure, not MISSING) is skipped",
         [replace(C_OK, tasks={"t1": C_OK.tasks["t1"]})],
         [*H1], probed=[("10.0.0.1", 32768)], skipped=1),
    Case("all clusters: a host that is no container instance anywhere is dead",
         [replace(C_OK, hosts=(live(2),), tasks={"t3": task("t3", 2)},
                  gone_tasks=frozenset({"t1", "t2"}))],
         [*H1, *H2], deleted=H1, probed=[("10.0.0.2", 32770)]),
    Case("all clusters: a dead host's plain (non-ECS) records go too",
         [replace(C_OK, hosts=(live(2),))], [*H_PLAIN], deleted=H_PLAIN,
         reasons=["not a container instance of any cluster"]),
    Case("restricted: a terminated host's stopped tasks go, and its A record with them",
         [ClusterView("c", hosts=(replace(live(1), live=False, state="terminated"),),
                      gone_tasks=frozenset({"t1", "t2"}))],
         [*H1], deleted=H1, all_clusters=False, reasons=["left the swept cluster"]),
    Case("restricted: a terminated instance's name alone proves nothing (IPs are reused)",
         [ClusterView("c", hosts=(replace(live(6, "10.0.6.6"), label="ip-10-0-6-6",
                                          live=False, state="terminated"),))],
         [*H_ONLY_A], all_clusters=False, out_of_scope=1),
    Case("all clusters: a terminated host is dead",
         [ClusterView("c", hosts=(replace(live(1), live=False, state="terminated"),),
                      gone_tasks=frozenset({"t1", "t2"}))],
         [*H1], deleted=H1, reasons=["not a container instance of any cluster"]),
    Case("a task still RUNNING on a terminated instance loses its records",
         [ClusterView("c", hosts=(replace(live(1), live=False, state="terminated"),),
                      tasks={"t1": task("t1"), "t2": task("t2")})],
         [*H1], deleted=H1, reasons=["runs on no live container instance"]),
    Case("a host identified by its A record's IP (custom hostname) is alive",
         [ClusterView("c", hosts=(live(3),), tasks={"t4": task("t4", 3)})],
         [*H_CUSTOM], probed=[("10.0.0.3", 32771)], kept=1),
    Case("a host that is not the task's container instance: skipped, A record kept",
         [ClusterView("c", hosts=(live(1), live(2)), tasks={"t3": task("t3", 1)})],
         [*H2], skipped=1, kept=1),
    Case("an unknown host whose task runs on another live instance: skipped, A kept",
         [ClusterView("c", hosts=(live(1),), tasks={"t3": task("t3", 1)})],
         [*H2], skipped=2),
    Case("restricted: a host of a cluster not swept is never touched",
         [C_OK], [*H_OTHER], all_clusters=False, out_of_scope=2),
    Case("restricted: an unknown host with only an A record is never touched",
         [C_OK], [*H_ONLY_A], all_clusters=False, out_of_scope=1),
    Case("restricted: an unknown host's plain records are never touched",
         [replace(C_OK, hosts=(live(2),))], [*H_PLAIN], all_clusters=False, out_of_scope=2),
    Case("restricted: a host that left the swept cluster (tasks gone) goes entirely",
         [replace(C_OK, hosts=(live(2),), tasks={}, gone_tasks=frozenset({"t1", "t2"}))],
         [*H1], deleted=H1, all_clusters=False, reasons=["left the swept cluster"]),
    Case("all clusters: records of a cluster that no longer exists, on a dead host",
         [C_OK], [*H_OTHER], deleted=H_OTHER),
    Case("a failed cluster: its records are skipped, nothing deleted",
         [replace(C_OK, error="DescribeTasks failed")], [*H1, *H2], skipped=5, errors=1),
    Case("a failed cluster: unknown hosts are not judged dead in an all-clusters sweep",
         [replace(C_OK, hosts=(live(2),), gone_tasks=frozenset({"t1", "t2"})),
          ClusterView("d", error="boom")], [*H_PLAIN], skipped=2, errors=1),
    Case("a failed cluster: a host known to be in it is skipped",
         [ClusterView("d", hosts=(live(1),), error="boom"), replace(C_OK, hosts=(live(2),))],
         [*H_PLAIN], skipped=2, errors=1),
    Case("a failed cluster does not stop judging a healthy cluster's own hosts",
         [C_OK, ClusterView("d", error="boom")], [*H2],
         probed=[("10.0.0.2", 32770)], kept=1, errors=1),
    Case("task-events records: probed at the task ENI, at the SRV port",
         [replace(C_OK, tasks={"tt1": task("tt1", eni_ips=("10.1.0.1",))})], [*T1],
         probed=[("10.1.0.1", 8080)], kept=2),
    Case("task-events records: the task stopped, every record of it goes",
         [replace(C_OK, tasks={"tt1": task("tt1", last="STOPPED", desired="STOPPED")})], [*T1],
         deleted=T1),
    Case("task-events records of a cluster not swept: untouched",
         [ClusterView("other")], [*T1], all_clusters=False, out_of_scope=3),
    Case("task-events records of a cluster that does not exist (all clusters): gone",
         [ClusterView("other")], [*T1], deleted=T1, reasons=["does not exist"]),
    Case("a task within its grace period is not probed",
         [replace(C_OK, tasks={**C_OK.tasks, "t1": task("t1", started=NOW - 10)})],
         [*H1], probed=[("10.0.0.1", 32769)], skipped=1, kept=1),
    Case("CHECK_HEALTH off: nothing probed, live records kept",
         [C_OK], [*H1], rules=replace(RULES, check_health=False), kept=3),
    Case("the clusters could not be listed: nothing judged",
         [], [*H1], skipped=3, errors=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_assess(case: Case) -> None:
    error = "" if case.clusters else "listing the clusters failed"
    scope = Scope(tuple(case.clusters), all_clusters=case.all_clusters, error=error)
    result = assess(scope, case.records, case.rules, NOW)

    assert sorted(d.record.key for d in result.orphans) == sorted(r.key for r in case.deleted)
    assert sorted((t.ip, t.port) for t in result.targets) == sorted(case.probed)
    assert len(result.skipped) == case.skipped, result.skipped
    assert result.out_of_scope == case.out_of_scope
    assert len(result.errors) == case.errors
    assert result.owned == sum(1 for r in case.records if r not in FOREIGN)
    if case.kept is not None:
        assert result.kept == case.kept
    for text in case.reasons:
        assert any(text in d.reason for d in result.orphans), (text, result.orphans)
    # Every owned record set lands in exactly one bucket.
    in_targets = sum(len(t.records) for t in result.targets)
    skipped_records = sum(1 for r in case.records
                          if r.set_identifier in {s.what for s in result.skipped})
    if not any(r.set_identifier and ":t:" in r.set_identifier for r in case.records):
        assert (len(result.orphans) + in_targets + result.kept + skipped_records
                + result.out_of_scope) == result.owned


def test_foreign_records_are_never_decided() -> None:
    scope = Scope((replace(C_OK, hosts=()),), all_clusters=True)
    result = assess(scope, FOREIGN, RULES, NOW)
    assert result.owned == 0 and not result.orphans and not result.skipped


# --- decide ------------------------------------------------------------------------------

def _assessed(records: Sequence[RecordSet], rules: Rules = RULES,
              clusters: Sequence[ClusterView] = (C_OK,)) -> Assessment:
    return assess(Scope(tuple(clusters), all_clusters=True), records, rules, NOW)


def test_unhealthy_instance_loses_its_record_and_its_task_is_stopped() -> None:
    result = _assessed([*H1, *H2])
    bad = next(t for t in result.targets if t.port == 32769)
    verdicts = {t.key: Verdict(t is not bad, "HTTP 200" if t is not bad else "HTTP 500")
                for t in result.targets}
    plan = decide(result, verdicts, RULES)
    assert [d.record for d in plan.deletions] == [srv(H1, "t2")]
    assert plan.deletions[0].reason == "unhealthy: HTTP 500"
    assert [(s.cluster, s.task, s.reason) for s in plan.stops] == [
        ("c", "t2", "ecssd health check failed: HTTP 500")]
    assert len(plan.healthy) == 2 and not plan.refused


def test_unhealthy_without_stop_unhealthy_only_deletes() -> None:
    rules = replace(RULES, stop_unhealthy=False)
    result = _assessed([*H1, *H2], rules)
    plan = decide(result, {t.key: Verdict(t.port == 32770, "timed out after 2s")
                           for t in result.targets}, rules)
    assert len(plan.deletions) == 2 and plan.stops == []


def test_unhealthy_task_events_instance_loses_every_record_of_its_task() -> None:
    clusters = [replace(C_OK, tasks={**C_OK.tasks, "tt1": task("tt1", eni_ips=("10.1.0.1",))})]
    result = _assessed([*T1, *H2], clusters=clusters)
    plan = decide(result, {t.key: Verdict(t.port != 8080, "connection refused")
                           for t in result.targets}, RULES)
    assert sorted(d.record.key for d in plan.deletions) == sorted(r.key for r in T1)
    assert [s.task for s in plan.stops] == ["tt1"]


def test_no_verdict_means_not_judged() -> None:
    result = _assessed([*H1])
    plan = decide(result, {}, RULES)
    assert plan.deletions == [] and plan.stops == [] and len(plan.unjudged) == 2


def test_a_task_is_stopped_once_however_many_of_its_instances_fail() -> None:
    records = agent("ip-10-0-0-1", "10.0.0.1", ("web", 32768, 8080, "c", "t1"),
                    ("admin", 32769, 8081, "c", "t1"))
    bound = TaskContainer("web", bindings=(PortBinding(8080, 32768), PortBinding(8081, 32769)))
    declared = spec("web", {"SERVICE_8080_NAME": "web", "SERVICE_8081_NAME": "admin"})
    result = _assessed([*records, *H2], clusters=[replace(C_OK, tasks={**C_OK.tasks, "t1": task(
        "t1", containers=(bound,), specs=(declared,))})])
    plan = decide(result, {t.key: Verdict(t.port == 32770, "HTTP 503")
                           for t in result.targets}, RULES)
    assert len(plan.deletions) == 2 and len(plan.stops) == 1


@pytest.mark.parametrize(("fraction", "refused"), [(0.4, True), (0.6, True), (0.7, False),
                                                   (1.0, False)])
def test_the_fraction_guard_counts_orphans_against_what_ecs_shows(fraction: float,
                                                                  refused: bool) -> None:
    rules = replace(RULES, max_delete_fraction=fraction)
    # H1 (three record sets) is gone; H2 (SRV + A) is alive: 3 orphans of 5 record sets
    # decided on ECS's word (the live host's A record counts: it is ECS's word too).
    clusters = [replace(C_OK, hosts=(live(2),), gone_tasks=frozenset({"t1", "t2"}))]
    result = _assessed([*H1, *H2], rules, clusters)
    plan = decide(result, {t.key: Verdict(True, "HTTP 200") for t in result.targets}, rules)
    assert (plan.guard.planned, plan.guard.deletable) == (3, 5)
    assert bool(plan.refused) == refused
    if refused:
        assert plan.refused_by == "delete_fraction"
        assert f"MAX_DELETE_FRACTION={fraction:g}" in plan.refused
        assert "3 of 5 deletable" in plan.refused
        assert not any(d.record in H1 for d in plan.deletions)
    else:
        assert {d.record.key for d in plan.deletions} >= {r.key for r in H1}


def test_stop_reason_fits_stoptask() -> None:
    result = _assessed([*H1, *H2])
    plan = decide(result, {t.key: Verdict(t.port != 32770, "x" * 400)
                           for t in result.targets}, RULES)
    assert len(plan.stops[0].reason) == 255


# --- health check paths ------------------------------------------------------------------

@pytest.mark.parametrize(("env", "labels", "overrides", "expected"), [
    ({"SERVICE_8080_CHECK_HTTP": "/status"}, {}, {}, "/status"),
    ({}, {}, {}, "/health"),
    ({"SERVICE_8080_CHECK_HTTP": "/env"}, {"SERVICE_8080_CHECK_HTTP": "/label"}, {}, "/label"),
    ({"SERVICE_8080_CHECK_HTTP": "/env"}, {}, {"SERVICE_8080_CHECK_HTTP": "/override"},
     "/override"),
    ({"SERVICE_9000_NAME": "x", "SERVICE_9000_CHECK_HTTP": "/other"}, {}, {}, "/health"),
    ({"SERVICE_8080_CHECK_HTTP": "ping"}, {}, {}, "/ping"),
])
def test_check_path(env: dict, labels: dict, overrides: dict, expected: str) -> None:
    """The declaring container's CHECK_HTTP: docker labels over the task's container
    overrides over the definition's environment, else CHECK_HEALTH_PATH."""
    view = task("t3", 2, specs=[spec("web", {"SERVICE_8080_NAME": "web", **env}, labels)])
    view = with_task(view, env_overrides={"web": overrides})
    result = _assessed([*H2], clusters=[replace(C_OK, tasks={"t3": view})])
    assert [t.path for t in result.targets] == [expected]


def test_check_path_of_the_records_own_container() -> None:
    """Two containers declare the same port; ECS's runtime ids tell which is the record's."""
    containers = (TaskContainer("a", "0123456789ab" + "0" * 52, bindings=(
                      PortBinding(8080, 31000),)),
                  TaskContainer("b", "c0ffee000000" + "0" * 52, bindings=(
                      PortBinding(8080, 32770),)))
    specs = [spec("a", {"SERVICE_8080_NAME": "w", "SERVICE_8080_CHECK_HTTP": "/a"}),
             spec("b", {"SERVICE_8080_NAME": "w", "SERVICE_8080_CHECK_HTTP": "/b"})]
    view = task("t3", 2, specs=specs, containers=containers)
    result = _assessed([*H2], clusters=[replace(C_OK, tasks={"t3": view})])
    assert [t.path for t in result.targets] == ["/b"]


def test_the_declared_services_of_a_task_definition() -> None:
    view = task("t1", specs=[spec("web", {"SERVICE_8080_NAME": "web", "SERVICE_8080_CHECK_HTTP":
                                          "/s", "SERVICE_X_NAME": "bad", "OTHER": "1"})])
    assert view.services == (Declaration("web", 8080, "/s"),)


def test_probe_target_carries_the_definition_path() -> None:
    cluster = replace(C_OK, tasks={"t3": task("t3", 2, specs=[spec(
        "web", {"SERVICE_8080_NAME": "web", "SERVICE_8080_CHECK_HTTP": "/ready"})])})
    result = _assessed([*H2], clusters=[cluster])
    assert [t.url for t in result.targets] == ["http://10.0.0.2:32770/ready"]


def test_udp_services_are_not_http_checked() -> None:
    instance = ServiceInstance(name="dns", protocol="udp", container_port=53, port=30053,
                               container_id="d" * 64, cluster="c",
                               task_arn="arn:aws:ecs:us-east-1:1:task/c/t3")
    records, _ = host_records(Host("ip-10-0-0-2", "10.0.0.2"), [instance], ZONE,
                              Routing.WEIGHTED, 0)
    result = _assessed(records)
    assert result.targets == [] and result.kept == 2


def test_long_cluster_names_match_by_digest() -> None:
    long_name = "c" * 120
    records = agent("ip-10-0-0-1", "10.0.0.1", ("web", 32768, 8080, long_name, "t1"))
    assert "#" in (srv(records, "t1").set_identifier or "")
    cluster = ClusterView(long_name, hosts=(live(1),),
                          tasks={"t1": task("t1", last="STOPPED", desired="STOPPED")})
    result = _assessed(records, clusters=[cluster])
    assert [d.record for d in result.orphans] == [srv(records, "t1")]
    assert referenced_tasks(records, [long_name, "c"]) == {long_name: {"t1"}, "c": set()}


def test_referenced_tasks_per_cluster() -> None:
    got = referenced_tasks([*H1, *H2, *T1, *H_OTHER, *FOREIGN], ["c"])
    assert got == {"c": {"t1", "t2", "t3", "tt1"}}

"""ECS task descriptions -> the task-events Lambda's record sets (pure; no AWS).

The sample events in tests/events are in the documented EventBridge "ECS Task State Change"
shape; the task definitions here are in DescribeTaskDefinition's shape.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ecssd_agent.aws.ecs import parse_task_definition
from ecssd_agent.config_fields import SettingsError
from ecssd_agent.core import ownership
from ecssd_agent.core import task_records as tr
from ecssd_agent.core.ecs_task import Task, TaskContainer, TaskDefinition, network_mode
from ecssd_agent.core.model import RecordSet, Routing
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.plan import plan
from ecssd_agent.core.records import parse_srv
from ecssd_agent.events import settings as event_settings
from ecssd_agent.events.handle import parse_event

EVENTS = Path(__file__).resolve().parent.parent / "events"
ZONE = "sd.internal."
TASK_ID = "c13b4cb40f1f4fe4a2971f76ae5a47ad"
TARGET = f"{TASK_ID}.task.sd.internal."


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def fargate(**changes: Any) -> Task:
    return replace(parse_event(event("ecs_task_running_fargate.json")), **changes)


def definition(*containers: dict[str, Any], mode: str = "awsvpc") -> TaskDefinition:
    """A task definition in DescribeTaskDefinition's shape, as the ECS adapter reads it."""
    return parse_task_definition({"networkMode": mode, "containerDefinitions": list(containers)})


def container(name: str = "FargateApp", env: dict[str, str] | None = None,
              labels: dict[str, str] | None = None,
              ports: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "environment": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "dockerLabels": labels or {},
        "portMappings": [{"containerPort": p, "protocol": proto} for p, proto in ports or []],
    }


def records(task: Task, td: TaskDefinition, ip: str = "10.0.0.139",
            routing: Routing = Routing.WEIGHTED) -> tuple[dict[tuple[str, str], RecordSet], list[str]]:
    found, problems = tr.service_records(task, td, ip, ZONE, routing, 0)
    by_name = {(r.name, r.type, r.set_identifier): r for r in found}
    assert len(by_name) == len(found)
    return {(r.name, r.type): r for r in found}, [str(p) for p in problems]


# --- names and ownership -----------------------------------------------------------------

@pytest.mark.parametrize("owner", [
    Owner(kind=Kind.TASK, cluster="prod", task=TASK_ID, port=""),  # the task's A records
    Owner(kind=Kind.TASK, cluster="prod", task="0b7a35ac-0c1f-4a4e-9d0c-5b4b1e9a1f00", port=""),
    Owner(kind=Kind.TASK, cluster="c" * 200, task=TASK_ID, port=""),  # carried as a digest
])
def test_task_level_owner_round_trips_with_an_empty_port(owner: Owner) -> None:
    ident = ownership.set_identifier(owner)
    assert ident.endswith(":")
    parsed = ownership.parse_set_identifier(ident)
    assert parsed is not None and parsed.kind is Kind.TASK and parsed.task == owner.task
    assert ownership.cluster_matches(parsed.cluster, owner.cluster)
    assert parsed.port == ""


def test_task_record_name_is_one_label_under_task() -> None:
    assert tr.task_record_name(TASK_ID, ZONE) == TARGET
    uuid = "0b7a35ac-0c1f-4a4e-9d0c-5b4b1e9a1f00"  # old-style task ids
    assert tr.task_record_name(uuid.upper(), ZONE) == f"{uuid}.task.sd.internal."


def test_owned_by_task_is_exact() -> None:
    owns = ownership.owned_by_task("prod", TASK_ID)

    def rs(owner: Owner) -> RecordSet:
        return RecordSet("x.sd.internal.", "A", ("1.2.3.4",), 0, ownership.set_identifier(owner), 1)

    assert owns(rs(Owner(kind=Kind.TASK, cluster="prod", task=TASK_ID, port="")))
    assert owns(rs(Owner(kind=Kind.TASK, cluster="prod", task=TASK_ID, port="80/tcp")))
    assert owns(rs(Owner(kind=Kind.TASK, cluster="prod", task=TASK_ID)))
    assert not owns(rs(Owner(kind=Kind.TASK, cluster="prod", task="other", port="")))
    assert not owns(rs(Owner(kind=Kind.TASK, cluster="test", task=TASK_ID, port="")))
    assert not owns(rs(Owner(host="ip-1", container="abcdef012345", port="80/tcp",
                             cluster="prod", task=TASK_ID)))  # the agent's record of it
    assert not owns(RecordSet("x.sd.internal.", "A", ("1.2.3.4",), 0, f"ecssd:t:prod:{TASK_ID}", 1))
    long = "c" * 200
    assert ownership.owned_by_task(long, TASK_ID)(rs(Owner(kind=Kind.TASK, cluster=long, task=TASK_ID)))


def test_fixed_record_owns_only_task_a_records_of_that_name() -> None:
    owns = ownership.owned_fixed_record("xray.sd.internal.")
    task = fargate()
    ours = tr.fixed_record("xray.sd.internal.", task, "10.0.0.139", Routing.WEIGHTED, 0)
    assert owns(ours)
    assert ours.set_identifier == f"ecssd:t:FargateCluster:{TASK_ID}:" and ours.weight == 1
    assert not owns(replace(ours, name="other.sd.internal."))
    assert not owns(RecordSet("xray.sd.internal.", "A", ("10.0.0.1",), 300))  # hand-made
    agent = ownership.set_identifier(Owner(host="ip-10-0-0-1"))
    assert not owns(replace(ours, set_identifier=agent))
    srv_owner = ownership.set_identifier(tr.task_owner(task, "2000/udp"))
    assert not owns(replace(ours, set_identifier=srv_owner))


# --- service records ---------------------------------------------------------------------

def test_awsvpc_env_service_gets_task_a_srv_and_service_a() -> None:
    task = fargate(env_overrides={})
    found, problems = records(task, definition(container(env={"SERVICE_8080_NAME": "time"},
                                                         ports=[(8080, "tcp")])))
    assert problems == []
    assert set(found) == {(TARGET, "A"), ("time.sd.internal.", "SRV"), ("time.sd.internal.", "A")}
    srv = found[("time.sd.internal.", "SRV")]
    assert parse_srv(srv.values[0]).port == 8080
    assert srv.values == (f"1 1 8080 {TARGET}",)
    assert srv.set_identifier == f"ecssd:t:FargateCluster:{TASK_ID}:8080/tcp"
    assert found[(TARGET, "A")].values == ("10.0.0.139",)
    assert found[("time.sd.internal.", "A")].values == ("10.0.0.139",)
    assert found[("time.sd.internal.", "A")].set_identifier == f"ecssd:t:FargateCluster:{TASK_ID}:"
    assert all(r.weight == 1 and not r.multivalue for r in found.values())


def test_multivalue_routing() -> None:
    found, _ = records(fargate(), definition(container(env={"SERVICE_8080_NAME": "time"})),
                       routing=Routing.MULTIVALUE)
    assert all(r.multivalue and r.weight is None for r in found.values())


def test_overrides_declare_services_too() -> None:
    found, _ = records(fargate(), definition(container()))
    assert ("metrics.sd.internal.", "SRV") in found  # SERVICE_9090_NAME from the event's overrides


def test_srv_style_name_gets_no_service_a_record() -> None:
    found, problems = records(fargate(env_overrides={}), definition(
        container(env={"SERVICE_2000_NAME": "_xray._udp"}, ports=[(2000, "udp")])))
    assert problems == []
    assert set(found) == {(TARGET, "A"), ("_xray._udp.sd.internal.", "SRV")}
    assert str(found[("_xray._udp.sd.internal.", "SRV")].set_identifier).endswith(":2000/udp")


def test_discovery_label_registers_a_weighted_a_record_and_srv_for_first_port() -> None:
    found, problems = records(fargate(env_overrides={}), definition(container(
        labels={"discovery.service.name": "Simple-Service"}, ports=[(8080, "tcp"), (9000, "tcp")])))
    assert problems == []
    assert found[("simple-service.sd.internal.", "A")].values == ("10.0.0.139",)
    assert found[("simple-service.sd.internal.", "SRV")].values == (f"1 1 8080 {TARGET}",)


def test_discovery_label_without_ports_is_an_a_record_only() -> None:
    found, problems = records(fargate(env_overrides={}), definition(container(
        labels={"discovery.service.name": "simple-service"})))
    assert problems == []
    assert ("simple-service.sd.internal.", "A") in found
    assert ("simple-service.sd.internal.", "SRV") not in found


def test_two_tasks_of_one_service_are_two_weighted_record_sets() -> None:
    td = definition(container(labels={"discovery.service.name": "web"}, ports=[(80, "tcp")]))
    a, _ = records(fargate(env_overrides={}), td, ip="10.0.0.1")
    other = "0123456789abcdef0123456789abcdef"
    b, _ = records(fargate(env_overrides={}, id=other, arn=f"arn:aws:ecs:r:1:task/FargateCluster/{other}"),
                   td, ip="10.0.0.2")
    ra, rb = a[("web.sd.internal.", "A")], b[("web.sd.internal.", "A")]
    assert ra.key != rb.key and ra.weight == rb.weight == 1
    assert rb.values == ("10.0.0.2",)


def test_bridge_uses_host_port_from_bindings_and_writes_no_service_a() -> None:
    task = parse_event(event("ecs_task_running_ec2_bridge.json"))
    td = definition(container("xray-daemon", env={"SERVICE_2000_NAME": "_xray._udp",
                                                  "SERVICE_3000_NAME": "xray-status"},
                              ports=[(2000, "udp"), (2000, "tcp"), (3000, "tcp")]), mode="bridge")
    found, problems = records(task, td, ip="10.0.1.17")
    target = "0b69d5c0d0374d5c8a6a1f3d9b1e2a44.task.sd.internal."
    assert problems == []
    assert found[("_xray._udp.sd.internal.", "SRV")].values == (f"1 1 2000 {target}",)
    assert found[("xray-status.sd.internal.", "SRV")].values == (f"1 1 32768 {target}",)
    assert found[(target, "A")].values == ("10.0.1.17",)
    assert ("xray-status.sd.internal.", "A") not in found  # 3000 is not where clients connect


def test_bridge_port_without_binding_is_a_problem_not_a_record() -> None:
    task = parse_event(event("ecs_task_running_ec2_bridge.json"))
    td = definition(container("xray-daemon", env={"SERVICE_4000_NAME": "nope"}), mode="bridge")
    found, problems = records(task, td, ip="10.0.1.17")
    assert found == {}
    assert len(problems) == 1 and "not published" in problems[0]


def test_host_mode_uses_the_container_port() -> None:
    task = replace(parse_event(event("ecs_task_running_ec2_bridge.json")), containers=())
    td = definition(container("xray-daemon", env={"SERVICE_8080_NAME": "web"}), mode="host")
    found, _ = records(task, td, ip="10.0.1.17")
    assert found[("web.sd.internal.", "SRV")].values[0].split()[2] == "8080"
    assert found[("web.sd.internal.", "A")].values == ("10.0.1.17",)


def test_ignored_and_exited_containers_and_bad_names() -> None:
    task = fargate(env_overrides={}, containers=(TaskContainer("gone", last_status="STOPPED"),))
    td = definition(
        container("ignored", env={"SERVICE_80_NAME": "a", "SERVICE_IGNORE": "true"},
                  labels={"discovery.service.name": "a2"}),
        container("gone", env={"SERVICE_80_NAME": "b"}),
        container("bad", env={"SERVICE_80_NAME": "bad name", "SERVICE_81_NAME": "good"}),
    )
    found, problems = records(task, td)
    assert {name for name, _ in found} == {"good.sd.internal.", TARGET}
    assert len(problems) == 1 and "SERVICE_80_NAME" in problems[0]


def test_a_task_declaring_nothing_has_no_records() -> None:
    task = fargate(env_overrides={})
    td = definition(container(ports=[(80, "tcp")]))
    assert records(task, td) == ({}, [])
    assert not tr.declares_services(task, td)
    assert tr.declares_services(fargate(), td)  # the override declares one
    assert tr.declares_services(task, definition(container(labels={"discovery.service.name": "x"})))


def test_network_mode() -> None:
    assert network_mode(fargate(), parse_task_definition({})) == "awsvpc"
    ec2 = fargate(launch_type="EC2")
    assert network_mode(ec2, parse_task_definition({})) == "bridge"
    assert network_mode(ec2, parse_task_definition({"networkMode": "host"})) == "host"


def test_planning_the_desired_records_twice_changes_nothing() -> None:
    task = fargate()
    td = definition(container(env={"SERVICE_8080_NAME": "time"},
                              labels={"discovery.service.name": "web"}, ports=[(8080, "tcp")]))
    desired, _ = tr.service_records(task, td, "10.0.0.139", ZONE, Routing.WEIGHTED, 0)
    owns = ownership.owned_by_task(task.cluster, task.id)
    assert plan([], desired, owns)
    assert plan(desired, desired, owns) == []
    assert [c.action.value for c in plan(desired, [], owns)] == ["DELETE"] * len(desired)


# --- who serves the fixed name -----------------------------------------------------------

def _at(task_id: str, minute: int | None) -> Task:
    when = datetime(2024, 5, 1, 12, minute, tzinfo=timezone.utc) if minute is not None else None
    return fargate(id=task_id, started_at=when)


def test_newest_task_wins() -> None:
    assert tr.newest([]) is None
    assert tr.newest([_at("a", 1), _at("b", 5), _at("c", 3)]).id == "b"  # type: ignore[union-attr]
    assert tr.newest([_at("a", None), _at("b", 2)]).id == "b"  # type: ignore[union-attr]


@pytest.mark.parametrize("holder, candidate, keeps", [
    (None, _at("new", 5), False),
    (_at("same", 1), _at("same", 1), True),
    (_at("old", 1), _at("new", 5), False),  # the replacement takes over
    (_at("new", 5), _at("old", 1), True),  # a late RUNNING event of the old task does not
    (_at("a", None), _at("b", 1), False),  # no evidence: the RUNNING event wins
])
def test_holder_keeps(holder: Task | None, candidate: Task, keeps: bool) -> None:
    assert tr.holder_keeps(holder, candidate) is keeps


# --- settings ----------------------------------------------------------------------------

def test_config_defaults_and_fixed_mode() -> None:
    config = event_settings.load({
        "HOSTED_ZONE_ID": "/hostedzone/Z123", "RR_NAME": "Xray.acme.com", "TASK_GROUP": "service:xray",
        "ECS_CLUSTERS": "a, arn:aws:ecs:r:1:cluster/b"})
    assert config.hosted_zone_id == "Z123" and config.rr_name == "xray.acme.com"
    assert config.fixed_record and config.routing is Routing.WEIGHTED and config.ttl == 0
    assert config.service_records and config.bridge_records and not config.dry_run
    assert config.watches("a") and config.watches("b") and not config.watches("c")
    assert event_settings.load({"DOMAIN": "sd.internal"}).watches("anything")


def test_route53_requests_wait_for_the_execution_environments_budget() -> None:
    from health_lambda import task_events

    runtime = task_events.build(event_settings.load({"DOMAIN": "sd.internal",
                                                     "ROUTE53_RATE": "2.5"}))
    bucket = runtime.clients.budgets["route53"]
    assert (bucket.rate, bucket.burst) == (2.5, 10)
    assert "ecs" not in runtime.clients.budgets


@pytest.mark.parametrize("env, variable", [
    ({}, "DOMAIN"),
    ({"DOMAIN": "bad name"}, "DOMAIN"),
    ({"DOMAIN": "sd.internal", "RR_NAME": "xray"}, "TASK_GROUP"),
    ({"DOMAIN": "sd.internal", "ROUTING": "latency"}, "ROUTING"),
    ({"DOMAIN": "sd.internal", "TTL": "-1"}, "TTL"),
    ({"DOMAIN": "sd.internal", "SERVICE_RECORDS": "maybe"}, "SERVICE_RECORDS"),
    ({"DOMAIN": "sd.internal", "ROUTE53_RATE": "0"}, "ROUTE53_RATE"),
    ({"DOMAIN": "sd.internal", "ROUTE53_BURST": "0"}, "ROUTE53_BURST"),
])
def test_config_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        event_settings.load(env)


# --- the health gate ---------------------------------------------------------------------

HEALTH_CHECK = {"command": ["CMD-SHELL", "curl -f http://localhost:8080/ || exit 1"],
                "interval": 5, "retries": 2}


def checked(name: str = "FargateApp", port: int = 8080, service: str = "time") -> dict[str, Any]:
    """A container definition with ECS's documented healthCheck (a command is required)."""
    return {**container(name, env={f"SERVICE_{port}_NAME": service}, ports=[(port, "tcp")]),
            "healthCheck": HEALTH_CHECK}


def health(**status: str) -> Task:
    """The Fargate event with these containers (name -> healthStatus; "": none reported)."""
    raw = event("ecs_task_running_fargate.json")
    del raw["detail"]["overrides"]
    raw["detail"]["containers"] = [{"name": name, "lastStatus": "RUNNING",
                                    **({"healthStatus": s} if s else {})}
                                   for name, s in status.items()]
    return parse_event(raw)


def test_parses_the_container_health_status() -> None:
    raw = event("ecs_task_running_fargate.json")
    raw["detail"]["containers"][0]["healthStatus"] = "UNHEALTHY"
    assert parse_event(raw).containers[0].health_status == "UNHEALTHY"
    assert fargate().containers[0].health_status == ""  # not reported: not known healthy


@pytest.mark.parametrize("status", ["UNKNOWN", "UNHEALTHY", ""])
def test_a_health_checked_container_not_healthy_gets_no_records(status: str) -> None:
    task = health(FargateApp=status)
    assert records(task, definition(checked())) == ({}, [])
    # and the records it had are withdrawn (UNHEALTHY after HEALTHY), nothing else
    had, _ = tr.service_records(health(FargateApp="HEALTHY"), definition(checked()),
                                "10.0.0.139", ZONE, Routing.WEIGHTED, 0)
    desired, _ = tr.service_records(task, definition(checked()), "10.0.0.139", ZONE,
                                    Routing.WEIGHTED, 0)
    changes = plan(had, desired, ownership.owned_by_task(task.cluster, task.id))
    assert had and {(c.action.value, c.record) for c in changes} == {("DELETE", r) for r in had}


def test_a_healthy_container_and_one_without_a_check_get_their_records() -> None:
    task = health(FargateApp="HEALTHY", sidecar="")
    td = definition(checked(), container("sidecar", env={"SERVICE_9000_NAME": "side"},
                                         ports=[(9000, "tcp")]))
    found, problems = records(task, td)
    assert problems == []
    assert {("time.sd.internal.", "SRV"), ("side.sd.internal.", "SRV"), (TARGET, "A")} <= set(found)


def test_one_unhealthy_container_withdraws_only_its_own_services() -> None:
    task = health(FargateApp="UNHEALTHY", sidecar="")
    td = definition(checked(), container("sidecar", env={"SERVICE_9000_NAME": "side"},
                                         ports=[(9000, "tcp")]))
    found, _ = records(task, td)
    assert set(found) == {("side.sd.internal.", "SRV"), ("side.sd.internal.", "A"), (TARGET, "A")}


def test_without_the_health_gate_health_is_not_asked() -> None:
    task = health(FargateApp="UNHEALTHY")
    found, _ = tr.service_records(task, definition(checked()), "10.0.0.139", ZONE,
                                  Routing.WEIGHTED, 0, health_gate=False)
    assert ("time.sd.internal.", "SRV") in {(r.name, r.type) for r in found}
    assert event_settings.load({"DOMAIN": "sd.internal"}).health_gate is True
    assert event_settings.load({"DOMAIN": "sd.internal", "HEALTH_GATE": "false"}).health_gate \
        is False
    with pytest.raises(SettingsError, match="HEALTH_GATE"):
        event_settings.load({"DOMAIN": "sd.internal", "HEALTH_GATE": "maybe"})


def test_the_health_is_what_describe_tasks_reports_never_the_events() -> None:
    """ECS documents no health in a task state change event: whatever an event says, the
    health DescribeTasks reports wins, also at the same task version; a container it does
    not report has no verdict."""
    from ecssd_agent.events.handle import _described_health

    event_task = replace(health(FargateApp="HEALTHY", sidecar="HEALTHY"), version=5)
    described = replace(event_task, containers=(
        TaskContainer("FargateApp", health_status="UNHEALTHY"),))
    assert [(c.name, c.health_status) for c in _described_health(event_task, described)] == [
        ("FargateApp", "UNHEALTHY"), ("sidecar", "")]


def test_a_health_check_without_a_command_gates_nothing() -> None:
    """ECS documents ``command`` as required: a ``healthCheck`` without one is no check ECS
    runs (its containers stay UNKNOWN forever), so it cannot hold the records back. The health
    sweep reads the same definition the same way (it does not take ECS's word for them)."""
    task = health(FargateApp="UNKNOWN")
    found, _ = records(task, definition({**checked(), "healthCheck": {"interval": 5}}))
    assert ("time.sd.internal.", "SRV") in found

"""ECS's wire format -> the task model: DescribeTasks tasks and task state change events (one
shape), DescribeTaskDefinition answers; every wrong shape is one refusal naming the field.

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

from ecssd_agent.aws.ecs import MalformedTask, parse_task, parse_task_definition
from ecssd_agent.core.ecs_task import ContainerDefinition, Phase, PortBinding, Task
from ecssd_agent.events.handle import MalformedEvent, parse_event

EVENTS = Path(__file__).resolve().parent.parent / "events"
TASK_ID = "c13b4cb40f1f4fe4a2971f76ae5a47ad"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def fargate(**changes: Any) -> Task:
    return replace(parse_event(event("ecs_task_running_fargate.json")), **changes)


# --- parsing -----------------------------------------------------------------------------

def test_parses_the_documented_fargate_event() -> None:
    task = parse_event(event("ecs_task_running_fargate.json"))
    assert task.id == TASK_ID
    assert task.cluster == "FargateCluster"
    assert task.eni_ip == "10.0.0.139"
    assert task.group == "family:sample-fargate"
    assert task.phase is Phase.REGISTER
    assert task.version == 4
    assert task.started_at == datetime(2020, 1, 23, 17, 57, 58, 103000, tzinfo=timezone.utc)
    assert task.env_overrides == {"FargateApp": {"SERVICE_9090_NAME": "metrics"}}
    assert task.containers[0].runtime_id.startswith("ad64cbc71c7f")


def test_parses_bridge_bindings_and_the_container_instance() -> None:
    task = parse_event(event("ecs_task_running_ec2_bridge.json"))
    assert task.eni_ip == ""
    assert task.container_instance_arn.endswith("/4a1d1b8e6e8c4a4d9b1f7c7f3c2d1e0f")
    assert task.containers[0].bindings == (
        PortBinding(2000, 2000, "udp"), PortBinding(2000, 2000, "tcp"), PortBinding(3000, 32768, "tcp"))


def test_a_describe_tasks_entry_parses_like_an_event() -> None:
    """DescribeTasks names the attachment type differently and returns datetimes."""
    detail = event("ecs_task_running_fargate.json")["detail"]
    detail = {**detail, "attachments": [{**detail["attachments"][0], "type": "ElasticNetworkInterface"}],
              "containers": [{**detail["containers"][0], "networkInterfaces": []}],
              "startedAt": datetime(2020, 1, 23, 17, 57, 58)}
    task = parse_task(detail)
    assert task.eni_ip == "10.0.0.139"
    assert task.started_at == datetime(2020, 1, 23, 17, 57, 58, tzinfo=timezone.utc)


@pytest.mark.parametrize("last, desired, phase", [
    ("PROVISIONING", "RUNNING", Phase.WAIT),
    ("PENDING", "RUNNING", Phase.WAIT),
    ("ACTIVATING", "RUNNING", Phase.WAIT),
    ("RUNNING", "RUNNING", Phase.REGISTER),
    ("RUNNING", "STOPPED", Phase.REMOVE),  # draining starts: stop sending clients there
    ("DEACTIVATING", "STOPPED", Phase.REMOVE),
    ("STOPPING", "STOPPED", Phase.REMOVE),
    ("STOPPED", "STOPPED", Phase.REMOVE),
    ("PENDING", "STOPPED", Phase.REMOVE),
])
def test_phase(last: str, desired: str, phase: Phase) -> None:
    assert fargate(last_status=last, desired_status=desired).phase is phase


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize("bad, reason", [
    (None, "not an object"),
    ([], "not an object"),
    ({"source": "aws.ecs", "detail-type": "ECS Container Instance State Change", "detail": {}},
     "not an 'ECS Task State Change' event"),
    ({"source": "aws.ec2", "detail-type": "ECS Task State Change", "detail": {}}, "not an"),
    (_without(event("ecs_task_running_fargate.json"), "detail"), "no 'detail' object"),
    ({**event("ecs_task_running_fargate.json"), "detail": "RUNNING"},
     "detail is not an object: 'RUNNING'"),
    ({**event("ecs_task_running_fargate.json"),
      "detail": _without(event("ecs_task_running_fargate.json")["detail"], "taskArn")},
     "detail.taskArn is missing"),
    ({**event("ecs_task_running_fargate.json"),
      "detail": {**event("ecs_task_running_fargate.json")["detail"], "lastStatus": 3}},
     "detail.lastStatus is not a string: 3"),
    ({**event("ecs_task_running_fargate.json"),
      "detail": _without(event("ecs_task_running_fargate.json")["detail"], "clusterArn")},
     "detail.clusterArn is missing"),
])
def test_malformed_events_are_refused_with_a_reason(bad: Any, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason.replace("(", r"\(")):
        parse_event(bad)


# --- malformed events: each field in turn replaced by each wrong type -----------------------

_DELETED = object()
#: What a field can wrongly be: null, a number, a flag, a string, a list (empty, of a number),
#: an object (empty, of a number), or absent.
WRONG: list[Any] = [None, 7, 1.5, True, "x", "", [], [7], {}, {"x": 7}, _DELETED]


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every field and list item of a JSON value, parents before children."""
    found: list[tuple[str | int, ...]] = [path] if path else []
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        found += _paths(inner, (*path, key))
    return found


def _shown(path: tuple[str | int, ...]) -> str:
    """("detail", "containers", 2) -> "detail.containers[2]", as the refusals name fields."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _mutated(data: Any, path: tuple[str | int, ...], replacement: Any) -> Any:
    copy = json.loads(json.dumps(data))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if replacement is _DELETED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return copy


@pytest.mark.parametrize("name", sorted(p.name for p in EVENTS.glob("*.json")))
def test_every_wrong_shape_of_every_field_is_one_refusal_naming_it(name: str) -> None:
    """Fuzz-like, over the sample events: replace each field (and list item) in turn by each
    wrong type, or remove it. Parsing either succeeds (the field is not read, or null means
    absent) or refuses with a MalformedEvent whose message names the field; never another
    exception (an AttributeError or TypeError would be a traceback instead of a refusal)."""
    original = event(name)
    parse_event(original)
    problems: list[str] = []
    refused = 0
    for path in _paths(original):
        for replacement in WRONG:
            bad = _mutated(original, path, replacement)
            what = f"{_shown(path)} = {'(removed)' if replacement is _DELETED else repr(replacement)}"
            try:
                parse_event(bad)
            except MalformedEvent as exc:
                refused += 1
                if _shown(path) not in str(exc):
                    problems.append(f"{what}: the refusal does not name the field: {exc}")
            except Exception as exc:  # any other exception is the failure
                problems.append(f"{what}: {type(exc).__name__}: {exc}")
    assert problems == [], "\n".join(problems)
    assert refused > 50  # the read fields were really exercised


@pytest.mark.parametrize("field, value, refusal", [
    ("containers", 5, "detail.containers is not a list: 5"),
    ("containers", {"name": "x"}, "detail.containers is not a list: {'name': 'x'}"),
    ("containers", "FargateApp", "detail.containers is not a list: 'FargateApp'"),
    ("containers", [{"name": "a"}, {"name": "b"}, "c"], "detail.containers[2] is not an object: 'c'"),
    ("containers", [{"name": 7}], "detail.containers[0].name is not a string: 7"),
    ("containers", [{"name": "a", "networkBindings": {}}],
     "detail.containers[0].networkBindings is not a list: {}"),
    ("containers", [{"name": "a", "networkBindings": [{"containerPort": "80", "hostPort": 80}]}],
     "detail.containers[0].networkBindings[0].containerPort is not a whole number: '80'"),
    ("containers", [{"name": "a", "networkInterfaces": [None]}],
     "detail.containers[0].networkInterfaces[0] is not an object: None"),
    ("attachments", "eni", "detail.attachments is not a list: 'eni'"),
    ("attachments", [{"type": "eni", "details": 3}], "detail.attachments[0].details is not a list: 3"),
    ("overrides", [], "detail.overrides is not an object: []"),
    ("overrides", {"containerOverrides": [{"name": "a", "environment": [{"name": 1}]}]},
     "detail.overrides.containerOverrides[0].environment[0].name is not a string: 1"),
    ("startedAt", "yesterday", "detail.startedAt is not a timestamp: 'yesterday'"),
    ("startedAt", 1579802278, "detail.startedAt is not a timestamp: 1579802278"),
    ("version", "4", "detail.version is not a whole number: '4'"),
    ("group", ["service:x"], "detail.group is not a string: ['service:x']"),
])
def test_named_malformed_shapes(field: str, value: Any, refusal: str) -> None:
    bad = _mutated(event("ecs_task_running_fargate.json"), ("detail", field), value)
    with pytest.raises(MalformedEvent) as refused:
        parse_event(bad)
    assert str(refused.value) == refusal


def test_null_optional_fields_are_absent_ones() -> None:
    sample = event("ecs_task_running_fargate.json")
    for field in ("containers", "attachments", "overrides", "startedAt", "version", "group"):
        sample["detail"][field] = None
    task = parse_event(sample)
    assert (task.containers, task.eni_ip, task.env_overrides, task.started_at, task.version,
            task.group) == ((), "", {}, None, None, "")


# --- task definitions ----------------------------------------------------------------------

def test_a_task_definition_in_describe_task_definitions_shape() -> None:
    definition = parse_task_definition({
        "taskDefinitionArn": "arn:aws:ecs:r:1:task-definition/web:7", "networkMode": "awsvpc",
        "containerDefinitions": [
            {"name": "web", "environment": [{"name": "SERVICE_8080_NAME", "value": "web"},
                                            {"value": "a pair without a name"}],
             "dockerLabels": {"SERVICE_8080_CHECK_HTTP": "/ready"},
             "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"},
                              {"containerPortRange": "9000-9099", "protocol": "udp"}],
             "healthCheck": {"command": ["CMD-SHELL", "true"], "startPeriod": 30}},
            {"environment": []},  # no name: nothing can address it
        ]})
    assert definition.arn.endswith("web:7") and definition.network_mode == "awsvpc"
    (web,) = definition.containers
    assert web == ContainerDefinition("web", {"SERVICE_8080_NAME": "web"},
                                      {"SERVICE_8080_CHECK_HTTP": "/ready"},
                                      (PortBinding(8080, 8080, "tcp"),), True, 30.0)
    assert parse_task_definition({}, "td:1").network_mode == "bridge"  # EC2's default
    assert parse_task_definition({}, "td:1").arn == "td:1"


@pytest.mark.parametrize("check, runs", [
    ({"command": ["CMD", "true"]}, True),
    ({"command": []}, False),  # ECS documents the command as required: no check it can run
    ({"interval": 5}, False),
    (None, False),
])
def test_a_health_check_is_one_with_a_command(check: Any, runs: bool) -> None:
    definition = parse_task_definition({"containerDefinitions": [{"name": "a", "healthCheck": check}]})
    assert definition.containers[0].health_check is runs


@pytest.mark.parametrize("raw, refusal", [
    ([], "taskDefinition is not an object: []"),
    ({"containerDefinitions": {}}, "taskDefinition.containerDefinitions is not a list: {}"),
    ({"containerDefinitions": [{"name": "a", "environment": "x"}]},
     "taskDefinition.containerDefinitions[0].environment is not a list: 'x'"),
    ({"containerDefinitions": [{"name": "a", "dockerLabels": {"k": 1}}]},
     "taskDefinition.containerDefinitions[0].dockerLabels.k is not a string: 1"),
    ({"containerDefinitions": [{"name": "a", "portMappings": [{"containerPort": "80"}]}]},
     "taskDefinition.containerDefinitions[0].portMappings[0].containerPort is not a whole number: '80'"),
    ({"containerDefinitions": [{"name": "a", "healthCheck": {"command": ["x"], "startPeriod": "1m"}}]},
     "taskDefinition.containerDefinitions[0].healthCheck.startPeriod is not a number of seconds: '1m'"),
])
def test_a_malformed_task_definition_is_one_refusal_naming_the_field(raw: Any, refusal: str) -> None:
    with pytest.raises(MalformedTask) as refused:
        parse_task_definition(raw)
    assert str(refused.value) == refusal

"""The ECS/EC2 read adapter (ecssd_agent/aws/ecs.py) with botocore's Stubber: batch sizes,
evidence (MISSING) versus errors, the EC2 filter, the task definition cache, and the port
bindings and health states of real DescribeTasks answers (moto reports neither)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.core.ecs_task import ContainerDefinition, PortBinding, TaskContainer
from ecssd_agent.sweep import observe
from ecssd_agent.sweep.evidence import failures

CLUSTER = "c"


def _arn(kind: str, n: int) -> str:
    return f"arn:aws:ecs:us-east-1:1:{kind}/{CLUSTER}/{n:032x}"


@pytest.fixture
def ecs() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("ecs", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def ec2() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_describe_tasks_batches_by_100_and_tells_missing_from_other_failures(ecs: Any) -> None:
    client, stub = ecs
    ids = [f"{n:032x}" for n in range(250)]
    for start in (0, 100, 200):
        chunk = sorted(ids)[start:start + 100]
        found = [{"taskArn": _arn("task", int(t, 16)), "lastStatus": "RUNNING",
                  "desiredStatus": "RUNNING", "taskDefinitionArn": "td:1"}
                 for t in chunk if int(t, 16) % 50]
        failures = [{"arn": _arn("task", int(t, 16)),
                     "reason": "MISSING" if int(t, 16) % 100 == 0 else "THROTTLED"}
                    for t in chunk if int(t, 16) % 50 == 0]
        stub.add_response("describe_tasks", {"tasks": found, "failures": failures},
                          {"cluster": CLUSTER, "tasks": chunk})
    described = ecs_api.describe_tasks(client, CLUSTER, ids)
    assert len(described.tasks) == 245
    assert described.missing == {f"{n:032x}" for n in (0, 100, 200)}
    assert set(described.failures) == {f"{n:032x}" for n in (50, 150)}


def test_a_failed_call_is_an_error_naming_cluster_and_operation(ecs: Any) -> None:
    client, stub = ecs
    stub.add_client_error("describe_tasks", "ServerException", "boom", 500)
    with pytest.raises(ecs_api.EcsReadError, match="describe_tasks for cluster c failed"):
        ecs_api.describe_tasks(client, CLUSTER, ["a"])


def test_list_tasks_paginates_and_always_sends_desired_status(ecs: Any) -> None:
    client, stub = ecs
    stub.add_response("list_tasks", {"taskArns": ["a"], "nextToken": "t"},
                      {"cluster": CLUSTER, "desiredStatus": "RUNNING"})
    stub.add_response("list_tasks", {"taskArns": ["b"]},
                      {"cluster": CLUSTER, "desiredStatus": "RUNNING", "nextToken": "t"})
    assert ecs_api.list_tasks(client, CLUSTER) == ["a", "b"]


def test_instance_hosts_batches_and_keeps_instances_ec2_forgot(ecs: Any, ec2: Any) -> None:
    client, stub = ecs
    ec2_client, ec2_stub = ec2
    arns = [_arn("container-instance", n) for n in range(150)]
    for start in (0, 100):
        chunk = sorted(arns)[start:start + 100]
        stub.add_response("describe_container_instances", {"containerInstances": [
            {"containerInstanceArn": a, "ec2InstanceId": f"i-{a[-4:]}", "status": "ACTIVE"}
            for a in chunk]}, {"cluster": CLUSTER, "containerInstances": chunk})
    ids = sorted(f"i-{a[-4:]}" for a in arns)
    for start in (0, 100):
        chunk = ids[start:start + 100]
        ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [
            {"InstanceId": i, "PrivateIpAddress": f"10.0.{n // 250}.{n % 250}",
             "PrivateDnsName": f"ip-{i}.ec2.internal", "State": {"Name": "running"}}
            for n, i in enumerate(chunk) if i != "i-0000"]}]},
            {"Filters": [{"Name": "instance-id", "Values": chunk}]})
    hosts = ecs_api.instance_hosts(client, ec2_client, CLUSTER, arns)
    assert len(hosts) == 150
    gone = hosts[_arn("container-instance", 0)]
    assert (gone.private_ip, gone.state, gone.live) == ("", "", False)
    alive = hosts[_arn("container-instance", 1)]
    assert alive.live and alive.label == "ip-i-0001"


def test_task_definitions_are_fetched_once_per_arn(ecs: Any) -> None:
    client, stub = ecs
    stub.add_response("describe_task_definition", {"taskDefinition": {
        "taskDefinitionArn": "td:1", "containerDefinitions": [
            {"name": "web", "environment": [{"name": "SERVICE_80_NAME", "value": "web"}],
             "dockerLabels": {"SERVICE_80_CHECK_HTTP": "/ok"}}]}}, {"taskDefinition": "td:1"})
    cache = ecs_api.TaskDefinitions()
    first = cache.get(client, "td:1")
    assert cache.get(client, "td:1") is first and cache.calls == 1
    assert first.containers[0].environment == {"SERVICE_80_NAME": "web"}
    assert first.containers[0].labels == {"SERVICE_80_CHECK_HTTP": "/ok"}


def test_describe_clusters_reports_status_and_leaves_out_unknown(ecs: Any) -> None:
    client, stub = ecs
    stub.add_response("describe_clusters", {
        "clusters": [{"clusterName": "a", "status": "ACTIVE"},
                     {"clusterName": "b", "status": "INACTIVE"}],
        "failures": [{"arn": "nope", "reason": "MISSING"}]}, {"clusters": ANY})
    assert ecs_api.describe_clusters(client, ["a", "b", "nope"]) == {"a": "ACTIVE",
                                                                     "b": "INACTIVE"}


# --- port bindings and health, in the shapes real ECS returns ------------------------------

STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
BRIDGE_TASK = {  # DescribeTasks, EC2 launch type, bridge mode, a container with a healthCheck
    "taskArn": _arn("task", 1), "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/c",
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/web:7",
    "containerInstanceArn": _arn("container-instance", 1), "lastStatus": "RUNNING",
    "desiredStatus": "RUNNING", "healthStatus": "HEALTHY", "launchType": "EC2",
    "startedAt": STARTED, "createdAt": STARTED, "version": 3, "attachments": [],
    "tags": [{"key": "ecssd:check-failures:32768", "value": "1"}, {"key": "team", "value": "a"}],
    "containers": [
        {"containerArn": "arn:aws:ecs:us-east-1:1:container/c/1/a", "taskArn": _arn("task", 1),
         "name": "web", "image": "web:1", "runtimeId": "8f0e4d1c2b3a" + "0" * 52,
         "lastStatus": "RUNNING", "healthStatus": "HEALTHY", "networkInterfaces": [],
         "networkBindings": [
             {"bindIP": "0.0.0.0", "containerPort": 8080, "hostPort": 32768, "protocol": "tcp"},
             {"bindIP": "::", "containerPort": 8080, "hostPort": 32768, "protocol": "tcp"},
             {"bindIP": "0.0.0.0", "containerPort": 53, "hostPort": 30053, "protocol": "udp"}]},
        {"containerArn": "arn:aws:ecs:us-east-1:1:container/c/1/b", "taskArn": _arn("task", 1),
         "name": "sidecar", "image": "side:1", "lastStatus": "RUNNING",
         "healthStatus": "UNKNOWN", "networkInterfaces": [], "networkBindings": []}],
}
AWSVPC_TASK = {  # Fargate: no networkBindings, the ENI in attachments
    "taskArn": _arn("task", 2), "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/c",
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/api:2",
    "lastStatus": "PENDING", "desiredStatus": "RUNNING", "healthStatus": "UNKNOWN",
    "launchType": "FARGATE", "createdAt": STARTED, "version": 1,
    "attachments": [{"id": "e", "type": "ElasticNetworkInterface", "status": "ATTACHED",
                     "details": [{"name": "privateIPv4Address", "value": "10.1.2.3"}]}],
    "containers": [{"containerArn": "arn:aws:ecs:us-east-1:1:container/c/2/a",
                    "taskArn": _arn("task", 2), "name": "api", "lastStatus": "PENDING",
                    "networkInterfaces": [{"attachmentId": "e",
                                           "privateIpv4Address": "10.1.2.3"}]}],
}
WEB_DEFINITION = {
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/web:7", "networkMode": "bridge",
    "containerDefinitions": [
        {"name": "web", "image": "web:1",
         "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"},
                          {"containerPort": 53, "protocol": "udp"}],
         "healthCheck": {"command": ["CMD-SHELL", "curl -f localhost:8080/health"],
                         "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 120},
         "environment": [{"name": "SERVICE_8080_NAME", "value": "web"},
                         {"name": "SERVICE_8080_CHECK_GRACE", "value": "90"}],
         "dockerLabels": {"SERVICE_53_NAME": "dns", "SERVICE_53_CHECK_GRACE": "later"}},
        {"name": "sidecar", "image": "side:1"}],
}


def test_describe_tasks_reads_bindings_and_health(ecs: Any) -> None:
    client, stub = ecs
    stub.add_response("describe_tasks", {"tasks": [BRIDGE_TASK, AWSVPC_TASK], "failures": []},
                      {"cluster": CLUSTER, "tasks": ANY})
    found = ecs_api.describe_tasks(client, CLUSTER, [_arn("task", 1), _arn("task", 2)]).tasks
    bridge, awsvpc = found[f"{1:032x}"], found[f"{2:032x}"]
    assert bridge.health_status == "HEALTHY"
    web, side = bridge.containers
    assert (web.health_status, side.health_status) == ("HEALTHY", "UNKNOWN")
    assert web.bindings == (PortBinding(8080, 32768, "tcp"), PortBinding(8080, 32768, "tcp"),
                            PortBinding(53, 30053, "udp"))
    assert side.bindings == ()
    assert awsvpc.containers[0].bindings == () and awsvpc.eni_ips == ("10.1.2.3",)
    assert awsvpc.health_status == "UNKNOWN" and awsvpc.containers[0].health_status == ""


def test_task_definition_keeps_port_mappings_and_health_check(ecs: Any) -> None:
    client, stub = ecs
    stub.add_response("describe_task_definition", {"taskDefinition": WEB_DEFINITION},
                      {"taskDefinition": "td:7"})
    web, side = ecs_api.TaskDefinitions().get(client, "td:7").containers
    assert web.port_mappings == (PortBinding(8080, 0, "tcp"), PortBinding(53, 0, "udp"))
    assert (web.health_check, web.start_period) == (True, 120.0)
    assert (side.port_mappings, side.health_check, side.start_period) == ((), False, 0.0)


def test_observed_task_view_carries_what_the_sweep_judges_by(
        ecs: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Two tasks of one definition with a bad SERVICE_53_CHECK_GRACE: one warning, naming the
    container and the variable; the other service's grace is read; the tasks' tags too."""
    client, stub = ecs
    second = {**BRIDGE_TASK, "taskArn": _arn("task", 3)}
    stub.add_response("list_tasks", {"taskArns": [_arn("task", 1), _arn("task", 3)]},
                      {"cluster": CLUSTER, "desiredStatus": "RUNNING"})
    stub.add_response("describe_tasks", {"tasks": [BRIDGE_TASK, second], "failures": []},
                      {"cluster": CLUSTER, "tasks": ANY, "include": ["TAGS"]})
    stub.add_response("describe_task_definition", {"taskDefinition": WEB_DEFINITION},
                      {"taskDefinition": WEB_DEFINITION["taskDefinitionArn"]})
    with caplog.at_level(logging.WARNING, logger="ecssd_agent.sweep.observe"):
        _, _, views = observe._tasks(client, CLUSTER, {f"{1:032x}", f"{3:032x}"},
                                     ecs_api.TaskDefinitions(), True)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "container web: SERVICE_53_CHECK_GRACE: 'later'" in warnings[0]
    view = views[f"{1:032x}"]
    assert view.definition is not None and view.definition.network_mode == "bridge"
    assert view.task.health_status == "HEALTHY" and not view.awsvpc
    assert view.task.began == STARTED
    # The tags (asked for with include TAGS): where the sweep keeps each port's failures.
    assert view.task.tags == {"ecssd:check-failures:32768": "1", "team": "a"}
    assert failures(view.task, 32768) == 1 and failures(view.task, 30053) == 0
    assert view.task.containers[0] == TaskContainer(
        "web", "8f0e4d1c2b3a" + "0" * 52, "RUNNING", "HEALTHY",
        (PortBinding(8080, 32768), PortBinding(8080, 32768), PortBinding(53, 30053, "udp")))
    assert view.specs[0] == ContainerDefinition(
        "web", {"SERVICE_8080_NAME": "web", "SERVICE_8080_CHECK_GRACE": "90"},
        {"SERVICE_53_NAME": "dns", "SERVICE_53_CHECK_GRACE": "later"},
        (PortBinding(8080), PortBinding(53, 0, "udp")), True, 120.0)
    assert {(s.port, s.check_grace) for s in view.services} == {(8080, 90.0), (53, None)}


def test_an_unreadable_task_description_is_unknown_never_gone(ecs: Any) -> None:
    """One task of the answer in a shape ECS does not document: that task is a failure (its
    state unknown: the sweep judges nothing of it), the others are read; a description naming
    no task at all makes the whole answer unusable (an absent task would look gone)."""
    client, stub = ecs
    bad = {k: v for k, v in BRIDGE_TASK.items() if k != "lastStatus"}
    bad["taskArn"] = _arn("task", 3)
    stub.add_response("describe_tasks", {"tasks": [BRIDGE_TASK, bad], "failures": []},
                      {"cluster": CLUSTER, "tasks": ANY})
    described = ecs_api.describe_tasks(client, CLUSTER, [_arn("task", 1), _arn("task", 3)])
    assert list(described.tasks) == [f"{1:032x}"] and not described.missing
    assert described.failures == {
        f"{3:032x}": "unreadable description: task.lastStatus is missing"}
    stub.add_response("describe_tasks", {"tasks": [{"lastStatus": "RUNNING"}], "failures": []},
                      {"cluster": CLUSTER, "tasks": ANY})
    with pytest.raises(ecs_api.EcsReadError, match="taskArn is missing"):
        ecs_api.describe_tasks(client, CLUSTER, [_arn("task", 1)])

"""The ECS/EC2 read adapter (ecssd_agent/aws/ecs.py) with botocore's Stubber: batch sizes,
evidence (MISSING) versus errors, the EC2 filter, the task definition cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from ecssd_agent.aws import ecs as ecs_api

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

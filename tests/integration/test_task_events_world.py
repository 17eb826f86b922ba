"""An ECS world in the moto server for the task-events tests, and events built from it.

Holds no tests: the helpers the task-events integration tests share. Events are built
the way EventBridge delivers them (the documented "ECS Task State Change" envelope around a
task description) from DescribeTasks output, with the two things moto does not produce
added by hand: container ``networkBindings`` (bridge mode) and the containers' lastStatus.
ECS documents no health in these events, so they carry none.

Where moto 5.2's ECS differs from ECS in what the Lambda reads, the ``world`` fixture makes
it as ECS is (checked in test_task_events_world_checks.py): a container's healthStatus is
UNKNOWN until its health check reports (moto says HEALTHY from the start; a test sets it
with :meth:`World.set_health`), and ListTasks with ``serviceName`` lists that service's
tasks only (moto ignores the filter).
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecs import models as ecs_models

from ecssd_agent.aws.clients import Clients
from ecssd_agent.core import naming, ownership
from ecssd_agent.core.model import Routing
from ecssd_agent.events.settings import TaskEventSettings
from health_lambda import task_events
from tests.support.env import REGION
from tests.support.moto_server import MotoServer

DOMAIN = "sd.internal"
ZONE = DOMAIN + "."
CLUSTER = "apps"
XRAY_GROUP = "service:xray-daemon"
XRAY_NAME = "xray.sd.internal."


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not serialisable: {value!r}")


class World:
    """A VPC on loopback, a private zone, a cluster with EC2 container instances."""

    def __init__(self, aws: MotoServer) -> None:
        self.aws = aws
        self.ec2 = aws.client("ec2")
        self.ecs = aws.client("ecs")
        self.route53 = aws.client("route53")
        self.vpc = self.ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
        # moto's awsvpc run_task needs DNS hostnames on (so does a private zone in AWS).
        self.ec2.modify_vpc_attribute(VpcId=self.vpc, EnableDnsHostnames={"Value": True})
        self.subnet = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
        self.zone_id = self.route53.create_hosted_zone(
            Name=DOMAIN, CallerReference=str(uuid.uuid4()),
            HostedZoneConfig={"Comment": "task events test", "PrivateZone": True},
            VPC={"VPCRegion": REGION, "VPCId": self.vpc},
        )["HostedZone"]["Id"].rsplit("/", 1)[-1]
        self.ecs.create_cluster(clusterName=CLUSTER)
        self.instances: dict[str, str] = {}  # private IP -> container instance ARN

    def container_instance(self, ip: str) -> str:
        """An EC2 instance with this private IP, registered in the cluster."""
        inst = self.ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                                      SubnetId=self.subnet, PrivateIpAddress=ip)["Instances"][0]
        arn: str = self.ecs.register_container_instance(
            cluster=CLUSTER, instanceIdentityDocument=json.dumps({"instanceId": inst["InstanceId"]}),
        )["containerInstance"]["containerInstanceArn"]
        self.instances[ip] = arn
        return arn

    def task_definition(self, family: str, containers: list[dict[str, Any]],
                        mode: str = "awsvpc") -> str:
        kwargs: dict[str, Any] = {"family": family, "networkMode": mode,
                                  "containerDefinitions": containers}
        if mode == "awsvpc":
            kwargs.update(requiresCompatibilities=["FARGATE"], cpu="256", memory="512")
        arn: str = self.ecs.register_task_definition(**kwargs)["taskDefinition"]["taskDefinitionArn"]
        return arn

    def run_fargate(self, family: str, group: str | None = None) -> dict[str, Any]:
        task: dict[str, Any] = self.ecs.run_task(
            cluster=CLUSTER, taskDefinition=family, launchType="FARGATE", group=group or f"family:{family}",
            networkConfiguration={"awsvpcConfiguration": {"subnets": [self.subnet],
                                                          "securityGroups": []}},
        )["tasks"][0]
        return task

    def start_on(self, ip: str, family: str, group: str | None = None) -> dict[str, Any]:
        """Start a task (bridge/host) on the container instance with this IP."""
        task: dict[str, Any] = self.ecs.start_task(
            cluster=CLUSTER, taskDefinition=family, containerInstances=[self.instances[ip]],
            group=group or f"family:{family}",
        )["tasks"][0]
        return task

    def run_service(self, family: str, service: str, count: int = 1,
                    deployment: str = "1") -> list[dict[str, Any]]:
        """Fargate tasks of ECS service ``service`` as its scheduler starts them (group
        ``service:<name>``, startedBy ``ecs-svc/<deployment id>``)."""
        tasks: list[dict[str, Any]] = []
        while len(tasks) < count:
            tasks += self.ecs.run_task(
                cluster=CLUSTER, taskDefinition=family, launchType="FARGATE",
                group=f"service:{service}", startedBy=f"ecs-svc/{deployment}",
                count=min(10, count - len(tasks)),  # RunTask's limit
                networkConfiguration={"awsvpcConfiguration": {"subnets": [self.subnet],
                                                              "securityGroups": []}},
            )["tasks"]
        return tasks

    def set_health(self, task_arn: str, status: str) -> None:
        """What DescribeTasks reports as the health of the task's containers from now on
        (ECS: UNKNOWN until a health check reports, then HEALTHY or UNHEALTHY)."""
        for container in self._backend_task(task_arn).containers:
            container.health_status = status

    @staticmethod
    def _backend_task(task_arn: str) -> Any:
        """moto's own object for the task (the server runs in this process)."""
        return ecs_models.ecs_backends[DEFAULT_ACCOUNT_ID][REGION].tasks[CLUSTER][task_arn]

    def describe(self, task_arn: str) -> dict[str, Any]:
        found: dict[str, Any] = self.ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"][0]
        return found

    def stop(self, task_arn: str) -> None:
        self.ecs.stop_task(cluster=CLUSTER, task=task_arn, reason="test")

    def event(self, task_arn: str, bindings: Mapping[str, list[dict[str, Any]]] | None = None,
              **detail: Any) -> dict[str, Any]:
        """The "ECS Task State Change" event for the task as DescribeTasks shows it now.

        ``bindings`` (container name -> its networkBindings) are the ports ECS bound: from
        now on DescribeTasks reports them too, as ECS does for a running bridge task.
        """
        if bindings is not None:
            for container in self._backend_task(task_arn).containers:
                container.network_bindings = list(bindings.get(container.name, []))
        described = json.loads(json.dumps(self.describe(task_arn), default=_json_safe))
        for attachment in described.get("attachments", []):
            if attachment.get("type") == "ElasticNetworkInterface":
                attachment["type"] = "eni"  # the event's name for it
        described.pop("healthStatus", None)  # ECS sends no health in these events
        for container in described.get("containers", []):
            container["lastStatus"] = described["lastStatus"]  # moto leaves them PENDING
            container.setdefault("networkBindings", [])
            container.pop("healthStatus", None)
        described.update(detail)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": "123456789012",
            "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "region": REGION,
            "resources": [task_arn],
            "detail": described,
        }

    def records(self) -> list[dict[str, Any]]:
        """Every record set the Lambda wrote (its SetIdentifiers are ecssd:t:...)."""
        out = []
        for page in self.route53.get_paginator("list_resource_record_sets").paginate(
                HostedZoneId=self.zone_id):
            out += [r for r in page["ResourceRecordSets"]
                    if r.get("SetIdentifier", "").startswith("ecssd:t:")]
        return out

    def answers(self, name: str, rtype: str) -> set[str]:
        """The values of every record set the Lambda wrote at name/type."""
        return {v["Value"] for r in self.records() if r["Name"] == name and r["Type"] == rtype
                for v in r["ResourceRecords"]}

    def owners(self, name: str, rtype: str) -> set[str]:
        return {ownership.parse_set_identifier(r["SetIdentifier"]).task  # type: ignore[union-attr]
                for r in self.records() if r["Name"] == name and r["Type"] == rtype}


def task_id(task: Mapping[str, Any]) -> str:
    return naming.task_id(task["taskArn"])


def task_name(task: Mapping[str, Any]) -> str:
    return f"{task_id(task)}.task.{ZONE}"


def env(**pairs: str) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


class Lambda:
    """The handler under test, with its own settings and counted clients."""

    def __init__(self, world: World, **config: Any) -> None:
        config.setdefault("hosted_zone_id", world.zone_id)
        self.config = TaskEventSettings(**config)
        self.clients = Clients(region=REGION)
        task_events.runtime.set(task_events.build(self.config, self.clients))

    def __call__(self, event: Any) -> dict[str, Any]:
        return task_events.lambda_handler(event, None)

    def change_requests(self) -> int:
        return self.clients.stats.attempts("ChangeResourceRecordSets")


def faithful_ecs(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's ECS as ECS is, in what the task-events Lambda reads: containers report
    healthStatus UNKNOWN until a check reports, ListTasks honours ``serviceName``."""
    container_init = ecs_models.Container.__init__
    list_tasks = ecs_models.EC2ContainerServiceBackend.list_tasks

    def unknown_health(self: Any, *args: Any, **kwargs: Any) -> None:
        container_init(self, *args, **kwargs)
        self.health_status = "UNKNOWN"

    signature = inspect.signature(list_tasks)

    def by_service(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks = list_tasks(self, *args, **kwargs)
        service = signature.bind(self, *args, **kwargs).arguments.get("service_name")
        return [t for t in tasks if t.group == f"service:{service}"] if service else tasks

    monkeypatch.setattr(ecs_models.Container, "__init__", unknown_health)
    monkeypatch.setattr(ecs_models.EC2ContainerServiceBackend, "list_tasks", by_service)


@pytest.fixture
def world(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    aws.manual_ecs_transitions()  # tasks stay RUNNING until StopTask
    faithful_ecs(monkeypatch)
    yield World(aws)
    task_events.runtime.reset()  # forget this test's runtime


def fixed_lambda(world: World, **config: Any) -> Lambda:
    config.setdefault("rr_name", XRAY_NAME.rstrip("."))
    config.setdefault("task_group", XRAY_GROUP)
    config.setdefault("routing", Routing.WEIGHTED)
    return Lambda(world, **config)

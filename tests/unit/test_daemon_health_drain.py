"""The daemon's gates, driven step by step: the health gate (Docker health status) and the
drain watch (ECS container instance status). Fake engine and clock as in test_daemon_loop;
Route 53 and ECS from moto in-process behind the real adapters."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from ecssd_agent.agent.daemon import Daemon
from ecssd_agent.agent.docker_events import LIFECYCLE_ACTIONS, parse_event
from ecssd_agent.agent.docker_source import to_container
from ecssd_agent.agent.drain import DrainWatch
from ecssd_agent.agent.drain_scope import DrainScope
from ecssd_agent.agent.ecs_introspection import (
    EcsIntrospection,
    InstanceIdentity,
    IntrospectionUnavailable,
)
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.settings import SettingsError, load
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.agent.status import Status
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.coalescer import CAP_FACTOR
from ecssd_agent.core.model import Container
from tests.integration.daemon_world import (
    FakeEcsAgent,
    ecs_keeps_deregistered_instances,
)
from tests.unit.test_daemon_loop import (
    HOST,
    ZONE,
    Clock,
    FakeDocker,
    FakeStream,
    World,
    cid,
    world,
)

__all__ = ["world"]  # fixture

# --- what Docker says ----------------------------------------------------------------------

def inspect(health: dict[str, Any] | None = None, test: list[str] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"Running": True}
    if health is not None:
        state["Health"] = health
    config: dict[str, Any] = {"Env": ["SERVICE_8081_NAME=web"]}
    if test is not None:
        config["Healthcheck"] = {"Test": test}
    return {"Id": cid(1), "Name": "/web", "Config": config, "State": state,
            "HostConfig": {"NetworkMode": "bridge"}}


@pytest.mark.parametrize(("raw", "health", "publishable"), [
    (inspect(), "", True),  # no health check: as before
    (inspect({"Status": "starting"}, ["CMD-SHELL", "true"]), "starting", False),
    (inspect({"Status": "healthy"}, ["CMD-SHELL", "true"]), "healthy", True),
    (inspect({"Status": "unhealthy"}, ["CMD-SHELL", "true"]), "unhealthy", False),
    # --no-healthcheck over an image's HEALTHCHECK: Docker leaves State.Health at "starting"
    (inspect({"Status": "starting"}, ["NONE"]), "", True),
    # a configured check the state does not show yet
    (inspect(None, ["CMD", "true"]), "starting", False),
])
def test_health_status_from_inspect(raw: dict[str, Any], health: str, publishable: bool) -> None:
    container = to_container(raw)
    assert (container.health, container.publishable) == (health, publishable)
    off = to_container(raw, health_gate=False)
    assert (off.health, off.publishable) == ("", True)


def test_health_events_are_followed_and_parsed() -> None:
    assert "health_status" in LIFECYCLE_ACTIONS
    event = parse_event({"Type": "container", "Action": "health_status: unhealthy",
                         "Actor": {"ID": "x"}, "timeNano": 5})
    assert event is not None and (event.action, event.detail) == ("health_status", "unhealthy")
    assert event.turns_unhealthy and not event.ends_container
    healthy = parse_event({"Type": "container", "Action": "health_status: healthy",
                           "Actor": {"ID": "x"}})
    assert healthy is not None and not healthy.turns_unhealthy


def test_health_gate_setting() -> None:
    assert load([], {}).health_gate is True
    assert load(["--no-health-gate"], {}).health_gate is False
    assert load([], {"ECSSD_HEALTH_GATE": "false"}).health_gate is False
    assert load(["--health-gate"], {"ECSSD_HEALTH_GATE": "false"}).health_gate is True
    assert load([], {}).drain_check == 60.0
    with pytest.raises(SettingsError, match="--drain-check"):
        load(["--drain-check", "-1"], {})


# --- the daemon: health gate ---------------------------------------------------------------

def set_health(world: World, n: int, health: str) -> None:
    world.docker.by_id[cid(n)] = replace(world.docker.by_id[cid(n)], health=health)


def test_a_starting_container_waits_for_its_healthy_event(world: World) -> None:
    world.stream.on_connect()
    world.settle()
    world.clock.advance(10.0)
    world.docker.run(cid(1), "web", 32001)
    set_health(world, 1, "starting")
    world.event(1, "start")
    world.settle()
    assert f"SRV web.{ZONE}." not in world.records()
    world.clock.advance(400.0)  # a resync looks at every container: it agrees
    assert "resync" in world.settle()
    assert f"SRV web.{ZONE}." not in world.records()
    set_health(world, 1, "healthy")
    world.stream.on_event(parse_event({"Type": "container", "Action": "health_status: healthy",
                                       "Actor": {"ID": cid(1)}}))  # type: ignore[arg-type]
    assert world.settle() == ["event"]
    assert world.records()[f"SRV web.{ZONE}."] == f"1 1 32001 {HOST.label}.{ZONE}."


def test_unhealthy_withdraws_like_a_stop_even_during_a_burst(world: World) -> None:
    world.docker.run(cid(1), "web", 32001)
    set_health(world, 1, "healthy")
    world.stream.on_connect()
    world.settle()
    assert f"SRV web.{ZONE}." in world.records()
    # a burst of starts keeps a batch open for long; the unhealthy event closes it early
    for n in range(10, 20):
        world.docker.run(cid(n), f"svc{n}", 30000 + n)
        world.event(n, "start")
        world.clock.advance(0.1)
        world.daemon.poll()
    set_health(world, 1, "unhealthy")
    unhealthy_at = world.clock()
    world.stream.on_event(parse_event({"Type": "container", "Action": "health_status: unhealthy",
                                       "Actor": {"ID": cid(1)}}))  # type: ignore[arg-type]
    while f"SRV web.{ZONE}." in world.records():
        assert world.clock() - unhealthy_at <= 0.25 * CAP_FACTOR + 0.05, "withdrawn too late"
        world.clock.advance(0.05)
        world.daemon.poll()
    assert f"A {HOST.label}.{ZONE}." in world.records()


# --- the daemon: drain watch ---------------------------------------------------------------

class Introspection:
    """Stands in for EcsIntrospection: names the instance, or fails like a stopped agent."""

    def __init__(self, identity: InstanceIdentity) -> None:
        self.identity = identity
        self.down = False

    def instance(self) -> InstanceIdentity:
        if self.down:
            raise IntrospectionUnavailable("ECS agent at http://127.0.0.1:51678: refused")
        return self.identity


class DrainWorld(World):
    watch: DrainWatch
    introspection: Introspection
    ecs: Any
    cluster: str
    arn: str

    def set_status(self, status: str) -> None:
        self.ecs.update_container_instances_state(cluster=self.cluster,
                                                  containerInstances=[self.arn], status=status)


@pytest.fixture
def drain_world() -> Iterator[DrainWorld]:
    with mock_aws():
        clients = Clients(region="us-east-1")
        r53 = clients.client("route53")
        r53.create_hosted_zone(Name=ZONE, CallerReference="t",
                               HostedZoneConfig={"PrivateZone": True},
                               VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-0123456789abcdef0"})
        zone = Route53Zone(r53, find_zone(r53, ZONE))
        ec2 = boto3.client("ec2", region_name="us-east-1")
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        ecs = boto3.client("ecs", region_name="us-east-1")
        ecs.create_cluster(clusterName="prod")
        arn = ecs.register_container_instance(cluster="prod", instanceIdentityDocument=json.dumps(
            {"instanceId": instance["Instances"][0]["InstanceId"]}))["containerInstance"][
            "containerInstanceArn"]
        introspection = Introspection(InstanceIdentity("prod", arn))
        watch = DrainWatch(introspection, lambda: clients.client("ecs"),  # type: ignore[arg-type]
                           interval=30.0)
        docker, clock = FakeDocker(), Clock()
        daemon = Daemon(Agent(DirectSink(zone), docker, HOST),  # type: ignore[arg-type]
                        coalesce=0.25, resync=300.0, status=Status(clients.stats), drain=watch,
                        stream_factory=FakeStream, clock=clock, rng=random.Random(7))
        world = DrainWorld(clients, zone, docker, clock, daemon)
        world.watch, world.introspection, world.ecs = watch, introspection, ecs
        world.cluster, world.arn = "prod", arn
        yield world


def test_draining_withdraws_the_service_records_keeps_the_a_record(drain_world: DrainWorld) -> None:
    w = drain_world
    w.docker.run(cid(1), "web", 32001)
    w.docker.run(cid(2), "api", 32002)
    w.stream.on_connect()
    assert w.watch.tick() is False  # ACTIVE
    assert w.settle() == ["startup"]
    changes = w.requests("ChangeResourceRecordSets")
    w.set_status("DRAINING")
    assert w.watch.tick() is True
    assert w.settle() == ["drain"]
    assert w.records() == {f"A {HOST.label}.{ZONE}.": HOST.ip}
    assert w.requests("ChangeResourceRecordSets") == changes + 1  # both SRVs in one request
    assert w.requests("DescribeContainerInstances") == 2  # one call per check
    # a container started while draining is not published; a resync agrees
    w.docker.run(cid(3), "late", 32003)
    w.event(3, "start")
    w.clock.advance(400.0)
    w.settle()
    assert w.records() == {f"A {HOST.label}.{ZONE}.": HOST.ip}
    w.set_status("ACTIVE")
    assert w.watch.tick() is False
    assert w.settle() == ["drain"]
    assert set(w.records()) == {f"A {HOST.label}.{ZONE}.", f"SRV web.{ZONE}.",
                                f"SRV api.{ZONE}.", f"SRV late.{ZONE}."}


def test_an_unknown_status_changes_nothing(drain_world: DrainWorld,
                                           caplog: pytest.LogCaptureFixture) -> None:
    w = drain_world
    w.docker.run(cid(1), "web", 32001)
    w.stream.on_connect()
    w.settle()
    published = w.records()
    assert f"SRV web.{ZONE}." in published
    # the ECS API fails while the instance is active: records stay
    failing = boto3.client("ecs", region_name="us-east-1")
    stubber = Stubber(failing)
    for _ in range(2):
        stubber.add_client_error("describe_container_instances", "ServerException",
                                 "internal error", http_status_code=500)
    stubber.activate()
    w.watch._ecs = lambda: failing
    caplog.set_level(logging.WARNING, logger="ecssd_agent.agent.drain")
    assert w.watch.tick() is None and w.watch.tick() is None
    stubber.assert_no_pending_responses()
    assert w.daemon.poll() is None and w.records() == published
    assert len([r for r in caplog.records if "drain watch" in r.getMessage()]) == 1  # once
    # and the ECS agent not answering is unknown too
    w.introspection.down = True
    assert w.watch.tick() is None
    assert w.daemon.poll() is None and w.records() == published


def test_an_unknown_status_while_draining_keeps_the_records_withdrawn(
        drain_world: DrainWorld) -> None:
    w = drain_world
    w.docker.run(cid(1), "web", 32001)
    w.stream.on_connect()
    w.set_status("DRAINING")
    w.watch.tick()
    w.settle()
    assert f"SRV web.{ZONE}." not in w.records()
    w.introspection.down = True
    w.watch._identity = None  # the ECS agent restarted: the watch asks it again
    assert w.watch.tick() is None
    w.clock.advance(400.0)
    w.settle()
    assert f"SRV web.{ZONE}." not in w.records()  # no guess brings them back


def test_introspection_names_the_container_instance() -> None:
    fake = FakeEcsAgent()
    try:
        api = EcsIntrospection(fake.url)
        with pytest.raises(IntrospectionUnavailable, match="names no cluster"):
            api.instance()  # the agent has not registered the instance yet
        fake.cluster = "prod"
        fake.container_instance_arn = "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/1"
        assert api.instance() == InstanceIdentity("prod", fake.container_instance_arn)
    finally:
        fake.close()
    with pytest.raises(IntrospectionUnavailable):
        EcsIntrospection("http://127.0.0.1:9", timeout=1).instance()


@pytest.mark.parametrize(("status", "leaving"), [
    ("ACTIVE", False), ("REGISTERING", False), ("DRAINING", True), ("DEREGISTERING", True),
    ("INACTIVE", True),
])
def test_which_statuses_withdraw(status: str, leaving: bool) -> None:
    arn = "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/1"
    ecs = boto3.client("ecs", region_name="us-east-1")
    stubber = Stubber(ecs)
    stubber.add_response("describe_container_instances",
                         {"containerInstances": [{"containerInstanceArn": arn, "status": status}],
                          "failures": []},
                         {"cluster": "prod", "containerInstances": [arn]})
    stubber.activate()
    watch = DrainWatch(Introspection(InstanceIdentity("prod", arn)),  # type: ignore[arg-type]
                       lambda: ecs, interval=30.0)
    assert watch.check() is leaving
    stubber.assert_no_pending_responses()


def test_a_reregistered_instance_is_judged_by_its_new_registration(
        drain_world: DrainWorld) -> None:
    w = drain_world
    with ecs_keeps_deregistered_instances():
        w.docker.run(cid(1), "web", 32001)
        w.stream.on_connect()
        w.set_status("DRAINING")
        assert w.watch.tick() is True
        w.settle()
        assert f"SRV web.{ZONE}." not in w.records()
        # deregistered: ECS describes the old ARN as INACTIVE (for a while), and the ECS
        # agent registers the instance anew
        w.ecs.deregister_container_instance(cluster=w.cluster, containerInstance=w.arn,
                                            force=True)
        assert w.watch.tick() is True  # INACTIVE, and the ECS agent still names it
        ec2 = boto3.client("ec2", region_name="us-east-1")
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        new_arn = w.ecs.register_container_instance(
            cluster=w.cluster, instanceIdentityDocument=json.dumps(
                {"instanceId": instance["Instances"][0]["InstanceId"]}))["containerInstance"][
            "containerInstanceArn"]
        w.introspection.identity = InstanceIdentity(w.cluster, new_arn)
        calls = w.requests("DescribeContainerInstances")
        assert w.watch.tick() is False  # one check: the old ARN INACTIVE, the new one ACTIVE
        assert w.requests("DescribeContainerInstances") == calls + 2
        assert w.settle() == ["drain"]
        assert f"SRV web.{ZONE}." in w.records()
        assert w.watch.tick() is False  # and from now on only the new one is read
        assert w.requests("DescribeContainerInstances") == calls + 3


# --- what a drain withdraws ----------------------------------------------------------------

def test_the_drain_scope_reads_each_task_once() -> None:
    with mock_aws():
        ecs = boto3.client("ecs", region_name="us-east-1")
        ecs.create_cluster(clusterName="prod")
        ec2 = boto3.client("ec2", region_name="us-east-1")
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        ecs.register_container_instance(cluster="prod", instanceIdentityDocument=json.dumps(
            {"instanceId": instance["Instances"][0]["InstanceId"]}))
        ecs.register_task_definition(family="web", containerDefinitions=[
            {"name": "web", "image": "busybox", "memory": 8}])
        service = [t["taskArn"] for t in ecs.run_task(
            cluster="prod", taskDefinition="web", count=10, group="service:web",
            startedBy="ecs-svc/1")["tasks"]] * 12  # (one task may have several containers)
        standalone = [t["taskArn"] for t in ecs.run_task(
            cluster="prod", taskDefinition="web", count=10)["tasks"]]
        calls = {"n": 0}

        def client() -> Any:
            calls["n"] += 1
            return ecs

        def container(n: int, arn: str) -> Container:
            return Container(id=cid(n), name=f"c{n}", env={}, ports={}, labels={
                "com.amazonaws.ecs.task-arn": arn, "com.amazonaws.ecs.cluster": "prod"})

        scope = DrainScope(client)
        containers = [container(n, arn) for n, arn in enumerate(service + standalone)]
        outside = Container(id=cid(200), name="local", env={}, labels={}, ports={})
        kept = scope.kept([*containers, outside])
        assert {c.labels.get("com.amazonaws.ecs.task-arn") for c in kept} == {*standalone, None}
        assert scope.reads == 1 and calls["n"] == 1  # 20 distinct tasks: one DescribeTasks
        assert scope.kept(containers) == kept[:-1] and scope.reads == 1  # known: no read


def test_a_drain_scope_that_cannot_read_ecs_withdraws() -> None:
    failing = boto3.client("ecs", region_name="us-east-1")
    stubber = Stubber(failing)
    stubber.add_client_error("describe_tasks", "ServerException", "internal error",
                             http_status_code=500)
    stubber.activate()
    task = Container(id=cid(1), name="t", env={}, ports={}, labels={
        "com.amazonaws.ecs.task-arn": "arn:aws:ecs:us-east-1:123456789012:task/prod/abc"})
    assert DrainScope(lambda: failing).kept([task]) == []

"""The agent's own life end to end: what /healthz means, when SIGTERM deletes the host's
records, and which records a drain withdraws. The real ``ecssd-agent`` process, a real Docker
engine, Route 53 and ECS served by a moto server over HTTP (made to throttle, and to keep
deregistered container instances as ECS does), a fake ECS agent introspection API and a fake
instance metadata service on 127.0.0.1. Every wait is a bounded poll."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.daemon_world import (
    HOST,
    HOST_IP,
    AgentProcess,
    FakeEcsAgent,
    Zone,
    agents,
    ecs_agent,
    ecs_keeps_deregistered_instances,
    ecs_task_labels,
    register_container_instance,
    route53_throttled,
    service_env,
    start_agent,
    zone,
)
from tests.support.images import Containers
from tests.support.imds import FakeImds
from tests.support.poll import wait_for

__all__ = ["agents", "ecs_agent", "zone"]  # fixtures

PORTS = ["127.0.0.1::8081"]
TERMINATING = "meta-data/autoscaling/target-lifecycle-state"
SPOT = "meta-data/spot/instance-action"


def metric(agent: AgentProcess, name: str, **labels: str) -> float:
    return agent.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


# --- /healthz: alive and making progress -----------------------------------------------------

@pytest.mark.filterwarnings("ignore:Exception.Route53ClientError. with code Throttling")
def test_an_agent_whose_every_route53_request_is_throttled_stays_healthy(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess]) -> None:
    answers: list[tuple[int, str]] = []

    def alive() -> bool:
        answers.append(agent.healthz())
        assert answers[-1][0] == 200, answers[-1]
        return True

    with route53_throttled(on=True) as throttle:
        # throttled from the start: the agent cannot even find its zone
        agent = AgentProcess(aws.env(), docker_engine.base_url, HOST, HOST_IP,
                             "--aws-max-attempts", "2", "--resync", "2", "--coalesce", "0.1")
        agents.append(agent)
        wait_for(lambda: agent.healthz()[0], timeout=30, what="the status server to listen")
        wait_for(lambda: alive() and agent.log().count("cannot reach Route 53") >= 2,
                 timeout=30, what="two start-up attempts throttled", ignore=(ValueError,))
        assert "Throttling" in agent.log() and agent.readyz()[0] == 503
        throttle.on = False
        wait_for(lambda: alive() and agent.ready(), timeout=30, what="the agent to be ready")
        throttle.on = True
        web = containers.run(env=service_env("web"), ports=PORTS)
        # the event's change and each resync's: every one throttled, the agent alive
        wait_for(lambda: alive() and metric(agent, "ecssd_reconcile_errors_total",
                                            reason="Throttling") >= 3,
                 timeout=40, what="three reconciles throttled")
        code, body = agent.healthz()
        assert code == 200 and "not ready: reconcile" in body and "Throttling" in body, body
        assert agent.readyz()[0] == 503
        assert metric(agent, "ecssd_aws_requests_total", service="route53",
                      operation="ChangeResourceRecordSets", outcome="error") >= 3
        throttle.on = False
    wait_for(lambda: alive() and web[:12] in zone.srv(HOST), timeout=30,
             what="web's record once Route 53 answers again")
    assert agent.alive() and len(answers) > 10


# --- SIGTERM: deregister only when the host is leaving ----------------------------------------

@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds({TERMINATING: "InService"})
    yield fake
    fake.close()


def on_ecs(aws: Any, ecs_agent: FakeEcsAgent) -> tuple[str, str]:
    """This host as an ACTIVE container instance of a new cluster: (cluster, its ARN)."""
    cluster = f"life-{time.monotonic_ns()}"
    arn = register_container_instance(aws, cluster)
    ecs_agent.cluster, ecs_agent.container_instance_arn = cluster, arn
    return cluster, arn


def agent_with_metadata(agents: list[AgentProcess], aws: Any, engine: Any, imds: FakeImds,
                        ecs_agent: FakeEcsAgent, *args: str) -> AgentProcess:
    env = {k: v for k, v in aws.env().items() if k != "AWS_EC2_METADATA_DISABLED"}
    return start_agent(agents, aws, engine, "--deregister-on-exit", "--imds-endpoint", imds.url,
                       "--ecs-agent-url", ecs_agent.url, *args, env=env)


def test_sigterm_on_an_active_instance_keeps_the_records(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess], ecs_agent: FakeEcsAgent, imds: FakeImds) -> None:
    on_ecs(aws, ecs_agent)
    agent = agent_with_metadata(agents, aws, docker_engine, imds, ecs_agent)
    web = containers.run(env=service_env("web"), ports=PORTS)
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=15, what="web's record")
    owned = set(zone.owned(HOST))
    agent.signal(signal.SIGTERM)  # an image update of the agent's service, say
    assert agent.wait(timeout=15) == 0
    assert set(zone.owned(HOST)) == owned  # the next agent takes them over
    assert "this host stays (container instance ACTIVE; Auto Scaling target lifecycle state " \
           "InService; no spot interruption notice)" in agent.log()


@pytest.mark.parametrize("leaving", ["draining", "auto scaling", "spot"])
def test_sigterm_on_a_leaving_host_removes_its_records(
        leaving: str, aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess], ecs_agent: FakeEcsAgent, imds: FakeImds) -> None:
    cluster, arn = on_ecs(aws, ecs_agent)
    agent = agent_with_metadata(agents, aws, docker_engine, imds, ecs_agent,
                                "--drain-check", "600")  # the exit check reads ECS itself
    web = containers.run(env=service_env("web"), ports=PORTS)
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=15, what="web's record")
    if leaving == "draining":  # a scale-in with ECS managed draining, an AMI roll
        aws.client("ecs").update_container_instances_state(
            cluster=cluster, containerInstances=[arn], status="DRAINING")
        reason = "its ECS container instance is DRAINING"
    elif leaving == "auto scaling":  # Terminating:Wait (a lifecycle hook) or Terminating
        imds.items[TERMINATING] = "Terminated"
        reason = "its Auto Scaling target lifecycle state is Terminated"
    else:
        imds.items[SPOT] = json.dumps({"action": "terminate", "time": "2030-01-01T00:02:00Z"})
        reason = "a spot interruption notice: terminate at 2030-01-01T00:02:00Z"
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=15) == 0
    assert zone.owned(HOST) == {}
    assert f"this host is leaving ({reason}): deregistering its records" in agent.log()
    assert "deregistered on exit" in agent.log()


# --- the drain watch follows the current registration -----------------------------------------

def test_a_reregistered_instance_gets_its_records_back_within_one_check(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess], ecs_agent: FakeEcsAgent) -> None:
    check = 2.0
    with ecs_keeps_deregistered_instances():
        cluster, arn = on_ecs(aws, ecs_agent)
        labels = ecs_task_labels(aws, cluster, service="web")
        agent = start_agent(agents, aws, docker_engine, "--ecs-agent-url", ecs_agent.url,
                            "--drain-check", str(check))
        web = containers.run(env=service_env("web"), ports=PORTS, labels=labels)
        wait_for(lambda: web[:12] in zone.srv(HOST), timeout=15, what="web's record")
        ecs = aws.client("ecs")
        ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn],
                                             status="DRAINING")
        wait_for(lambda: web[:12] not in zone.srv(HOST), timeout=3 * check,
                 what="the drain to withdraw web's record")
        # the instance is deregistered (INACTIVE), and the ECS agent registers it anew
        ecs.deregister_container_instance(cluster=cluster, containerInstance=arn, force=True)
        assert ecs.describe_container_instances(cluster=cluster, containerInstances=[arn])[
            "containerInstances"][0]["status"] == "INACTIVE"
        wait_for(lambda: metric(agent, "ecssd_aws_requests_total", service="ecs",
                                operation="DescribeContainerInstances", outcome="ok") >= 4,
                 timeout=3 * check, what="a check of the INACTIVE registration")
        new_arn = register_container_instance(aws, cluster)
        ecs_agent.container_instance_arn = new_arn
        registered = time.monotonic()
        wait_for(lambda: web[:12] in zone.srv(HOST), timeout=check * 1.1 + 2.0,
                 what="web's record back within one drain check of the new registration")
        print(f"back {time.monotonic() - registered:.1f}s after the new registration")
    assert metric(agent, "ecssd_instance_draining") == 0
    assert f"this host's container instance is now {new_arn}" in agent.log()


# --- a drain withdraws what ECS will stop -----------------------------------------------------

def test_a_drain_withdraws_service_tasks_and_keeps_standalone_tasks(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess], ecs_agent: FakeEcsAgent) -> None:
    aws.manual_ecs_transitions()  # the tasks stay RUNNING
    cluster, arn = on_ecs(aws, ecs_agent)
    agent = start_agent(agents, aws, docker_engine, "--ecs-agent-url", ecs_agent.url,
                        "--drain-check", "1")
    service = containers.run(env=service_env("web"), ports=PORTS,
                             labels=ecs_task_labels(aws, cluster, service="web"))
    standalone = containers.run(env=service_env("batch"), ports=PORTS,
                                labels=ecs_task_labels(aws, cluster))
    outside = containers.run(env=service_env("local"), ports=PORTS)  # not started by ECS
    ids = {service[:12], standalone[:12], outside[:12]}
    wait_for(lambda: ids <= set(zone.srv(HOST)), timeout=15, what="the three records")
    aws.client("ecs").update_container_instances_state(
        cluster=cluster, containerInstances=[arn], status="DRAINING")
    wait_for(lambda: service[:12] not in zone.srv(HOST), timeout=10,
             what="the service task's record to be withdrawn")
    assert {standalone[:12], outside[:12]} <= set(zone.srv(HOST))
    assert metric(agent, "ecssd_aws_requests_total", service="ecs", operation="DescribeTasks",
                  outcome="attempt") == 1  # one read for the drain, both tasks in it
    resyncs = metric(agent, "ecssd_reconciles_total", kind="drain", outcome="ok")
    assert resyncs >= 1
    assert "is not a service's" in agent.log()

"""The daemon's gates end to end: Docker health checks and ECS draining decide what is
published. The real ``ecssd-agent`` process, a real Docker engine (health checks run by the
engine itself), Route 53, ECS and EC2 served by a moto server over HTTP, and a fake ECS
agent introspection API on 127.0.0.1. Every wait is a bounded poll."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.daemon_world import (
    HEALTH_ARGS,
    HOST,
    AgentProcess,
    FakeEcsAgent,
    Zone,
    agents,
    ecs_agent,
    ecs_task_labels,
    healthy_after,
    register_container_instance,
    service_env,
    start_agent,
    zone,
)
from tests.support.images import Containers
from tests.support.poll import wait_for

__all__ = ["agents", "ecs_agent", "zone"]  # fixtures

PORTS = ["127.0.0.1::8081"]


def health(engine: Any, container_id: str) -> str:
    return str(engine.cli("inspect", "-f", "{{.State.Health.Status}}", container_id).stdout
               .strip())


def set_state(engine: Any, container_id: str, state: str) -> None:
    engine.cli("exec", container_id, "sh", "-c", f"echo {state} > /tmp/state")


def reconciles(agent: AgentProcess, kind: str) -> int:
    key = ("ecssd_reconciles_total", (("kind", kind), ("outcome", "ok")))
    return int(agent.metrics().get(key, 0))


def test_a_container_with_a_health_check_is_published_once_healthy(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess]) -> None:
    agent = start_agent(agents, aws, docker_engine, "--resync", "1")
    slow = containers.run(env=service_env("slow"), ports=PORTS, cmd=healthy_after(6),
                          extra_args=HEALTH_ARGS)
    # Events are handled in order: once a container started after it is registered, slow's
    # start has been handled; and a resync (every ~1 s) has looked at it too.
    marker = containers.run(env=service_env("marker"), ports=PORTS)
    wait_for(lambda: marker[:12] in zone.srv(HOST), timeout=15, what="the marker's record")
    resyncs = reconciles(agent, "resync")
    wait_for(lambda: reconciles(agent, "resync") > resyncs, timeout=5, what="a resync")
    assert health(docker_engine, slow) == "starting"  # (else the next check means nothing)
    assert slow[:12] not in zone.srv(HOST)
    assert agent.metrics()[("ecssd_containers_withheld", ())] == 1
    wait_for(lambda: health(docker_engine, slow) == "healthy", timeout=20,
             what="Docker to report slow healthy")
    wait_for(lambda: slow[:12] in zone.srv(HOST), timeout=5,
             what="slow's record once it is healthy")
    assert "its records wait until Docker reports it healthy" in agent.log()


def test_an_unhealthy_container_is_withdrawn_at_once_and_back_when_healthy(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess]) -> None:
    start_agent(agents, aws, docker_engine, "--coalesce", "0.25")
    web = containers.run(env=service_env("web"), ports=PORTS, cmd=healthy_after(0),
                         extra_args=HEALTH_ARGS)
    wait_for(lambda: health(docker_engine, web) == "healthy", timeout=20,
             what="Docker to report web healthy")
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=5, what="web's record once healthy")
    set_state(docker_engine, web, "broken")
    wait_for(lambda: health(docker_engine, web) == "unhealthy", timeout=15,
             what="Docker to report web unhealthy")
    seen = time.monotonic()
    # the coalescing window (0.25 s) and one change request: well within 2 s
    wait_for(lambda: web[:12] not in zone.srv(HOST), timeout=2,
             what="web's record to be withdrawn")
    print(f"withdrawn {time.monotonic() - seen:.2f}s after the test saw 'unhealthy'")
    assert f"ecssd:h:{HOST}" in zone.owned(HOST)  # the host's A record stays
    set_state(docker_engine, web, "ok")
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=15,
             what="web's record back once healthy again")


def test_without_the_health_gate_a_starting_container_is_published(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess]) -> None:
    start_agent(agents, aws, docker_engine, "--no-health-gate")
    never = containers.run(env=service_env("never"), ports=PORTS, cmd=healthy_after(600),
                           extra_args=HEALTH_ARGS)
    wait_for(lambda: never[:12] in zone.srv(HOST), timeout=15, what="never's record")
    assert health(docker_engine, never) == "starting"


def test_draining_withdraws_the_service_records_and_active_brings_them_back(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess], ecs_agent: FakeEcsAgent) -> None:
    cluster = f"drain-{time.monotonic_ns()}"
    arn = register_container_instance(aws, cluster)
    ecs_agent.cluster, ecs_agent.container_instance_arn = cluster, arn
    agent = start_agent(agents, aws, docker_engine, "--ecs-agent-url", ecs_agent.url,
                        "--drain-check", "0.5")
    # tasks of services, which ECS stops when it drains the instance
    web = containers.run(env=service_env("web"), ports=PORTS,
                         labels=ecs_task_labels(aws, cluster, service="web"))
    api = containers.run(env=service_env("api"), ports=PORTS,
                         labels=ecs_task_labels(aws, cluster, service="api"))
    wait_for(lambda: {web[:12], api[:12]} <= set(zone.srv(HOST)), timeout=15,
             what="both records")
    ecs = aws.client("ecs")
    late_task = ecs_task_labels(aws, cluster, service="late")  # its container starts later
    changes = agent.change_requests()
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn],
                                         status="DRAINING")
    wait_for(lambda: not {web[:12], api[:12]} & set(zone.srv(HOST)), timeout=5,
             what="the service records to be withdrawn")
    assert set(zone.owned(HOST)) == {f"ecssd:h:{HOST}"}  # the A record stays
    assert agent.change_requests() == changes + 1  # both withdrawn in one change request
    assert agent.metrics()[("ecssd_instance_draining", ())] == 1
    # a container started while draining is not published either
    late = containers.run(env=service_env("late"), ports=PORTS, labels=late_task)
    marker_resyncs = reconciles(agent, "event")
    wait_for(lambda: reconciles(agent, "event") > marker_resyncs, timeout=10,
             what="late's start to be handled")
    assert late[:12] not in zone.srv(HOST)
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn],
                                         status="ACTIVE")
    wait_for(lambda: {web[:12], api[:12], late[:12]} <= set(zone.srv(HOST)), timeout=5,
             what="the service records back once ACTIVE")
    assert agent.metrics()[("ecssd_instance_draining", ())] == 0


def test_an_agent_started_on_a_draining_host_publishes_only_its_a_record(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess], ecs_agent: FakeEcsAgent) -> None:
    cluster = f"drain-{time.monotonic_ns()}"
    arn = register_container_instance(aws, cluster)
    ecs_agent.cluster, ecs_agent.container_instance_arn = cluster, arn
    web = containers.run(env=service_env("web"), ports=PORTS,
                         labels=ecs_task_labels(aws, cluster, service="web"))
    aws.client("ecs").update_container_instances_state(cluster=cluster, containerInstances=[arn],
                                                       status="DRAINING")
    # a restart during a drain: the startup must not bring back what the drain withdrew
    agent = start_agent(agents, aws, docker_engine, "--ecs-agent-url", ecs_agent.url,
                        "--drain-check", "30")
    assert set(zone.owned(HOST)) == {f"ecssd:h:{HOST}"}
    assert agent.change_requests() == 1  # the A record's creation, nothing else
    assert agent.metrics()[("ecssd_instance_draining", ())] == 1
    assert web[:12] not in zone.srv(HOST)

"""The task-events Lambda's health gate against a moto server: a container whose task
definition has a healthCheck gets records only while the event shows it HEALTHY. Events are
built from DescribeTasks output (test_task_events_world); the health is the event's, as ECS
sends a Task State Change when a container's health changes."""

from __future__ import annotations

from typing import Any

from tests.integration.test_task_events_world import CLUSTER, Lambda, World, env, task_id, world

__all__ = ["world"]  # the fixture

TIME = "time.sd.internal."


def checked_service(world: World) -> None:
    world.task_definition("time", [{
        "name": "time", "image": "time:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "environment": env(SERVICE_8080_NAME="time"),
        "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost:8080/ || exit 1"],
                        "interval": 5, "retries": 2},
    }])


def with_health(event: dict[str, Any], status: str) -> dict[str, Any]:
    for container in event["detail"]["containers"]:
        container["healthStatus"] = status
    return event


def test_records_wait_for_healthy_and_go_when_unhealthy(world: World) -> None:
    handler = Lambda(world)
    checked_service(world)
    task = world.run_fargate("time")
    mine = f"ecssd:t:{CLUSTER}:{task_id(task)}"

    starting = handler(with_health(world.event(task["taskArn"]), "UNKNOWN"))
    assert starting["changes"] == 0 and world.records() == []

    healthy = handler(with_health(world.event(task["taskArn"]), "HEALTHY"))
    assert healthy["changes"] == 3  # task A, service SRV and service A, in one request
    assert {r["SetIdentifier"] for r in world.records()} == {f"{mine}:", f"{mine}:8080/tcp"}

    before = handler.change_requests()
    unhealthy = handler(with_health(world.event(task["taskArn"]), "UNHEALTHY"))
    assert unhealthy["actions"] == ["DELETE"] * 3 and world.records() == []
    assert handler.change_requests() == before + 1

    back = handler(with_health(world.event(task["taskArn"]), "HEALTHY"))
    assert back["changes"] == 3 and len(world.answers(TIME, "SRV")) == 1


def test_without_the_gate_an_unknown_health_is_registered(world: World) -> None:
    handler = Lambda(world, health_gate=False)
    checked_service(world)
    task = world.run_fargate("time")
    summary = handler(with_health(world.event(task["taskArn"]), "UNKNOWN"))
    assert summary["changes"] == 3 and len(world.answers(TIME, "SRV")) == 1

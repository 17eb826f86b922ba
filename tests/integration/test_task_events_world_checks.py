"""The task-events test world is as ECS is where moto 5.2 is not: containers report no health
until a check does, ListTasks honours ``serviceName``, and events carry no health (ECS
documents none in a task state change event)."""

from __future__ import annotations

from tests.integration.test_task_events_world import CLUSTER, World, env, world

__all__ = ["world"]  # the fixture


def checked_service(world: World) -> None:
    world.task_definition("time", [{
        "name": "time", "image": "time:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "environment": env(SERVICE_8080_NAME="time"),
        "healthCheck": {"command": ["CMD-SHELL", "exit 0"], "interval": 5, "retries": 2},
    }])


def health(world: World, task_arn: str) -> list[str]:
    described = world.ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"][0]
    return [c["healthStatus"] for c in described["containers"]]


def test_health_is_unknown_until_set_and_events_carry_none(world: World) -> None:
    checked_service(world)
    (task,) = world.run_service("time", "time")
    assert health(world, task["taskArn"]) == ["UNKNOWN"]  # moto alone says HEALTHY
    world.set_health(task["taskArn"], "HEALTHY")
    assert health(world, task["taskArn"]) == ["HEALTHY"]
    detail = world.event(task["taskArn"])["detail"]
    assert "healthStatus" not in detail
    assert all("healthStatus" not in c for c in detail["containers"])


def test_list_tasks_by_service_lists_that_service_only(world: World) -> None:
    checked_service(world)
    mine = world.run_service("time", "time", count=2)
    world.run_service("time", "other")
    world.run_fargate("time")
    listed = world.ecs.list_tasks(cluster=CLUSTER, serviceName="time",
                                  desiredStatus="RUNNING")["taskArns"]
    assert sorted(listed) == sorted(t["taskArn"] for t in mine)
    everything = world.ecs.list_tasks(cluster=CLUSTER, desiredStatus="RUNNING")["taskArns"]
    assert len(everything) == 4

"""The task-events Lambda's health gate against a moto server, with events as ECS sends them:
no health in a task state change event, and no event when a container's health changes. The
health is what DescribeTasks reports (:meth:`World.set_health`; UNKNOWN until set).

The bound these tests hold (docs/task-events.md): during a rolling deployment a service's
name always answers while any of its tasks runs. A leaving task's records go in the same
change request that publishes its replacements (proven ones; starting ones when nothing else
would answer). A health change is acted on by the next event of the service or the health
follow-up (every minute), at worst by the full reconcile."""

from __future__ import annotations

from typing import Any

from tests.integration.test_task_events_reconcile import schedule
from tests.integration.test_task_events_world import (
    CLUSTER,
    Lambda,
    World,
    env,
    task_id,
    task_name,
    world,
)

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


def serving(world: World) -> set[str]:
    """The task ids the service's SRV record sets point at."""
    return {v.split()[-1].split(".", 1)[0] for v in world.answers(TIME, "SRV")}


def healthy(world: World, handler: Lambda, *tasks: dict[str, Any]) -> None:
    """The tasks turn HEALTHY and are published (by the reconcile, as after lost events)."""
    for task in tasks:
        world.set_health(task["taskArn"], "HEALTHY")
    handler(schedule())
    assert ids(*tasks) <= serving(world)


def eni_ip(world: World, task: dict[str, Any]) -> str:
    details = world.describe(task["taskArn"])["attachments"][0]["details"]
    return str(next(d["value"] for d in details if d["name"] == "privateIPv4Address"))


def ids(*tasks: dict[str, Any]) -> set[str]:
    return {task_id(t) for t in tasks}


class Deployment:
    """Drives a service through events as ECS sends them, checking after every event that
    the service's name still answers and with whom."""

    def __init__(self, world: World, handler: Lambda) -> None:
        self.world, self.handler = world, handler
        self.seen: list[set[str]] = []

    def running(self, task: dict[str, Any]) -> dict[str, Any]:
        return self._handle(self.world.event(task["taskArn"]))

    def stopping(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        """ECS stops the task: desiredStatus STOPPED first (the task drains), then STOPPED."""
        first = self._handle(self.world.event(task["taskArn"], desiredStatus="STOPPED"))
        self.world.stop(task["taskArn"])
        return [first, self._handle(self.world.event(task["taskArn"]))]

    def _handle(self, event: dict[str, Any]) -> dict[str, Any]:
        summary = self.handler(event)
        self.seen.append(serving(self.world))
        return summary


def test_a_running_event_publishes_the_health_describe_tasks_reports(world: World) -> None:
    """The event carries no health: the HEALTHY that DescribeTasks reports is what counts."""
    handler = Lambda(world)
    checked_service(world)
    (task,) = world.run_service("time", "time")
    world.set_health(task["taskArn"], "HEALTHY")
    event = world.event(task["taskArn"])
    assert "healthStatus" not in event["detail"]["containers"][0]

    summary = handler(event)

    assert summary["changes"] == 3 and summary["requests"] == 1  # task A, SRV, service A
    mine = f"ecssd:t:{CLUSTER}:{task_id(task)}"
    assert {r["SetIdentifier"] for r in world.records()} == {f"{mine}:", f"{mine}:8080/tcp"}


def test_a_starting_task_waits_while_its_service_has_proven_ones(world: World) -> None:
    handler = Lambda(world)
    checked_service(world)
    (old,) = world.run_service("time", "time")
    world.set_health(old["taskArn"], "HEALTHY")
    handler(world.event(old["taskArn"]))
    (new,) = world.run_service("time", "time", deployment="2")  # UNKNOWN: its check has not run

    assert handler(world.event(new["taskArn"]))["changes"] == 0
    assert serving(world) == ids(old)


def test_a_rolling_deployment_keeps_the_service_answering(world: World) -> None:
    """minimumHealthyPercent 100: ECS starts the new tasks, waits until each is HEALTHY, then
    stops an old one. No event says a new task turned HEALTHY; the old task's stop does, and
    its records and the replacement's change in one request."""
    handler = Lambda(world)
    checked_service(world)
    old = world.run_service("time", "time", count=2)
    healthy(world, handler, *old)
    steps = Deployment(world, handler)
    new = world.run_service("time", "time", count=2, deployment="2")
    for task in new:
        assert steps.running(task)["changes"] == 0  # starting, beside proven ones

    for leaving, replacement in zip(old, new, strict=True):
        world.set_health(replacement["taskArn"], "HEALTHY")  # then ECS stops an old task
        drained, stopped = steps.stopping(leaving)
        assert drained["requests"] == 1  # out and in, atomically
        assert sorted(drained["actions"]) == ["CREATE"] * 3 + ["DELETE"] * 3
        assert stopped["changes"] == 0

    assert all(steps.seen), steps.seen  # never a moment without an answer
    assert serving(world) == ids(*new)
    assert world.answers(TIME, "A") == {eni_ip(world, t) for t in new}


def test_old_tasks_stopped_before_the_new_ones_are_proven(world: World) -> None:
    """minimumHealthyPercent 0: ECS stops the old task while the new one's health is still
    UNKNOWN. The new one is published in the old one's place (unproven, for want of any
    other answer) rather than leave the name empty, and stays once HEALTHY."""
    handler = Lambda(world)
    checked_service(world)
    (old,) = world.run_service("time", "time")
    healthy(world, handler, old)
    steps = Deployment(world, handler)
    (new,) = world.run_service("time", "time", deployment="2")
    steps.running(new)

    drained, _ = steps.stopping(old)

    assert drained["requests"] == 1
    assert steps.seen == [ids(old), ids(new), ids(new)]
    world.set_health(new["taskArn"], "HEALTHY")
    assert handler(schedule())["changes"] == 0  # proven now: nothing to change


def test_a_service_whose_tasks_all_start_answers_with_them_until_one_is_proven(
        world: World) -> None:
    handler = Lambda(world)
    checked_service(world)
    first, second = world.run_service("time", "time", count=2)

    assert handler(world.event(first["taskArn"]))["changes"] == 3  # nothing else answers
    assert handler(world.event(second["taskArn"]))["changes"] == 0  # the first one does
    assert serving(world) == ids(first)

    world.set_health(second["taskArn"], "HEALTHY")
    handler(schedule())
    assert serving(world) == ids(second)  # the proven one; the unproven gives way
    world.set_health(first["taskArn"], "HEALTHY")
    handler(schedule())
    assert serving(world) == ids(first, second)


def test_unhealthy_is_withdrawn_by_the_reconcile_and_healthy_brings_it_back(
        world: World) -> None:
    """No event tells that a container turned UNHEALTHY (ECS replaces a service's task with a
    failing essential container, and that stop is an event; a non-essential container or a
    standalone task just stays): the reconcile reads the health and withdraws it."""
    handler = Lambda(world)
    checked_service(world)
    sick, well = world.run_service("time", "time", count=2)
    healthy(world, handler, sick, well)

    world.set_health(sick["taskArn"], "UNHEALTHY")
    withdrawn = handler(schedule())

    assert withdrawn["actions"] == ["DELETE"] * 3 and withdrawn["requests"] == 1
    assert serving(world) == ids(well)
    assert world.answers(task_name(sick), "A") == set()
    world.set_health(sick["taskArn"], "HEALTHY")
    assert handler(schedule())["actions"] == ["CREATE"] * 3
    assert serving(world) == ids(sick, well)


def test_a_leaving_task_takes_an_unhealthy_sibling_out_with_it(world: World) -> None:
    """An event of the service reads its other tasks' health too."""
    handler = Lambda(world)
    checked_service(world)
    leaving, sick, well = world.run_service("time", "time", count=3)
    healthy(world, handler, leaving, sick, well)
    world.set_health(sick["taskArn"], "UNHEALTHY")
    world.stop(leaving["taskArn"])

    summary = handler(world.event(leaving["taskArn"]))

    assert summary["actions"] == ["DELETE"] * 6 and summary["requests"] == 1
    assert serving(world) == ids(well)


def test_without_the_gate_an_unknown_health_is_registered(world: World) -> None:
    handler = Lambda(world, health_gate=False)
    checked_service(world)
    old, new = world.run_service("time", "time", count=2)
    world.set_health(old["taskArn"], "HEALTHY")
    for task in (old, new):
        assert handler(world.event(task["taskArn"]))["changes"] == 3
    assert serving(world) == ids(old, new)


def test_the_health_follow_up_publishes_and_withdraws_what_ecs_reports(world: World) -> None:
    """The schedule's health follow-up (every minute in the stack) reads the tasks' own A
    records and acts only on the tasks whose health says otherwise."""
    handler = Lambda(world)
    checked_service(world)
    first, second = world.run_service("time", "time", count=2)
    healthy(world, handler, first)
    handler(world.event(second["taskArn"]))  # starting, beside a proven one: waits
    assert serving(world) == ids(first)
    follow_up = schedule(reconcile="health")

    world.set_health(second["taskArn"], "HEALTHY")
    added = handler(follow_up)
    assert added["scope"] == "health" and added["actions"] == ["CREATE"] * 3
    world.set_health(first["taskArn"], "UNHEALTHY")
    withdrawn = handler(follow_up)
    assert withdrawn["actions"] == ["DELETE"] * 3 and serving(world) == ids(second)
    assert handler(follow_up)["changes"] == 0

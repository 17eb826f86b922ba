"""The task-events Lambda against a moto server: SERVICE_<port>_WEIGHT and _PRIORITY in a
task definition reach Route 53 as the record sets' Weight and the SRV fields, and a bad one
is one warning naming the container and the variable."""

from __future__ import annotations

import logging

import pytest

from tests.integration.test_task_events_world import Lambda, World, env, task_name, world

__all__ = ["world"]  # the fixture

TIME = "time.sd.internal."


def time_family(world: World, family: str, **weights: str) -> None:
    world.task_definition(family, [{
        "name": family, "image": "time:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "environment": env(SERVICE_8080_NAME="time", **weights),
    }])


def weights_at(world: World, name: str, rtype: str) -> dict[str, int]:
    """SetIdentifier -> Route 53 Weight of the Lambda's record sets at name/type."""
    return {r["SetIdentifier"]: r["Weight"] for r in world.records()
            if r["Name"] == name and r["Type"] == rtype}


def test_a_canary_task_and_a_main_task_get_their_declared_weights(world: World) -> None:
    handler = Lambda(world)
    time_family(world, "time", SERVICE_8080_WEIGHT="10", SERVICE_8080_PRIORITY="2")
    time_family(world, "time-canary", SERVICE_8080_WEIGHT="1")
    main, canary = world.run_fargate("time"), world.run_fargate("time-canary")
    for task in (main, canary):
        assert handler(world.event(task["taskArn"]))["status"] == "ok"

    assert world.answers(TIME, "SRV") == {f"2 10 8080 {task_name(main)}",
                                          f"1 1 8080 {task_name(canary)}"}
    assert sorted(weights_at(world, TIME, "SRV").values()) == [1, 10]
    assert sorted(weights_at(world, TIME, "A").values()) == [1, 10]  # the service's A records
    assert set(weights_at(world, task_name(main), "A").values()) == {1}  # alone at its name

    before = handler.change_requests()
    assert handler(world.event(main["taskArn"]))["changes"] == 0  # the weight is read back equal
    assert handler.change_requests() == before


def test_a_bad_weight_is_one_warning_and_no_record(world: World,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    handler = Lambda(world)
    time_family(world, "time", SERVICE_8080_WEIGHT="heavy")
    task = world.run_fargate("time")
    with caplog.at_level(logging.WARNING):
        handler(world.event(task["taskArn"]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "container time " in warnings[0] and "SERVICE_8080_WEIGHT" in warnings[0]
    assert world.records() == []

"""SERVICE_<port>_WEIGHT and SERVICE_<port>_PRIORITY: a table of values and what each gives.

A good value sets the instance's weight or priority; no value keeps the reference's 1 and 1;
a bad value skips that one service with one problem naming the container and the variable,
and the container's other services are published as usual. The same parser reads task
definitions for the task-events Lambda, checked at the end.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import QueuedSink
from ecssd_agent.aws.ecs import parse_task_definition
from ecssd_agent.core import task_records as tr
from ecssd_agent.core.ecs_task import Task, TaskDefinition
from ecssd_agent.core.metadata import service_instances
from ecssd_agent.core.model import Container, Host, Routing

CID = "feed" * 15 + "abcd"


def container(env: dict[str, str], labels: dict[str, str] | None = None) -> Container:
    """A container publishing 8081 (the service under test) and 9090 (an unrelated one)."""
    return Container(id=CID, name="calc-canary",
                     env={"SERVICE_8081_NAME": "calc", "SERVICE_9090_NAME": "metrics", **env},
                     labels=labels or {}, ports={"8081/tcp": (32768,), "9090/tcp": (32769,)})


# (variable suffix, value, the number it gives, or None when the service must be skipped)
TABLE: list[tuple[str, str, int | None]] = [
    ("WEIGHT", "10", 10),
    ("WEIGHT", "0", 0),
    ("WEIGHT", "255", 255),
    ("WEIGHT", " 7 ", 7),
    ("WEIGHT", "256", None),
    ("WEIGHT", "-1", None),
    ("WEIGHT", "x", None),
    ("WEIGHT", "1.5", None),
    ("WEIGHT", "", None),
    ("WEIGHT", "\u00b2", None),  # a digit to str.isdigit, not to int()
    ("WEIGHT", "9" * 5000, None),  # longer than int() parses: still one clear problem
    ("PRIORITY", "0", 0),
    ("PRIORITY", "2", 2),
    ("PRIORITY", "65535", 65535),
    ("PRIORITY", "65536", None),
    ("PRIORITY", "-1", None),
    ("PRIORITY", "high", None),
]


@pytest.mark.parametrize("key,value,expected", TABLE,
                         ids=[f"{k}={v[:8]!r}" for k, v, _ in TABLE])
def test_weight_and_priority_values(key: str, value: str, expected: int | None) -> None:
    instances, problems = service_instances(container({f"SERVICE_8081_{key}": value}))
    by_name = {i.name: i for i in instances}
    assert by_name["metrics"].weight == 1 and by_name["metrics"].priority == 1  # unaffected
    if expected is None:
        assert "calc" not in by_name
        assert len(problems) == 1
        text = str(problems[0])
        assert problems[0].variable == f"SERVICE_8081_{key}"
        assert "calc-canary" in text and f"SERVICE_8081_{key}" in text
        assert "whole number in 0-" in text
    else:
        assert problems == []
        calc = by_name["calc"]
        other = "priority" if key == "WEIGHT" else "weight"
        assert getattr(calc, key.lower()) == expected and getattr(calc, other) == 1


def test_undeclared_weight_and_priority_are_the_references_one_and_one() -> None:
    instances, problems = service_instances(container({}))
    assert problems == [] and {(i.weight, i.priority) for i in instances} == {(1, 1)}


def test_labels_win_and_both_bad_is_still_one_problem() -> None:
    instances, _ = service_instances(container({"SERVICE_8081_WEIGHT": "1"},
                                               {"SERVICE_8081_WEIGHT": "10",
                                                "SERVICE_8081_PRIORITY": "3"}))
    calc = next(i for i in instances if i.name == "calc")
    assert (calc.weight, calc.priority) == (10, 3)
    _, problems = service_instances(container({"SERVICE_8081_WEIGHT": "x",
                                               "SERVICE_8081_PRIORITY": "y"}))
    assert [p.variable for p in problems] == ["SERVICE_8081_WEIGHT"]


def test_a_weight_without_a_name_or_on_an_ignored_port_is_not_a_problem() -> None:
    _, problems = service_instances(container({"SERVICE_7000_WEIGHT": "x",
                                               "SERVICE_8081_IGNORE": "true",
                                               "SERVICE_8081_WEIGHT": "x"}))
    assert problems == []


class _Docker:
    def __init__(self, containers: list[Container]) -> None:
        self._containers = containers

    def containers(self) -> list[Container]:
        return self._containers


class _Publisher:
    """The queued mode's publisher, as far as ``Agent.desired`` uses it: the zone's name."""

    zone = "servicediscovery.internal."


def test_the_agent_warns_once_per_bad_variable(caplog: pytest.LogCaptureFixture) -> None:
    agent = Agent(QueuedSink(_Publisher()),  # type: ignore[arg-type]
                  _Docker([container({"SERVICE_8081_WEIGHT": "ten"})]),  # type: ignore[arg-type]
                  Host("ip-10-0-0-12", "10.0.0.12"), Routing.WEIGHTED)
    with caplog.at_level(logging.WARNING, logger="ecssd_agent.agent.host_agent"):
        for _ in range(3):
            names = {r.name for r in agent.desired(agent.docker.containers())}
    assert names == {"ip-10-0-0-12.servicediscovery.internal.",
                     "metrics.servicediscovery.internal."}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SERVICE_8081_WEIGHT" in warnings[0], warnings


# --- the task-events Lambda: the same variables from a task definition --------------------

ZONE = "sd.internal."
TASK_ID = "c13b4cb40f1f4fe4a2971f76ae5a47ad"
TARGET = f"{TASK_ID}.task.{ZONE}"
TASK = Task(arn=f"arn:aws:ecs:us-east-1:1:task/prod/{TASK_ID}", id=TASK_ID, cluster="prod",
            last_status="RUNNING", desired_status="RUNNING", launch_type="FARGATE")


def definition(*containers: dict[str, Any]) -> TaskDefinition:
    return parse_task_definition({"networkMode": "awsvpc", "containerDefinitions": list(containers)})


def container_definition(name: str, env: dict[str, str],
                         labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "environment": [{"name": k, "value": v} for k, v in env.items()],
            "dockerLabels": labels or {}, "portMappings": [{"containerPort": 8080}]}


def test_task_definition_weight_and_priority_reach_srv_and_the_service_a_record() -> None:
    td = definition(container_definition("web", {"SERVICE_8080_NAME": "web",
                                                 "SERVICE_8080_WEIGHT": "10"},
                                         {"SERVICE_8080_PRIORITY": "2"}))
    found, problems = tr.service_records(TASK, td, "10.0.0.9", ZONE, Routing.WEIGHTED, 0)
    assert problems == []
    by = {(r.name, r.type): r for r in found}
    assert by[(f"web.{ZONE}", "SRV")].values == (f"2 10 8080 {TARGET}",)
    assert by[(f"web.{ZONE}", "SRV")].weight == 10
    assert by[(f"web.{ZONE}", "A")].weight == 10  # a canary's share of A answers too
    assert by[(TARGET, "A")].weight == 1  # the only record set at its name

    found, _ = tr.service_records(TASK, td, "10.0.0.9", ZONE, Routing.MULTIVALUE, 0)
    by = {(r.name, r.type): r for r in found}
    assert by[(f"web.{ZONE}", "SRV")].values == (f"2 10 8080 {TARGET}",)  # the SRV fields carry it
    assert all(r.weight is None and r.multivalue for r in found)  # Route 53 has no weight here


def test_a_bad_weight_in_a_task_definition_skips_only_that_service() -> None:
    td = definition(container_definition("canary", {"SERVICE_8080_NAME": "web",
                                                    "SERVICE_8080_WEIGHT": "256"}),
                    container_definition("api", {"SERVICE_8080_NAME": "api"}))
    found, problems = tr.service_records(TASK, td, "10.0.0.9", ZONE, Routing.WEIGHTED, 0)
    assert {r.name for r in found} == {f"api.{ZONE}", TARGET}
    assert len(problems) == 1
    assert problems[0].variable == "SERVICE_8080_WEIGHT" and "canary" in str(problems[0])


def test_a_discovery_label_service_takes_its_first_ports_weight_and_priority() -> None:
    td = definition(container_definition("web", {"SERVICE_8080_WEIGHT": "5"},
                                         {"discovery.service.name": "web",
                                          "SERVICE_8080_PRIORITY": "4"}))
    found, problems = tr.service_records(TASK, td, "10.0.0.9", ZONE, Routing.WEIGHTED, 0)
    assert problems == []
    by = {(r.name, r.type): r for r in found}
    assert by[(f"web.{ZONE}", "SRV")].values == (f"4 5 8080 {TARGET}",)
    assert by[(f"web.{ZONE}", "A")].weight == by[(f"web.{ZONE}", "SRV")].weight == 5


def test_a_bad_weight_read_for_a_name_and_a_label_is_one_problem() -> None:
    td = definition(container_definition("web", {"SERVICE_8080_NAME": "web",
                                                 "SERVICE_8080_WEIGHT": "heavy"},
                                         {"discovery.service.name": "www"}))
    found, problems = tr.service_records(TASK, td, "10.0.0.9", ZONE, Routing.WEIGHTED, 0)
    assert found == []
    assert [p.variable for p in problems] == ["SERVICE_8080_WEIGHT"]

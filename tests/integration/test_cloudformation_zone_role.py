"""The quickstart with the zone in another account (``ZoneRoleArn``, ``ZoneId``).

Checked on the template, for both values of the condition: which roles may assume the zone
role (exactly those that would otherwise hold Route 53 permissions on the stack's zone),
that no role keeps Route 53 permissions on a zone the stack did not create, and that every
component is told the role and the zone's id. Then moto creates the stack with the
parameters set: no zone is created, and the functions' environments carry the role.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cloudformation import (
    _function_env,
    active_resources,
    agent_task_env,
    condition_values,
    deploy,
    load_template,
    statements,
)
from tests.support.moto_server import MotoServer

ROLE = "arn:aws:iam::111111111111:role/ecssd-zone"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
CROSS = {"ZoneRoleArn": ROLE, "ZoneRoleExternalId": "ext-42", "ZoneId": ZONE_ID}
FUNCTIONS = ("SweepFunction", "TaskEventsFunction", "ZoneWriterFunction")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def route53_and_sts(template: dict[str, Any], parameters: dict[str, str]
                    ) -> tuple[dict[str, set[str]], dict[str, list[Any]]]:
    conditions = condition_values(template, parameters)
    active = active_resources(template, conditions)
    route53: dict[str, set[str]] = {}
    assume: dict[str, list[Any]] = {}
    for stmt in statements(template, conditions):
        if stmt.role not in active:
            continue
        for action in stmt.actions:
            if action.startswith("route53:"):
                route53.setdefault(stmt.role, set()).add(action)
            if action == "sts:AssumeRole":
                assume.setdefault(stmt.role, []).extend(stmt.resources)
    return route53, assume


@pytest.mark.parametrize("mode", ["queued", "direct"])
def test_the_zone_role_replaces_the_route53_permissions_role_for_role(
        template: dict[str, Any], mode: str) -> None:
    local_route53, local_assume = route53_and_sts(template, {"AgentWriteMode": mode})
    assert local_assume == {} and local_route53
    cross_route53, cross_assume = route53_and_sts(template, {**CROSS, "AgentWriteMode": mode})
    assert cross_route53 == {}
    assert set(cross_assume) == set(local_route53)  # the same roles, now through the role
    assert all(resources == [{"Ref": "ZoneRoleArn"}] for resources in cross_assume.values())
    assert ("AgentTaskRole" in cross_assume) == (mode == "direct")


def test_no_zone_is_created_and_everything_is_told_the_role_and_the_zone(
        template: dict[str, Any]) -> None:
    conditions = condition_values(template, CROSS)
    active = active_resources(template, conditions)
    assert "HostedZone" not in active
    assert "HostedZone" in active_resources(template, condition_values(template, {}))
    for function in FUNCTIONS:
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["ASSUME_ROLE_ARN"] == {"Ref": "ZoneRoleArn"}
        assert env["ASSUME_ROLE_EXTERNAL_ID"] == {"Ref": "ZoneRoleExternalId"}
        assert env["HOSTED_ZONE_ID"] == {"Fn::If": ["LocalZone", {"Ref": "HostedZone"},
                                                    {"Ref": "ZoneId"}]}
        assert env["DOMAIN"] == {"Ref": "ZoneName"}


def test_a_stack_with_the_zone_elsewhere_is_created_in_moto(aws: MotoServer,
                                                            tmp_path: Path) -> None:
    stack = deploy(aws, tmp_path, AgentWriteMode="direct", **CROSS)
    assert "HostedZone" not in stack.physical
    assert stack.outputs["HostedZoneId"] == ZONE_ID
    assert aws.client("route53").list_hosted_zones()["HostedZones"] == []
    for function in ("SweepFunction", "TaskEventsFunction"):
        env = _function_env(stack, function)
        assert (env["ASSUME_ROLE_ARN"], env["ASSUME_ROLE_EXTERNAL_ID"], env["HOSTED_ZONE_ID"]) \
            == (ROLE, "ext-42", ZONE_ID)
    agent = agent_task_env(stack)
    assert (agent["ECSSD_ASSUME_ROLE_ARN"], agent["ECSSD_ASSUME_ROLE_EXTERNAL_ID"],
            agent["ECSSD_HOSTED_ZONE_ID"]) == (ROLE, "ext-42", ZONE_ID)

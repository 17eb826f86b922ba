"""Is this host leaving? Instance metadata (a fake IMDSv2 on 127.0.0.1) and the ECS container
instance status (moto in-process behind the real adapter) decide; nothing answering means the
host stays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ecssd_agent.agent.departure import (
    SPOT_INSTANCE_ACTION,
    TARGET_LIFECYCLE_STATE,
    Departure,
    DepartureCheck,
    leaving_lifecycle_state,
)
from ecssd_agent.agent.drain import DrainWatch
from ecssd_agent.agent.ecs_introspection import InstanceIdentity
from ecssd_agent.aws.imds import Imds
from tests.support.imds import FakeImds
from tests.unit.test_daemon_health_drain import Introspection


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeImds]:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    fake = FakeImds()
    yield fake
    fake.close()


@pytest.mark.parametrize(("state", "leaving"), [
    ("InService", False), ("Standby", False), ("Detached", False), ("Terminated", True),
    ("Warmed:Stopped", True), ("Warmed:Hibernated", True), ("Warmed:Terminated", True),
])
def test_which_lifecycle_states_leave(state: str, leaving: bool) -> None:
    assert leaving_lifecycle_state(state) is leaving


def test_metadata_decides_without_ecs(imds: FakeImds) -> None:
    check = DepartureCheck(None, Imds(imds.url, timeout=1.0))
    assert check.check() == Departure(
        False, "not in an Auto Scaling group; no spot interruption notice")
    imds.items[TARGET_LIFECYCLE_STATE] = "InService"
    assert check.check() == Departure(
        False, "Auto Scaling target lifecycle state InService; no spot interruption notice")
    imds.items[TARGET_LIFECYCLE_STATE] = "Terminated"
    assert check.check() == Departure(True, "its Auto Scaling target lifecycle state is "
                                            "Terminated")
    imds.items[TARGET_LIFECYCLE_STATE] = "InService"
    imds.items[SPOT_INSTANCE_ACTION] = json.dumps({"action": "terminate",
                                                   "time": "2025-01-01T12:00:00Z"})
    assert check.check() == Departure(True, "a spot interruption notice: terminate at "
                                            "2025-01-01T12:00:00Z")


def test_metadata_that_cannot_be_read_means_the_host_stays(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    departure = DepartureCheck(None, Imds("http://127.0.0.1:9", timeout=0.5)).check()
    assert not departure.leaving and "instance metadata unavailable" in departure.reason
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    departure = DepartureCheck(None, Imds("http://127.0.0.1:9")).check()
    assert not departure.leaving and "disabled" in departure.reason


def test_an_expired_token_is_fetched_again(imds: FakeImds) -> None:
    client = Imds(imds.url, timeout=1.0)
    imds.items[TARGET_LIFECYCLE_STATE] = "InService"
    assert client.find(TARGET_LIFECYCLE_STATE) == "InService"
    imds.token = "tok-456"  # the agent's token expired (6 hours)
    assert client.find(TARGET_LIFECYCLE_STATE) == "InService"


class CountingEcs:
    """The moto ECS client, counting DescribeContainerInstances."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.client


def test_ecs_status_decides_first(imds: FakeImds) -> None:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        ecs = boto3.client("ecs", region_name="us-east-1")
        ecs.create_cluster(clusterName="prod")
        arn = ecs.register_container_instance(
            cluster="prod", instanceIdentityDocument=json.dumps(
                {"instanceId": instance["Instances"][0]["InstanceId"]}))["containerInstance"][
            "containerInstanceArn"]
        counting = CountingEcs(ecs)
        watch = DrainWatch(Introspection(InstanceIdentity("prod", arn)),  # type: ignore[arg-type]
                           counting, interval=60.0)
        check = DepartureCheck(watch, Imds(imds.url, timeout=1.0), ecs_once=counting)
        imds.items[TARGET_LIFECYCLE_STATE] = "InService"
        assert check.check() == Departure(False, "container instance ACTIVE; Auto Scaling "
                                                 "target lifecycle state InService; no spot "
                                                 "interruption notice")
        assert counting.calls == 1  # a fresh read at exit
        ecs.update_container_instances_state(cluster="prod", containerInstances=[arn],
                                             status="DRAINING")
        assert check.check() == Departure(True, "its ECS container instance is DRAINING")
        assert counting.calls == 2
        assert check.check().leaving and counting.calls == 2  # the watch's answer suffices

"""The sweep at a size the reference could not handle: more than 100 tasks (DescribeTasks is
batched, ListTasks paginated) and more than 300 record sets (more than one page of
ListResourceRecordSets), with orphans on every page.

Each task serves its own service name: moto 5.2 does not implement StartRecordIdentifier, so
a page boundary inside a run of record sets sharing one name and type makes it repeat the
run (real Route 53 continues within it). Distinct names keep every boundary between names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import boto3
import pytest

from ecssd_agent.aws.clients import Clients
from health_lambda import handler
from tests.integration.sweep_world import HttpFleet, SweepWorld, keys
from tests.support.moto_server import MotoServer

HOSTS = 8
TASKS_PER_HOST = 41  # 328 tasks: 328 SRV + 8 A + SOA + NS = 338 record sets


@pytest.fixture
def fleet() -> Iterator[HttpFleet]:
    servers = HttpFleet()
    try:
        yield servers
    finally:
        servers.close()


def test_hundreds_of_tasks_and_several_pages_of_records(
        aws: MotoServer, fleet: HttpFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.manual_ecs_transitions()
    world = SweepWorld(aws.client, fleet)
    hosts = [world.host("big") for _ in range(HOSTS)]
    tasks = [world.task(h, service=f"svc{n:02d}-{i:02d}") for n, h in enumerate(hosts)
             for i in range(TASKS_PER_HOST)]
    world.sync()
    stopped = tasks[::33]  # 10 tasks, spread over every host and every page of the listing
    for task in stopped:
        world.stop_task(task)
    before = world.records()
    assert len(before) > 300
    stale = {world.srv_key(t) for t in stopped}

    made: list[Clients] = []

    def factory() -> Clients:
        made.append(Clients(region="us-east-1", session=boto3.session.Session()))
        event, hook = world.bindings_hook()  # the ports real ECS would report
        made[-1].client("ecs").meta.events.register(event, hook)
        return made[-1]

    monkeypatch.setenv("HOSTED_ZONE_ID", world.zone_id)
    monkeypatch.setenv("CHECK_TIMEOUT", "2")
    handler.runtime.reset(lambda: handler.build(clients=factory()))
    try:
        summary = handler.lambda_handler({}, None)
    finally:
        handler.runtime.reset()

    assert keys(before) - keys(world.records()) == stale
    assert summary["deleted"] == len(stopped) and summary["errors"] == []
    assert summary["healthy"] == len(tasks) - len(stopped) and summary["unhealthy"] == []
    assert summary["records_seen"] == len(before) and summary["tasks"] == len(tasks) - 10
    calls = made[0].stats
    assert calls.attempts("ListResourceRecordSets") >= 2
    assert calls.attempts("DescribeTasks") == math.ceil(len(tasks) / 100)
    assert calls.attempts("DescribeContainerInstances") == 1
    assert calls.attempts("DescribeTaskDefinition") == 1  # one revision, cached
    assert calls.attempts("ChangeResourceRecordSets") == 1
    assert calls.attempts("StopTask") == 0

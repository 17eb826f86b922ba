"""The task-events Lambda's Route 53 and ECS budget, counted where the requests arrive (the
moto server): an event reads only the names it touches, whatever the zone's size.

The zone holds 3,000 record sets besides the service's: 1,000 other tasks' own A records
(``<id>.task.<zone>``, the names a task event reads sit among them), 1,000 names before and
1,000 after. A full listing of it is 11 requests (300 record sets a page); the figures
asserted here are the ones the README states.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.test_task_events_health import checked_service, healthy
from tests.integration.test_task_events_reconcile import schedule
from tests.integration.test_task_events_world import CLUSTER, Lambda, World, world
from tests.support.served import Served, served

__all__ = ["world"]  # the fixture

OTHERS = 3000


def fill(world: World) -> None:
    """3,000 record sets of other writers: before, among and after the names of the test."""
    def a_record(name: str, index: int, owned: bool) -> dict[str, Any]:
        record: dict[str, Any] = {"Name": name, "Type": "A", "TTL": 60, "ResourceRecords": [
            {"Value": f"10.{index // 250 % 250}.{index % 250}.{index // 62500 + 1}"}]}
        if owned:  # another task's own A record, as the Lambda writes it
            record.update(SetIdentifier=f"ecssd:t:elsewhere:{name.split('.')[0]}:", Weight=1)
        return record

    names = [(f"h-{i:04d}.sd.internal.", False) for i in range(OTHERS // 3)]
    names += [(f"{uuid.uuid4().hex}.task.sd.internal.", True) for _ in range(OTHERS // 3)]
    names += [(f"zz-{i:04d}.sd.internal.", False) for i in range(OTHERS // 3)]
    records = [a_record(name, i, owned) for i, (name, owned) in enumerate(names)]
    for start in range(0, len(records), 500):
        world.route53.change_resource_record_sets(HostedZoneId=world.zone_id, ChangeBatch={
            "Changes": [{"Action": "CREATE", "ResourceRecordSet": r}
                        for r in records[start:start + 500]]})
    count = world.route53.get_hosted_zone(Id=world.zone_id)["HostedZone"]
    assert count["ResourceRecordSetCount"] >= OTHERS


def route53(seen: Served, lists: tuple[int, ...] = (1, 2)) -> dict[str, int]:
    """The Route 53 requests answered, with the ListResourceRecordSets checked against
    ``lists`` and then left out. A RUNNING event reads the task's own name and its
    service's: two reads, or one when they share a page (task ids are random, and so is
    where the task's name sorts)."""
    counts = seen.of("route53")
    assert counts.pop("ListResourceRecordSets", 0) in lists, seen.counts
    return counts


def test_one_task_event_at_3000_record_sets_costs_a_few_requests(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = Lambda(world)
    checked_service(world)
    fill(world)
    steady = world.run_service("time", "time", count=3)
    healthy(world, handler, *steady)  # the handler is warm: it found the zone
    (new,) = world.run_service("time", "time", deployment="2")
    world.set_health(new["taskArn"], "HEALTHY")

    event = world.event(new["taskArn"])
    with served(monkeypatch) as running:
        assert handler(event)["changes"] == 3
    assert route53(running) == {"ChangeResourceRecordSets": 1}
    assert running.of("ecs") == {"DescribeTasks": 2}  # the task, and again after the write

    leaving = steady[0]
    event = world.event(leaving["taskArn"], desiredStatus="STOPPED")
    with served(monkeypatch) as draining:
        assert handler(event)["changes"] == 3
    # its own name first (it has records), then its service's
    assert route53(draining, lists=(2,)) == {"ChangeResourceRecordSets": 1}
    assert draining.of("ecs") == {"DescribeTasks": 1, "ListTasks": 1}  # the service's others

    world.stop(leaving["taskArn"])
    event = world.event(leaving["taskArn"])
    with served(monkeypatch) as stopped:
        assert handler(event)["changes"] == 0
    assert route53(stopped, lists=(1,)) == {}  # its own name: gone, so nothing else is
    assert stopped.of("ecs") == {}


def test_the_reconciles_at_3000_record_sets(world: World,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The health follow-up reads the tasks' own A records (1,000 others and these 4: four
    pages) and, when nothing contradicts the health ECS reports, nothing else. The full
    reconcile sizes the zone, then reads by name: 5 names here, fewer than the zone's 11
    pages. ECS_CLUSTERS names the cluster, as the stack does."""
    handler = Lambda(world, clusters=(CLUSTER,))
    checked_service(world)
    fill(world)
    tasks = world.run_service("time", "time", count=4)
    healthy(world, handler, *tasks)

    with served(monkeypatch) as follow_up:
        assert handler(schedule(reconcile="health"))["changes"] == 0
    assert follow_up.of("route53") == {"ListResourceRecordSets": 4}
    assert follow_up.of("ecs") == {"DescribeTasks": 1, "ListTasks": 1}

    with served(monkeypatch) as full:
        assert handler(schedule())["changes"] == 0
    assert route53(full, lists=(2, 3, 4, 5)) == {"GetHostedZone": 1}
    assert full.of("ecs") == {"DescribeTasks": 1, "ListTasks": 1}

    world.set_health(tasks[0]["taskArn"], "UNHEALTHY")
    with served(monkeypatch) as withdrawn:
        assert handler(schedule(reconcile="health"))["changes"] == 3
    # the subtree, then the service's name: the task's own is in the subtree already
    assert withdrawn.of("route53") == {"ChangeResourceRecordSets": 1,
                                       "ListResourceRecordSets": 4 + 1}


def test_a_cold_start_finds_the_zone_once(world: World,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    handler = Lambda(world)
    checked_service(world)
    fill(world)
    (task,) = world.run_service("time", "time")
    world.set_health(task["taskArn"], "HEALTHY")
    event = world.event(task["taskArn"])
    with served(monkeypatch) as first:
        handler(event)
    assert route53(first) == {"ChangeResourceRecordSets": 1, "GetHostedZone": 1}

"""The health gate of ECS tasks' record sets (pure): proven containers are published, starting
ones only where nothing else answers, UNHEALTHY ones never."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ecssd_agent.core import ownership
from ecssd_agent.core import task_records as tr
from ecssd_agent.core.ecs_task import Task
from ecssd_agent.core.model import RecordSet, Routing
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import routed
from ecssd_agent.core.task_gate import gated, unanswered
from tests.unit.test_task_records import ZONE, checked, container, definition, health

TIME = "time.sd.internal."
SIDE = "side.sd.internal."
TD = definition(checked())


def task(task_id: str, status: str, ip: str = "10.0.0.1") -> tr.TaskRecords:
    """Task ``task_id`` of service ``time`` whose checked container ECS shows as ``status``."""
    described: Task = replace(health(FargateApp=status), id=task_id,
                              arn=f"arn:aws:ecs:us-west-2:1:task/FargateCluster/{task_id}")
    found, problems = tr.task_records(described, TD, ip, ZONE, Routing.WEIGHTED, 0)
    assert problems == []
    return found


def deciding(*tasks: tr.TaskRecords) -> ownership.Owns:
    return ownership.owned_by_these_tasks((t.task.cluster, t.task.id) for t in tasks)


def kinds(records: list[RecordSet]) -> set[tuple[str, str, str]]:
    """(name, type, task id) of each record set."""
    return {(r.name, r.type, o.task) for r in records if (o := ownership.owner_of(r))}


def foreign(name: str, rtype: str, value: str) -> RecordSet:
    """A record set of a host agent (another writer) at ``name``."""
    owner = Owner(host="ip-10-0-0-9", container="0123456789ab", port="8080/tcp")
    return routed(name, rtype, [value], owner, Routing.WEIGHTED, 0)


def test_records_are_grouped_by_what_ecs_shows_and_unhealthy_ones_in_neither() -> None:
    healthy, starting = task("a1", "HEALTHY"), task("a2", "UNKNOWN")
    failing = task("a3", "UNHEALTHY")
    assert {(r.name, r.type) for r in healthy.proven} == {(TIME, "SRV"), (TIME, "A")}
    assert healthy.starting == () and starting.proven == ()
    assert failing.proven == failing.starting == ()
    assert {(r.name, r.type) for r in starting.starting} == {(TIME, "SRV"), (TIME, "A")}
    none_reported = task("a4", "")  # no health in the answer: no verdict either
    assert {(r.name, r.type) for r in none_reported.starting} == {(TIME, "SRV"), (TIME, "A")}
    for records in (healthy, starting, failing):
        assert records.names == {TIME, f"{records.task.id}.task.{ZONE}"}  # whatever the health


def test_record_names_need_no_address_and_cover_every_container() -> None:
    td = definition(checked(), container("sidecar", env={"SERVICE_9000_NAME": "side"},
                                         ports=[(9000, "tcp")]))
    names = tr.record_names(health(FargateApp="UNHEALTHY"), td, ZONE)
    assert names == {TIME, SIDE, f"{health(FargateApp='').id}.task.{ZONE}"}


@pytest.mark.parametrize("candidates, present, published", [
    # proven containers are published, with the task's own A record
    (["a1:HEALTHY"], [], {"a1"}),
    # a starting task alone: nothing else answers at its names, so it is published
    (["b1:UNKNOWN"], [], {"b1"}),
    # ... but not beside a proven instance of the plan
    (["a1:HEALTHY", "b1:UNKNOWN"], [], {"a1"}),
    # ... nor beside another writer's record set at the same name and type
    (["b1:UNKNOWN"], ["agent:SRV", "agent:A"], set()),
    # an UNHEALTHY container never, even alone
    (["c1:UNHEALTHY"], [], set()),
    (["c1:UNHEALTHY", "b1:UNKNOWN"], [], {"b1"}),
    # every starting task where nothing else answers, not just one
    (["b1:UNKNOWN", "b2:"], [], {"b1", "b2"}),
], ids=["proven", "starting-alone", "starting-beside-proven", "starting-beside-agent",
        "unhealthy", "unhealthy-and-starting", "all-starting"])
def test_which_tasks_are_published(candidates: list[str], present: list[str],
                                   published: set[str]) -> None:
    tasks = [task(*c.split(":")) for c in candidates]
    zone = [foreign(TIME, p.split(":")[1], "10.0.0.9" if p.endswith("A") else "1 1 80 x.")
            for p in present]
    out = gated(tasks, zone, deciding(*tasks))
    assert {o for (_, _, o) in kinds(out)} == published
    for task_id in published:  # each with its own A record, which its SRV targets
        assert (f"{task_id}.task.{ZONE}", "A", task_id) in kinds(out)


def test_a_leaving_tasks_records_do_not_count_as_an_answer() -> None:
    """The old task's records are being removed in this very plan: the starting replacement
    is published in the same change, so the name is never empty."""
    leaving, new = task("a1", "HEALTHY"), task("b1", "UNKNOWN")
    out = gated([new], leaving.published(), deciding(leaving, new))
    assert kinds(out) == {(TIME, "SRV", "b1"), (TIME, "A", "b1"), (f"b1.task.{ZONE}", "A", "b1")}
    assert unanswered([new], out) == [TIME]


def test_the_fallback_is_per_name_and_type() -> None:
    """Another writer answers SRV at the name, nobody answers A: the starting task's A record
    set is published (and its own A record), its SRV record set is not."""
    new = task("b1", "UNKNOWN")
    out = gated([new], [foreign(TIME, "SRV", "1 1 8080 ip-10-0-0-9.sd.internal.")],
                deciding(new))
    assert kinds(out) == {(TIME, "A", "b1"), (f"b1.task.{ZONE}", "A", "b1")}


def test_starting_records_give_way_once_a_proven_one_answers() -> None:
    """b1 was published while alone; now a1 is HEALTHY: b1's records are no longer wanted
    (the plan deletes them), a1's are."""
    proven, starting = task("a1", "HEALTHY"), task("b1", "UNKNOWN")
    out = gated([proven, starting], starting.published(starting.starting),
                deciding(proven, starting))
    assert {o for (_, _, o) in kinds(out)} == {"a1"}


def test_a_task_of_another_kind_at_the_name_counts_as_an_answer() -> None:
    """A record set of another ECS task that this plan does not decide answers there."""
    other = Owner(kind=Kind.TASK, cluster="FargateCluster", task="z9", port="8080/tcp")
    present = [routed(TIME, "SRV", ["1 1 8080 z9.task.sd.internal."], other, Routing.WEIGHTED, 0),
               routed(TIME, "A", ["10.0.0.7"], Owner(kind=Kind.TASK, cluster="FargateCluster",
                                                      task="z9"), Routing.WEIGHTED, 0)]
    new = task("b1", "UNKNOWN")
    assert gated([new], present, deciding(new)) == []

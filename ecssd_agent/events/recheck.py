"""What ECS says of tasks now, around a write: a record set is added only for a task that runs.

A task can stop between the read its records were planned on and the write, and its STOPPED
event, handled meanwhile by another invocation, then finds nothing to remove: the write would
bring back the records of a stopped task. So the writers ask again (DescribeTasks, 100 a
call) just before they write and once more after: a task seen leaving gets nothing, or has
what was just written taken back. ECS records a stop before it sends the event, so a stop
that another invocation acted on before our write is always seen by the check after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.core import ownership
from ecssd_agent.core.ecs_task import Phase, Task
from ecssd_agent.core.model import Action, Change


@dataclass(frozen=True)
class Now:
    """Tasks as ECS describes them now: ``running`` by id; ``leaving`` are the ids ECS shows
    stopping, stopped or no longer knows. A task in neither could not be read: unknown."""

    running: Mapping[str, Task]
    leaving: frozenset[str]


def describe_now(ecs: object, tasks: Iterable[Task]) -> Now:
    """DescribeTasks for ``tasks``, per cluster, 100 a call. Raises EcsReadError."""
    by_cluster: dict[str, list[Task]] = {}
    for task in tasks:
        by_cluster.setdefault(task.cluster, []).append(task)
    running: dict[str, Task] = {}
    leaving: set[str] = set()
    for cluster, members in sorted(by_cluster.items()):
        described = ecs_api.describe_tasks(ecs, cluster, [t.arn for t in members])
        leaving |= described.missing
        for task_id, task in described.tasks.items():
            if task.phase is Phase.REGISTER:
                running[task_id] = task
            elif task.phase is Phase.REMOVE:
                leaving.add(task_id)
    return Now(running, frozenset(leaving))


def added_for(changes: Sequence[Change]) -> set[str]:
    """The ids of the tasks whose record sets ``changes`` create or update."""
    found: set[str] = set()
    for change in changes:
        if change.action is Action.DELETE:
            continue
        owner = ownership.owner_of(change.record)
        if owner is not None and owner.kind is ownership.Kind.TASK:
            found.add(owner.task)
    return found

"""The health gate of ECS tasks' record sets: which record sets of running tasks to publish.

A container with a health check serves only once ECS shows it HEALTHY, so its record sets
wait for that and go when it is UNHEALTHY. ECS reports health only when asked (DescribeTasks;
a task state change event carries none), so a task that has just started is *starting*: no
verdict yet. Publishing proven containers only would leave a name without any answer
whenever every instance behind it is starting: a service's first task, or a rolling
deployment whose old tasks ECS stops before the new ones are proven (a minimumHealthyPercent
below 100). So, per name and type, starting record sets are published while nothing else
answers there (an unproven instance rather than none at all), and give way as soon as a
proven one is published. An UNHEALTHY container is never published. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Owns
from ecssd_agent.core.task_records import TaskRecords


def gated(candidates: Iterable[TaskRecords], present: Iterable[RecordSet],
          deciding: Owns) -> list[RecordSet]:
    """The record sets to publish for ``candidates`` (running tasks).

    ``present`` is what the zone holds at their names, whoever owns it; ``deciding`` accepts
    the record sets whose fate this plan decides (the candidates' own, and those of tasks
    leaving), so only the others count as an answer already there.
    """
    tasks = list(candidates)
    answered = {(r.name, r.type) for r in present if not deciding(r)}
    answered |= {(r.name, r.type) for task in tasks for r in task.proven}
    out: list[RecordSet] = []
    for task in tasks:
        out += task.published(r for r in task.starting if (r.name, r.type) not in answered)
    return out


def unanswered(candidates: Iterable[TaskRecords], published: Iterable[RecordSet]) -> list[str]:
    """The names of ``candidates``' starting record sets published for want of any other
    answer (for the log: a user sees unproven instances there)."""
    chosen = {r.key for r in published}
    return sorted({r.name for task in candidates for r in task.starting if r.key in chosen})

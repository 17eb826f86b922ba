"""What a drain withdraws: the records of the containers ECS will stop, and only those.

ECS drains an instance by stopping its service tasks (after starting their replacements
elsewhere, as each service's deployment configuration allows). Standalone tasks (RunTask,
StartTask) keep running on a DRAINING instance, and so do containers ECS did not start: their
records stay.

A container belongs to an ECS task when it carries the ECS agent's label
``com.amazonaws.ecs.task-arn`` (with ``com.amazonaws.ecs.cluster``). Neither the labels nor
the ECS agent's introspection API say whether a service started the task; DescribeTasks does
(:attr:`~ecssd_agent.core.ecs_task.Task.of_service`: group ``service:<name>``, startedBy
``ecs-svc/<id>``). It is read only while the host drains, for tasks not seen before, 100 tasks
a call: a task's group never changes, so each answer is kept. A drain of a host costs one
DescribeTasks per cluster and 100 tasks.

A task whose kind cannot be read (an ECS error) is withdrawn, as a drain did before anyone
asked: ECS is moving work off this host, and the next reconcile asks again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ecssd_agent.aws.ecs import EcsReadError, describe_tasks
from ecssd_agent.core import naming
from ecssd_agent.core.metadata import ECS_CLUSTER, ECS_TASK_ARN
from ecssd_agent.core.model import Container

log = logging.getLogger(__name__)


def _cluster(container: Container, task_arn: str) -> str:
    """The task's cluster: its label, else the ARN's ``task/<cluster>/<id>``."""
    label = naming.cluster_name(container.labels.get(ECS_CLUSTER, ""))
    if label:
        return label
    parts = task_arn.split(":", 5)[-1].split("/")
    return parts[1] if len(parts) == 3 else ""


class DrainScope:
    """Sorts this host's containers into those a drain withdraws and those it keeps."""

    def __init__(self, ecs: Callable[[], Any]) -> None:
        self._ecs = ecs
        self._of_service: dict[str, bool] = {}  # task ARN -> started by a service
        self.reads = 0  # DescribeTasks calls made (tests read it)

    def kept(self, containers: Iterable[Container]) -> list[Container]:
        """The containers whose records stay while this host drains."""
        containers = list(containers)
        tasks = {c.id: c.labels.get(ECS_TASK_ARN, "") for c in containers}
        self._learn({arn: c for c in containers if (arn := tasks[c.id])})
        return [c for c in containers
                if not tasks[c.id] or self._of_service.get(tasks[c.id]) is False]

    def _learn(self, by_task: dict[str, Container]) -> None:
        """Ask ECS about the tasks not known yet, per cluster."""
        unknown: dict[str, list[str]] = defaultdict(list)
        for arn, container in by_task.items():
            if arn not in self._of_service:
                unknown[_cluster(container, arn)].append(arn)
        for cluster, arns in sorted(unknown.items()):
            try:
                self.reads += 1
                described = describe_tasks(self._ecs(), cluster, arns)
            except EcsReadError as exc:
                log.warning("drain: cannot tell which tasks a service started (%s); "
                            "withdrawing their records as ECS drains this host", exc)
                continue
            for arn in arns:  # a task ECS does not know, it will not stop
                if naming.task_id(arn) in described.missing:
                    self._of_service[arn] = False
            for task in described.tasks.values():
                self._of_service[task.arn] = task.of_service
                if not task.of_service:
                    log.info("drain: task %s is not a service's (group %r): ECS keeps it "
                             "running, its records stay", task.id, task.group,
                             extra={"task": task.id})

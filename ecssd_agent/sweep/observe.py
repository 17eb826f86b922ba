"""Observe ECS and EC2 for the sweep: clusters -> container instances, EC2 hosts, tasks.

Each cluster is observed on its own, a few at a time: a failed call fails that cluster's view
(:attr:`ClusterView.error`), never the others, and never turns into "no such task". Only the
tasks the zone's records name are described, plus their task definitions when their
instances are to be probed, so a sweep costs ECS O(clusters + tasks/100 + task definitions)
calls.
"""


from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.core import naming
from ecssd_agent.core.ecs_task import TaskDefinition
from ecssd_agent.sweep.decide import ClusterView, HostView, Scope
from ecssd_agent.sweep.evidence import TaskEvidence, definition_problems

log = logging.getLogger(__name__)

CLUSTER_WORKERS = 8  # clusters observed at once (each runs two call chains)
DEFINITION_WORKERS = 4  # DescribeTaskDefinition calls in flight per cluster


def cluster_names(ecs: Any, wanted: Sequence[str]) -> tuple[list[str], dict[str, str], str]:
    """(names to sweep, name -> error for unusable ones, error listing the clusters).

    ``wanted`` empty: every cluster of the account (ListClusters, paginated). Otherwise the
    named clusters, checked with DescribeClusters so a misspelt or deleted one is reported
    (and judges nothing) instead of looking like a cluster without hosts.
    """
    if not wanted:
        try:
            return [naming.cluster_name(a) for a in ecs_api.list_clusters(ecs)], {}, ""
        except ecs_api.EcsReadError as exc:
            return [], {}, str(exc)
    names = [naming.cluster_name(w) for w in wanted]
    errors: dict[str, str] = {}
    for start in range(0, len(wanted), ecs_api.DESCRIBE_BATCH):
        chunk = list(wanted[start:start + ecs_api.DESCRIBE_BATCH])
        try:
            found = ecs_api.describe_clusters(ecs, chunk)
        except ecs_api.EcsReadError as exc:
            for name in chunk:
                errors[naming.cluster_name(name)] = str(exc)
            continue
        for name in chunk:
            status = found.get(naming.cluster_name(name))
            if status is None:
                errors[naming.cluster_name(name)] = "ECS does not know this cluster"
            elif status != "ACTIVE":
                errors[naming.cluster_name(name)] = f"the cluster is {status}"
    return names, errors, ""


def observe_cluster(
    ecs: Any,
    ec2: Any,
    name: str,
    task_ids: set[str],
    definitions: ecs_api.TaskDefinitions,
    need_definitions: bool = True,
) -> ClusterView:
    """One cluster's hosts and the named tasks' states; any failed call fails the view.

    The two chains (container instances -> EC2, and tasks -> task definitions) do not depend
    on each other, so they run side by side.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        hosts_future = pool.submit(_hosts, ecs, ec2, name)
        tasks_future = pool.submit(_tasks, ecs, name, task_ids, definitions, need_definitions)
    errors: list[str] = []
    hosts: tuple[HostView, ...] = ()
    try:
        hosts = hosts_future.result()
    except ecs_api.EcsReadError as exc:
        errors.append(str(exc))
    try:
        running, described, tasks = tasks_future.result()
    except ecs_api.EcsReadError as exc:
        errors.append(str(exc))
    if errors:
        error = "; ".join(errors)
        log.error("cluster %s: %s", name, error, extra={"cluster": name})
        return ClusterView(name, hosts=hosts, error=error)
    # Absent from a successful answer, or a MISSING failure: ECS does not know the task.
    gone = (task_ids - set(described.tasks) - set(described.failures)) | described.missing
    return ClusterView(name, hosts=hosts, tasks=tasks, gone_tasks=frozenset(gone),
                       running=running)


def _hosts(ecs: Any, ec2: Any, name: str) -> tuple[HostView, ...]:
    instances = ecs_api.instance_hosts(ecs, ec2, name,
                                       ecs_api.list_container_instances(ecs, name))
    return tuple(HostView(h.container_instance_arn, h.instance_id, h.label, h.private_ip,
                          h.live, h.state) for h in instances.values())


def _tasks(ecs: Any, name: str, task_ids: set[str], definitions: ecs_api.TaskDefinitions,
           need_definitions: bool
           ) -> tuple[int, ecs_api.DescribedTasks, dict[str, TaskEvidence]]:
    running = len(ecs_api.list_tasks(ecs, name, "RUNNING"))
    # With their tags when they are to be probed: each failure count is a tag of its task.
    described = (ecs_api.describe_tasks(ecs, name, task_ids, include_tags=need_definitions)
                 if task_ids else ecs_api.DescribedTasks())
    read: dict[str, TaskDefinition] = {}
    if need_definitions:  # each revision once (and from the cache when seen before)
        arns = sorted({t.task_definition_arn for t in described.tasks.values()
                       if not t.stopping and t.task_definition_arn})
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, min(DEFINITION_WORKERS, len(arns)))) as pool:
            read = dict(zip(arns, pool.map(lambda arn: definitions.get(ecs, arn, name), arns),
                            strict=True))
        for definition in read.values():  # once per revision and sweep, not once per task
            for problem in definition_problems(definition):
                log.warning("task definition %s: %s", definition.arn, problem,
                            extra={"cluster": name, "task_definition": definition.arn})
    tasks = {tid: TaskEvidence(task, None if task.stopping else read.get(task.task_definition_arn))
             for tid, task in described.tasks.items()}
    return running, described, tasks


def observe(
    ecs: Any,
    ec2: Any,
    wanted: Sequence[str],
    referenced: Mapping[str, set[str]] | None,
    definitions: ecs_api.TaskDefinitions,
    need_definitions: bool = True,
    names: tuple[list[str], dict[str, str], str] | None = None,
) -> Scope:
    """Every swept cluster's view. ``referenced``: task ids to describe, per cluster name."""
    swept, unusable, error = names if names is not None else cluster_names(ecs, wanted)
    if error:
        return Scope((), all_clusters=not wanted, error=f"listing the clusters failed: {error}")
    referenced = referenced or {}

    def one(name: str) -> ClusterView:
        if name in unusable:
            return ClusterView(name, error=unusable[name])
        return observe_cluster(ecs, ec2, name, set(referenced.get(name, set())), definitions,
                               need_definitions)

    with concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(CLUSTER_WORKERS, len(swept)))) as pool:
        views = tuple(pool.map(one, swept))
    return Scope(views, all_clusters=not wanted)

"""The task-events Lambda's periodic reconcile: RUNNING tasks without their records get them.

An event can be lost after Lambda's retries, and an awsvpc/Fargate task has no host agent to
register it; so, invoked by a schedule, the function lists every RUNNING task of
``ECS_CLUSTERS`` (all clusters when empty), computes its records with the event path's own
rules (:meth:`ecssd_agent.events.handle.TaskEvents.desired_records`), points a missing fixed
record at the newest task of ``TASK_GROUP``, and plans it all against one zone listing with
``delete=False``: it adds and corrects, never deletes (removal is the event path's and the
health sweep's, which have the evidence). One batch for every task; task by task when Route
53 keeps refusing it, so one task's conflict never keeps the others unregistered.

A task whose state is not known well enough is skipped and logged; a cluster whose ECS reads
fail is skipped and the run raises :class:`ReconcileIncomplete` once the rest is applied.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.core import naming, ownership
from ecssd_agent.core import task_records as tr
from ecssd_agent.core.ecs_task import Phase, Task
from ecssd_agent.core.model import Change, RecordSet
from ecssd_agent.events.handle import TaskEvents, TaskStateUnknown
from ecssd_agent.sync.reconcile import NotConverged, converge, first_then

log = logging.getLogger(__name__)


class ReconcileIncomplete(RuntimeError):
    """Some clusters could not be read or some tasks' records were refused: the rest was
    applied, and Lambda reports a failure."""


@dataclass
class _Tally:
    clusters: int = 0
    running: int = 0  # RUNNING tasks described
    with_records: int = 0  # of them, tasks that should have records
    skipped: list[str] = field(default_factory=list)  # "<task>: why"
    errors: list[str] = field(default_factory=list)  # clusters not read, tasks refused


def running_tasks(ecs: Any, cluster: str, tally: _Tally) -> list[Task]:
    """The cluster's tasks that run and are meant to (ListTasks, then DescribeTasks by 100).

    Raises EcsReadError. A description that cannot be read is skipped, named in ``tally``.
    """
    arns = ecs_api.list_tasks(ecs, cluster, "RUNNING")
    described = ecs_api.describe_tasks(ecs, cluster, arns) if arns else ecs_api.DescribedTasks()
    for tid, why in described.failures.items():
        tally.skipped.append(f"{cluster}: task {tid}: {why}")
        log.warning("skipped task %s of cluster %s: %s", tid, cluster, why)
    return [t for t in described.tasks.values() if t.phase is Phase.REGISTER]


def _desired(events: TaskEvents, cluster: str, tasks: Sequence[Task],
             tally: _Tally) -> list[RecordSet]:
    """The service records the running tasks of one cluster should have. Raises
    EcsReadError when the cluster's hosts cannot be read."""
    config = events.config
    if config.service_records and config.bridge_records and tasks:
        # the hosts of bridge/host-mode tasks, 100 a call rather than one by one
        events.know_hosts(cluster, (t.container_instance_arn for t in tasks if not t.eni_ip))
    desired: list[RecordSet] = []
    for task in tasks:
        extra = {"task": task.id, "cluster": task.cluster, "task_version": task.version}
        try:
            records = events.desired_records(task, extra)
        except (ecs_api.EcsReadError, TaskStateUnknown) as exc:
            tally.skipped.append(f"{task.id}: {exc}")
            log.warning("skipped task %s: %s", task.id, exc, extra=extra)
            continue
        tally.with_records += bool(records)
        desired += records
    return desired


def _fixed(events: TaskEvents, tasks: Iterable[Task], listing: Sequence[RecordSet],
           tally: _Tally) -> list[RecordSet]:
    """``RR_NAME`` -> the newest running task of ``TASK_GROUP``, only when no A record set is
    at that name: a name held by a task (or by hand) is left to the event path and the
    sweep, which know who should hold it."""
    config = events.config
    name = naming.record_name(config.rr_name, events.zone.zone.name)
    if any(r.name == name and r.type == "A" for r in listing):
        return []
    newest = tr.newest(t for t in tasks if t.group == config.task_group)
    if newest is None:
        return []
    try:
        record = events.fixed_record_for(newest)
    except (ecs_api.EcsReadError, TaskStateUnknown) as exc:
        tally.skipped.append(f"{newest.id}: {exc}")
        log.warning("fixed record %s: skipped task %s: %s", name, newest.id, exc)
        return []
    log.info("reconcile: fixed record %s is missing; pointing it at task %s", name, newest.id)
    return [record]


def _apply(events: TaskEvents, desired: Sequence[RecordSet], listing: Sequence[RecordSet],
           tally: _Tally) -> tuple[list[Change], int]:
    """Apply what is missing for every task at once; task by task when Route 53 keeps
    refusing that batch. Returns the changes applied and the change requests made."""
    zone, dry_run = events.zone, events.config.dry_run
    try:
        outcome = converge(zone, desired, ownership.owned_by_tasks(), delete=False,
                           read=first_then(listing, zone.records), dry_run=dry_run)
        return outcome.changes, outcome.requests
    except NotConverged as exc:
        log.warning("reconcile: Route 53 refused the batch of every task (%s); applying the "
                    "tasks one by one", exc)
    by_task: dict[str, list[RecordSet]] = {}
    for record in desired:
        owner = ownership.parse_set_identifier(record.set_identifier)
        by_task.setdefault(owner.task if owner else "", []).append(record)
    changes: list[Change] = []
    requests = 0
    listing = list(zone.records())
    for task_id, records in by_task.items():
        try:
            outcome = converge(zone, records, ownership.owned_by_tasks(), delete=False,
                               read=first_then(listing, zone.records), dry_run=dry_run)
        except NotConverged as exc:
            tally.errors.append(f"task {task_id}: {exc}")
            log.error("reconcile: the records of task %s were refused: %s", task_id, exc,
                      extra={"task": task_id})
            continue
        changes += outcome.changes
        requests += outcome.requests
    return changes, requests


def _clusters(events: TaskEvents) -> Sequence[str]:
    if events.config.clusters:
        return events.config.clusters
    return [naming.cluster_name(arn) for arn in ecs_api.list_clusters(events.ecs)]


def run(events: TaskEvents) -> dict[str, Any]:
    """One reconcile over every cluster; returns a summary (raises ReconcileIncomplete)."""
    config = events.config
    if not config.service_records and not config.fixed_record:
        log.info("reconcile: nothing to do (SERVICE_RECORDS=false, no RR_NAME)")
        return {"status": "ignored", "reason": "no records to keep"}
    tally = _Tally()
    running: list[Task] = []
    desired: list[RecordSet] = []
    for cluster in _clusters(events):
        tally.clusters += 1
        try:
            tasks = running_tasks(events.ecs, cluster, tally)
            desired += _desired(events, cluster, tasks, tally)
        except ecs_api.EcsReadError as exc:
            tally.errors.append(str(exc))
            log.error("reconcile: cluster %s skipped: %s", cluster, exc,
                      extra={"cluster": cluster})
            continue
        running += tasks
    tally.running = len(running)

    changes: list[Change] = []
    requests = 0
    fixed = config.fixed_record and any(t.group == config.task_group for t in running)
    if desired or fixed:  # otherwise spare the zone read: Route 53 is the scarce API
        listing = list(events.zone.records())
        if fixed:
            desired += _fixed(events, running, listing, tally)
        changes, requests = _apply(events, desired, listing, tally)
    summary = {
        "status": "ok", "reason": "reconcile", "clusters": tally.clusters,
        "running": tally.running, "with_records": tally.with_records,
        "skipped": tally.skipped, "errors": tally.errors, "changes": len(changes),
        "requests": requests, "records": [c.record.describe() for c in changes],
        "actions": [c.action.value for c in changes],
    }
    log.info("reconcile: %d running task(s) in %d cluster(s), %d with records; %d change(s) "
             "in %d change request(s)", tally.running, tally.clusters, tally.with_records,
             len(changes), requests,
             extra={k: summary[k] for k in ("running", "with_records", "changes", "requests")})
    if tally.errors:
        raise ReconcileIncomplete("; ".join(tally.errors))
    return summary

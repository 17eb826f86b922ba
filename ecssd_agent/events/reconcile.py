"""The task-events Lambda's periodic reconcile: every running task's records as the gate says.

An event can be lost after Lambda's retries, a container's health changes without any event,
and an awsvpc/Fargate task has no host agent; so, invoked by a schedule, the function lists
every RUNNING task of ``ECS_CLUSTERS`` (all clusters when empty) with the health ECS reports
(ListTasks; DescribeTasks, 100 a call), computes each task's records with the event path's
rules and the health gate (:mod:`ecssd_agent.core.task_gate`), points a missing fixed record
at the newest task of ``TASK_GROUP``, and plans it all against one read of the names those
records can be at (by name, or the whole zone when that is fewer pages). It adds what is
missing and withdraws what the gate no longer allows (an UNHEALTHY container; a starting one
where a proven instance now answers). It deletes only record sets of tasks it has just
described as running: a task gone for good is the health sweep's, which has the evidence.

Just before it writes, it asks ECS again about every task it would add records for, and once
more after (:mod:`.recheck`): a task that stopped meanwhile keeps nothing, even when its
STOPPED event was handled in between. One batch for every task; task by task when Route 53
keeps refusing it, so one task's conflict never keeps the others unregistered. A task whose
state is not known well enough is skipped and logged, and nothing of it changes; a cluster
whose ECS reads fail is skipped, and the run raises :class:`ReconcileIncomplete` once the
rest is applied.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.core import naming, ownership
from ecssd_agent.core import task_records as tr
from ecssd_agent.core.ecs_task import Phase, Task
from ecssd_agent.core.model import Change, RecordSet
from ecssd_agent.core.ownership import Owns
from ecssd_agent.core.plan import plan
from ecssd_agent.core.task_gate import gated, unanswered
from ecssd_agent.events.handle import TaskEvents, TaskStateUnknown
from ecssd_agent.events.recheck import added_for, describe_now
from ecssd_agent.sync.reconcile import NotConverged, converge, first_then
from ecssd_agent.sync.zone_reads import (
    MAX_ITEMS,
    records_at,
    records_under,
    zone_record_count,
)

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


@dataclass
class _Plan:
    """What one run decides: the running tasks' records by health (``tasks``), the tasks
    found leaving just before the write (``leaving``: they keep nothing), the fixed record
    to add (if any), and the names read with what the zone holds there."""

    tasks: list[tr.TaskRecords]
    names: frozenset[str]
    listing: list[RecordSet]
    leaving: list[tr.TaskRecords] = field(default_factory=list)
    fixed: RecordSet | None = None
    fixed_name: str | None = None

    def desired(self) -> list[RecordSet]:
        out = [r for r in gated(self.tasks, self.listing, self.owns()) if r.name in self.names]
        return out + ([self.fixed] if self.fixed else [])

    def owns(self, among: Iterable[str] | None = None) -> Owns:
        """The record sets this run may change, at the names it read: those of its tasks
        (the tasks with ids ``among``: all when None), and at the fixed name only the record
        set it adds."""
        every = among is None
        ids = set(among or ())
        mine = ownership.owned_by_these_tasks((t.task.cluster, t.task.id)
                                              for t in (*self.tasks, *self.leaving)
                                              if every or t.task.id in ids)
        fixed_key = self.fixed.key if self.fixed else None
        fixed_owner = _owner_id(self.fixed)

        def owns(record: RecordSet) -> bool:
            if record.name not in self.names:
                return False
            if record.name == self.fixed_name:
                return record.key == fixed_key and (every or fixed_owner in ids)
            return mine(record)

        return owns

    def units(self) -> list[str]:
        """The task ids to apply one by one when a batch of all keeps being refused."""
        ids = [t.task.id for t in (*self.tasks, *self.leaving)]
        fixed_owner = _owner_id(self.fixed)
        return ids + ([fixed_owner] if fixed_owner and fixed_owner not in ids else [])


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


def _records(events: TaskEvents, cluster: str, tasks: Sequence[Task],
             tally: _Tally) -> list[tr.TaskRecords]:
    """The record sets of the running tasks of one cluster that declare services this
    function registers. Raises EcsReadError when the cluster's hosts cannot be read."""
    config = events.config
    if config.service_records and config.bridge_records and tasks:
        # the hosts of bridge/host-mode tasks, 100 a call rather than one by one
        events.know_hosts(cluster, (t.container_instance_arn for t in tasks if not t.eni_ip))
    found: list[tr.TaskRecords] = []
    for task in tasks:
        record = _task_records(events, task, tally)
        if record is not None:
            found.append(record)
    return found


def _task_records(events: TaskEvents, task: Task, tally: _Tally) -> tr.TaskRecords | None:
    """One task's record sets; None when it declares nothing of ours or is not known well
    enough (then nothing of it is changed)."""
    extra = {"task": task.id, "cluster": task.cluster, "task_version": task.version}
    try:
        definition = events.declared(task, extra)
        return None if definition is None else events.records_of(task, definition, extra)
    except (ecs_api.EcsReadError, TaskStateUnknown) as exc:
        tally.skipped.append(f"{task.id}: {exc}")
        log.warning("skipped task %s: %s", task.id, exc, extra=extra)
        return None


def _fixed(events: TaskEvents, tasks: Iterable[Task], listing: Sequence[RecordSet],
           tally: _Tally) -> RecordSet | None:
    """``RR_NAME`` -> the newest running task of ``TASK_GROUP``, only when no A record set is
    at that name: a name held by a task (or by hand) is left to the event path and the
    sweep, which know who should hold it."""
    config = events.config
    name = events.fixed_name
    if any(r.name == name and r.type == "A" for r in listing):
        return None
    newest = tr.newest(t for t in tasks if t.group == config.task_group)
    if newest is None:
        return None
    try:
        record = events.fixed_record_for(newest)
    except (ecs_api.EcsReadError, TaskStateUnknown) as exc:
        tally.skipped.append(f"{newest.id}: {exc}")
        log.warning("fixed record %s: skipped task %s: %s", name, newest.id, exc)
        return None
    log.info("reconcile: fixed record %s is missing; pointing it at task %s", name, newest.id)
    return record


def _recheck(events: TaskEvents, planned: _Plan, running: Sequence[Task],
             tally: _Tally) -> _Plan:
    """Ask ECS again, just before writing, about every task the plan adds records for: one
    that is leaving now keeps nothing; one still running is planned with its health as
    reported now; one ECS cannot describe now is left as it is."""
    adding = added_for(plan(planned.listing, planned.desired(), planned.owns()))
    if not adding:
        return planned
    by_id = {t.id: t for t in running}
    try:
        now = describe_now(events.ecs, [by_id[i] for i in sorted(adding) if i in by_id])
    except ecs_api.EcsReadError as exc:
        tally.skipped.append(f"tasks {', '.join(sorted(adding))}: not checked again: {exc}")
        log.warning("reconcile: the tasks to register could not be checked again (%s); "
                    "they are left as they are", exc)
        unchecked = _owner_id(planned.fixed) in adding
        return replace(planned, tasks=[t for t in planned.tasks if t.task.id not in adding],
                       fixed=None if unchecked else planned.fixed)
    kept: list[tr.TaskRecords] = []
    leaving: list[tr.TaskRecords] = []
    for records in planned.tasks:
        task_id = records.task.id
        if task_id not in adding:
            kept.append(records)
        elif task_id in now.leaving:
            leaving.append(records)
        elif task_id in now.running:
            fresh = _task_records(events, now.running[task_id], tally)
            if fresh is not None:
                kept.append(fresh)
        else:
            tally.skipped.append(f"{task_id}: ECS gave no description when checked again")
    if leaving:
        log.info("reconcile: task(s) %s stopped since they were listed: their records go",
                 ", ".join(t.task.id for t in leaving))
    fixed = planned.fixed
    if fixed is not None and _owner_id(planned.fixed) not in now.running:
        fixed = None  # the event path repoints it when its task has stopped
    return replace(planned, tasks=kept, leaving=leaving, fixed=fixed)


def _owner_id(record: RecordSet | None) -> str:
    """The id of the task owning ``record`` ("" for none)."""
    owner = ownership.owner_of(record) if record is not None else None
    return owner.task if owner else ""


def _apply(events: TaskEvents, planned: _Plan, zone_records: int | None,
           tally: _Tally) -> tuple[list[Change], int]:
    """Apply the plan for every task at once; task by task when Route 53 keeps refusing
    that batch. Returns the changes applied and the change requests made."""
    zone, dry_run = events.zone, events.config.dry_run
    desired = planned.desired()

    def reread() -> list[RecordSet]:
        return records_at(zone, planned.names, zone_records).records

    try:
        outcome = converge(zone, desired, planned.owns(),
                           read=first_then(planned.listing, reread), dry_run=dry_run)
        return outcome.changes, outcome.requests
    except NotConverged as exc:
        log.warning("reconcile: Route 53 refused the batch of every task (%s); applying the "
                    "tasks one by one", exc)
    changes: list[Change] = []
    requests = 0
    listing = reread()
    for task_id in planned.units():
        owns = planned.owns([task_id])
        try:
            outcome = converge(zone, [r for r in desired if owns(r)], owns,
                               read=first_then(listing, reread), dry_run=dry_run)
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


class Scope(str, Enum):
    """What a reconcile run covers; the schedule's event says which (``detail.reconcile``)."""

    FULL = "full"  # every running task's records, read at all their names
    HEALTH = "health"  # the tasks whose publication the health ECS reports now contradicts


def scope_of(event: Mapping[str, Any]) -> Scope:
    """The scope a schedule's event asks for: ``{"detail": {"reconcile": "health"}}`` is
    the health follow-up, anything else the full reconcile."""
    detail = event.get("detail")
    wanted = detail.get("reconcile") if isinstance(detail, Mapping) else None
    return Scope.HEALTH if wanted == Scope.HEALTH.value else Scope.FULL


def _full(events: TaskEvents, tasks: list[tr.TaskRecords], running: Sequence[Task],
          fixed: bool, tally: _Tally) -> tuple[_Plan, int | None]:
    """Every task at every name its records can be at, read the cheaper way: by name, or
    the whole zone when that is fewer pages (its size costs one GetHostedZone). By name,
    the tasks' own names cost a page per 300 (they sort together, under ``task.<zone>``)
    and every other name one request."""
    zone = events.zone
    names = frozenset().union(*(t.names for t in tasks), {events.fixed_name} if fixed else set())
    anchors = {t.anchor.name for t in tasks}
    estimate = -(-len(anchors) // MAX_ITEMS) + 1 + len(names - anchors)
    zone_records = zone_record_count(zone)
    listing = records_at(zone, names, zone_records, estimate).records
    planned = _Plan(tasks, names, listing,
                    fixed_name=events.fixed_name if events.config.fixed_record else None)
    if fixed:
        planned.fixed = _fixed(events, running, listing, tally)
    return planned, zone_records


def _health(events: TaskEvents, tasks: list[tr.TaskRecords]) -> tuple[_Plan, int | None]:
    """Only the tasks whose health contradicts what is published, told by their own A
    records alone (``*.task.<zone>``: a task has one exactly while it has records): one
    read of that subtree, then the names of those tasks. Proven and not published (a
    container turned HEALTHY, or an event was lost), published with an UNHEALTHY container,
    or starting and not published (nothing else may answer for its service). What a full
    run decides beyond that (starting instances giving way to proven ones, records changed
    by hand) waits for it."""
    zone = events.zone
    parent = tr.task_names_parent(zone.zone.name)
    anchors = records_under(zone, parent)
    published = {o.task for r in anchors.records
                 if (o := ownership.owner_of(r)) is not None and o.kind is ownership.Kind.TASK}
    chosen = [t for t in tasks if _contradicted(t, t.task.id in published)]
    names = frozenset().union(*(t.names for t in chosen))
    rest = {n for n in names if not n.endswith("." + parent)}  # the subtree was read whole
    listing = [r for r in anchors.records if r.name in names]
    if rest:
        listing += records_at(zone, rest).records
    return _Plan(chosen, names, listing), None


def _contradicted(task: tr.TaskRecords, published: bool) -> bool:
    if published:
        return bool(task.failing)
    return bool(task.proven or task.starting)


def run(events: TaskEvents, scope: Scope = Scope.FULL) -> dict[str, Any]:
    """One reconcile over every cluster; returns a summary (raises ReconcileIncomplete)."""
    config = events.config
    if not config.service_records and not config.fixed_record:
        log.info("reconcile: nothing to do (SERVICE_RECORDS=false, no RR_NAME)")
        return {"status": "ignored", "reason": "no records to keep"}
    tally = _Tally()
    running: list[Task] = []
    tasks: list[tr.TaskRecords] = []
    for cluster in _clusters(events):
        tally.clusters += 1
        try:
            listed = running_tasks(events.ecs, cluster, tally)
            tasks += _records(events, cluster, listed, tally)
        except ecs_api.EcsReadError as exc:
            tally.errors.append(str(exc))
            log.error("reconcile: cluster %s skipped: %s", cluster, exc,
                      extra={"cluster": cluster})
            continue
        running += listed
    tally.running = len(running)

    changes: list[Change] = []
    requests = 0
    fixed = (scope is Scope.FULL and config.fixed_record
             and any(t.group == config.task_group for t in running))
    if tasks or fixed:  # otherwise spare the zone read: Route 53 is the scarce API
        planned, zone_records = (_full(events, tasks, running, fixed, tally)
                                 if scope is Scope.FULL else _health(events, tasks))
        planned = _recheck(events, planned, running, tally)
        desired = planned.desired()
        tally.with_records = len({o.task for r in desired if r is not planned.fixed
                                  and (o := ownership.owner_of(r)) is not None})
        for name in unanswered(planned.tasks, desired):
            log.info("reconcile: %s: published before its health check passed (nothing "
                     "else answers there)", name)
        changes, requests = _apply(events, planned, zone_records, tally)
        changes += events.take_back(changes, planned.tasks, {})
    summary = {
        "status": "ok", "reason": "reconcile", "scope": scope.value,
        "clusters": tally.clusters,
        "running": tally.running, "with_records": tally.with_records,
        "skipped": tally.skipped, "errors": tally.errors, "changes": len(changes),
        "requests": requests, "records": [c.record.describe() for c in changes],
        "actions": [c.action.value for c in changes],
    }
    log.info("reconcile (%s): %d running task(s) in %d cluster(s), %d with records; %d "
             "change(s) in %d change request(s)", scope.value, tally.running, tally.clusters,
             tally.with_records, len(changes), requests,
             extra={k: summary[k] for k in ("running", "with_records", "changes", "requests")})
    if tally.errors:
        raise ReconcileIncomplete("; ".join(tally.errors))
    return summary

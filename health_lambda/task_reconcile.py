"""The task-events Lambda's periodic reconcile: RUNNING tasks without their records get them.

Why: EventBridge hands each "ECS Task State Change" event to the Lambda asynchronously, and
an event can still be lost after Lambda's retries (it then lands in the on-failure queue of
the stack). An ``awsvpc``/Fargate task has no host agent to register it, so a lost RUNNING
event would leave it without records for as long as it runs. The same function is therefore
also invoked by an EventBridge schedule (the health sweep's period), and then:

1. lists the RUNNING tasks of ``ECS_CLUSTERS`` (every cluster when empty) through
   paginators, and describes them 100 at a time;
2. computes each running task's desired records with the event path's own code
   (:meth:`health_lambda.task_events.TaskEvents.desired_records`: the same task parser,
   task definitions cached by ARN, the same ``SERVICE_<port>_NAME`` rules);
3. plans them against one zone listing, owning exactly the keys of those desired record
   sets, and applies the result in as few ChangeResourceRecordSets requests as Route 53's
   limits allow (one for many tasks; never one per record).

It only adds what is missing (or corrects a value that differs): because it owns nothing but
the record sets it wants, the plan can never delete a record. Records of stopped tasks are
removed by the event path and by the health sweep, which have the evidence for it.

Errors: a task whose state is not known well enough (no ENI address yet, a malformed
description) is skipped and logged; it is looked at again next period. A failed ECS call
for a cluster skips that cluster, the others are still reconciled, and the run then raises
:class:`ReconcileIncomplete`, so the failure shows in the function's error metric and its
on-failure queue. A Route 53 error raises (after botocore's retries): nothing was decided on
it, and the next period starts from a fresh read. A task that stops between the listing and
the write can get its records back for a moment; the health sweep deletes records of tasks
that are gone, as it does for the same window of the event path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ecssd_agent import naming
from ecssd_agent import task_records as tr
from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.model import RecordSet
from ecssd_agent.reconcile import converge
from health_lambda.task_events import TaskEvents, TaskStateUnknown

log = logging.getLogger(__name__)

class ReconcileIncomplete(RuntimeError):
    """Some clusters could not be read: what could be was applied; Lambda reports a failure."""


@dataclass
class _Tally:
    clusters: int = 0
    running: int = 0  # RUNNING tasks described
    with_records: int = 0  # of them, tasks that should have records
    skipped: list[str] = field(default_factory=list)  # "<task>: why"
    errors: list[str] = field(default_factory=list)  # clusters that could not be read


def running_tasks(ecs: Any, cluster: str, tally: _Tally) -> list[tr.Task]:
    """The cluster's tasks that run and are meant to (ListTasks, then DescribeTasks by 100).

    Raises EcsReadError. A description the parser refuses is skipped, named in ``tally``.
    """
    arns = ecs_api.list_tasks(ecs, cluster, "RUNNING")
    tasks = []
    for document in ecs_api.describe_task_documents(ecs, cluster, arns) if arns else []:
        try:
            task = tr.parse_task(document)
        except tr.MalformedEvent as exc:
            tally.skipped.append(f"{cluster}: {exc}")
            log.warning("skipped a task of cluster %s: %s", cluster, exc)
            continue
        if task.phase is tr.Phase.REGISTER:
            tasks.append(task)
    return tasks


def _desired(events: TaskEvents, cluster: str, tally: _Tally) -> list[RecordSet]:
    """The desired records of the cluster's running tasks. Raises EcsReadError when the
    cluster's tasks cannot be listed or described."""
    tasks = running_tasks(events.ecs, cluster, tally)
    tally.running += len(tasks)
    if events.config.bridge_records:  # hosts of bridge/host-mode tasks, 100 a call
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


def _clusters(events: TaskEvents) -> Sequence[str]:
    if events.config.clusters:
        return events.config.clusters
    return [naming.cluster_name(arn) for arn in ecs_api.list_clusters(events.ecs)]


def run(events: TaskEvents) -> dict[str, Any]:
    """One reconcile over every cluster; returns a summary (raises ReconcileIncomplete)."""
    if not events.config.service_records:
        log.info("reconcile: nothing to do (SERVICE_RECORDS=false)")
        return {"status": "ignored", "reason": "service records are off"}
    tally = _Tally()
    desired: list[RecordSet] = []
    for cluster in _clusters(events):
        tally.clusters += 1
        try:
            desired += _desired(events, cluster, tally)
        except ecs_api.EcsReadError as exc:
            tally.errors.append(str(exc))
            log.error("reconcile: cluster %s skipped: %s", cluster, exc,
                      extra={"cluster": cluster})

    changes, requests = [], 0
    if desired:  # no task asks for records: spare the zone read
        keys = {record.key for record in desired}
        outcome = converge(events.zone, desired, lambda record: record.key in keys,
                           dry_run=events.config.dry_run)
        changes, requests = outcome.changes, outcome.requests
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

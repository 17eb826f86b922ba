"""One "ECS Task State Change" event -> the task's records in Route 53, level-triggered.

EventBridge delivers at least once and in any order, so an event is never applied as a delta:
the task's *current* state and health are read (DescribeTasks: the event carries no health,
and a late RUNNING event of a stopped task removes rather than resurrects), then only the
names the task's records can be at (name-scoped reads), and :func:`ecssd_agent.sync.reconcile.
converge` applies what differs; a duplicate event sends no change request. What a task
publishes is :mod:`ecssd_agent.core.task_records` through the health gate
(:mod:`ecssd_agent.core.task_gate`). When a service's task leaves, the service's other
running tasks are read too, so replacements that turned HEALTHY since their own event are
published in the same change. The fixed record (``RR_NAME``: one A record set pointing at the
newest running task of ``TASK_GROUP``) is taken over by a RUNNING task unless its holder
still runs and provably started later, and on removal repointed or deleted only if the
leaving task holds it. An event it cannot act on is answered with a summary; an AWS error or
a state ECS cannot tell yet raises (:class:`TaskStateUnknown`), so Lambda retries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core import naming, ownership
from ecssd_agent.core import task_records as tr
from ecssd_agent.core.ecs_task import Phase, Task, TaskContainer, TaskDefinition, network_mode
from ecssd_agent.core.model import Change, RecordSet
from ecssd_agent.core.ownership import Owns
from ecssd_agent.core.task_gate import gated, unanswered
from ecssd_agent.events.recheck import added_for, describe_now
from ecssd_agent.events.settings import TaskEventSettings
from ecssd_agent.sync.reconcile import converge, first_then
from ecssd_agent.sync.zone_reads import owned_records_by_names

log = logging.getLogger(__name__)


class TaskStateUnknown(RuntimeError):
    """What we need to know about a task or its host cannot be known now: retry the event."""


@dataclass
class TaskEventsRuntime:
    """What one Lambda execution environment keeps between events: its settings, clients,
    the zone (found once) and the task definitions (cached by ARN: a registered revision
    never changes), so a warm invocation costs a DescribeTasks and a read of a few names."""

    config: TaskEventSettings
    clients: Clients
    zone: Route53Zone | None = None
    definitions: ecs_api.TaskDefinitions = field(default_factory=ecs_api.TaskDefinitions)

    def hosted_zone(self) -> Route53Zone:
        if self.zone is None:
            client = self.clients.client("route53")
            found = find_zone(client, self.config.domain, self.config.hosted_zone_id or None,
                              self.config.vpc_id or None)
            self.zone = Route53Zone(client, found, comment="ecssd task events")
        return self.zone

    def task_definition(self, arn: str, cluster: str) -> TaskDefinition:
        return self.definitions.get(self.clients.client("ecs"), arn, cluster)


# --- the event ---------------------------------------------------------------------------

SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Task State Change"
SCHEDULE_SOURCE = "aws.events"  # an EventBridge schedule's invocation: the periodic reconcile
SCHEDULE_DETAIL_TYPE = "Scheduled Event"


class MalformedEvent(ValueError):
    """An event this Lambda cannot act on; the message says why (naming the field)."""


def is_schedule(event: Any) -> bool:
    """Whether ``event`` is an EventBridge schedule's invocation (not a task state change)."""
    return (isinstance(event, Mapping) and event.get("source") == SCHEDULE_SOURCE
            and event.get("detail-type") == SCHEDULE_DETAIL_TYPE)


def parse_event(event: Any) -> Task:
    """An EventBridge "ECS Task State Change" event -> its task; else :class:`MalformedEvent`."""
    if not isinstance(event, Mapping):
        raise MalformedEvent(f"the event is not an object: {event!r:.60}")
    if event.get("source") != SOURCE or event.get("detail-type") != DETAIL_TYPE:
        raise MalformedEvent(
            f"not an {DETAIL_TYPE!r} event from {SOURCE} "
            f"(source={event.get('source')!r:.60}, detail-type={event.get('detail-type')!r:.60})")
    if event.get("detail") is None:
        raise MalformedEvent("the event has no 'detail' object")
    try:
        return ecs_api.parse_task(event["detail"], "detail")
    except ecs_api.MalformedTask as exc:
        raise MalformedEvent(str(exc)) from None


# --- the handling ------------------------------------------------------------------------

def _summary(status: str, reason: str, task: Task | None = None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"status": status, "reason": reason}
    if task is not None:
        out.update(task=task.id, cluster=task.cluster, last_status=task.last_status,
                   desired_status=task.desired_status)
    out.update(more)
    return out


def _described_health(task: Task, found: Task) -> tuple[TaskContainer, ...]:
    """The event's containers with the health DescribeTasks reports: ECS sends no health in
    a task state change event, nor an event when a container's health changes."""
    now = {c.name: c.health_status for c in found.containers}
    return tuple(replace(c, health_status=now.get(c.name, "")) for c in task.containers)


def _names_to_complete(siblings: Sequence[tr.TaskRecords], desired: Sequence[RecordSet],
                       listing: Sequence[RecordSet], read: set[str]) -> set[str]:
    """The names still to read for the siblings whose record sets change: those at names
    already read differ from what they should be. A sibling whose record sets there are as
    they should be is left alone everywhere (its own name is not read)."""
    more: set[str] = set()
    for sibling in siblings:
        mine = ownership.owned_by_task(sibling.task.cluster, sibling.task.id)
        want = {r.key: r for r in desired if r.name in read and mine(r)}
        have = {r.key: r for r in listing if mine(r)}
        if want != have:
            more |= sibling.names - read
    return more


class TaskEvents:
    """Handles events with one runtime's settings, clients and caches."""

    def __init__(self, rt: TaskEventsRuntime) -> None:
        self.rt = rt
        self.config = rt.config
        self._hosts: dict[str, str] = {}  # container instance ARN -> private IP, this event

    @property
    def ecs(self) -> Any:
        return self.rt.clients.client("ecs")

    def handle(self, event: Any) -> dict[str, Any]:
        event_id = event.get("id", "") if isinstance(event, Mapping) else ""
        try:
            task = parse_event(event)
        except MalformedEvent as exc:
            log.warning("ignored an event: %s", exc, extra={"event_id": event_id})
            return _summary("ignored", f"malformed: {exc}")
        extra = {"event_id": event_id, "task": task.id, "cluster": task.cluster,
                 "task_version": task.version}
        if not self.config.watches(task.cluster):
            log.info("ignored: cluster %s is not in ECS_CLUSTERS", task.cluster, extra=extra)
            return _summary("ignored", "other cluster", task)
        fixed = self.config.fixed_record and task.group == self.config.task_group
        if not fixed and not self.config.service_records:
            log.info("ignored: task group %r is not TASK_GROUP", task.group, extra=extra)
            return _summary("ignored", "other group", task)
        if task.phase is Phase.WAIT:
            log.debug("nothing to do until the task runs", extra=extra)
            return _summary("ignored", f"task is {task.last_status}", task)

        if task.phase is Phase.REGISTER:
            confirmed = self._confirm_running(task, extra)
            if isinstance(confirmed, dict):
                return confirmed
            task = confirmed
        return self._reconcile(task, fixed, extra)

    def _confirm_running(self, task: Task, extra: Mapping[str, Any]) -> Task | dict[str, Any]:
        """The task as ECS describes it now: a RUNNING event may be late or duplicated.

        Returns the task to act on (REMOVE phase if it has stopped since), or a summary when
        there is nothing to do. Raises when ECS cannot tell (Lambda retries).
        """
        described = ecs_api.describe_tasks(self.ecs, task.cluster, [task.arn])
        if task.id in described.missing:
            log.info("ignored: ECS no longer knows the task", extra=extra)
            return _summary("ignored", "task is gone", task)
        found = described.tasks.get(task.id)
        if found is None:
            raise TaskStateUnknown(f"DescribeTasks gave no answer for task {task.id}: "
                                   f"{described.failures.get(task.id, 'no failure reason')}")
        if found.version and task.version and found.version < task.version:
            raise TaskStateUnknown(
                f"DescribeTasks shows task {task.id} at version {found.version}, older than "
                f"the event's {task.version}: ECS has not caught up yet")
        now = replace(task, last_status=found.last_status, desired_status=found.desired_status,
                      containers=_described_health(task, found),
                      started_at=task.started_at or found.started_at,
                      created_at=task.created_at or found.created_at,
                      eni_ips=task.eni_ips or found.eni_ips,
                      container_instance_arn=task.container_instance_arn
                      or found.container_instance_arn)
        if now.phase is Phase.REMOVE:
            log.info("a stale RUNNING event: the task is %s now; removing its records",
                     found.last_status, extra=extra)
        elif now.phase is Phase.WAIT:
            return _summary("ignored", f"task is {found.last_status} now", task)
        return now

    # -- what the task should have ----------------------------------------------------

    def _host_ip(self, task: Task) -> str:
        """The private IP of the EC2 instance a bridge/host-mode task runs on."""
        arn = task.container_instance_arn
        if not arn:
            raise TaskStateUnknown(f"task {task.id} runs on no container instance and has no ENI")
        if arn not in self._hosts:
            hosts = ecs_api.instance_hosts(self.ecs, self.rt.clients.client("ec2"), task.cluster,
                                           [arn])
            host = hosts.get(arn)
            if host is None or not host.private_ip:
                raise TaskStateUnknown(f"no private IP known for container instance {arn} of "
                                       f"task {task.id}")
            self._hosts[arn] = host.private_ip
        return self._hosts[arn]

    def _address(self, task: Task, mode: str) -> str:
        """Where clients reach the task: its ENI (awsvpc), else its host. Raises when unknown."""
        if mode != "awsvpc":
            return self._host_ip(task)
        if not task.eni_ip:
            raise TaskStateUnknown(f"awsvpc task {task.id} shows no ENI address")
        return task.eni_ip

    def records_of(self, task: Task, definition: TaskDefinition,
                   extra: Mapping[str, Any]) -> tr.TaskRecords:
        """A running task's record sets by container health (raises TaskStateUnknown when
        its address is not known); a service it cannot register is logged and skipped."""
        found, problems = tr.task_records(
            task, definition, self._address(task, network_mode(task, definition)),
            self.zone.zone.name, self.config.routing, self.config.ttl,
            health_gate=self.config.health_gate)
        for problem in problems:
            log.warning("skipped %s", problem, extra={**extra, "variable": problem.variable})
        return found

    @property
    def zone(self) -> Route53Zone:
        return self.rt.hosted_zone()

    # -- reconcile ---------------------------------------------------------------------

    def declared(self, task: Task, extra: Mapping[str, Any]) -> TaskDefinition | None:
        """The task's definition when it declares services this function registers, else None."""
        if not self.config.service_records or not task.task_definition_arn:
            return None
        definition = self.rt.task_definition(task.task_definition_arn, task.cluster)
        if not tr.declares_services(task, definition):
            return None
        if not self.config.bridge_records and network_mode(task, definition) != "awsvpc":
            log.debug("bridge/host-mode task left to the host agent (BRIDGE_RECORDS=false)",
                     extra=extra)
            return None
        return definition

    def know_hosts(self, cluster: str, container_instance_arns: Iterable[str]) -> None:
        """Look up many container instances' IPs at once (DescribeContainerInstances 100 a
        call) instead of one by one as tasks need them. Raises EcsReadError."""
        wanted = sorted({a for a in container_instance_arns if a and a not in self._hosts})
        if wanted:
            hosts = ecs_api.instance_hosts(self.ecs, self.rt.clients.client("ec2"), cluster, wanted)
            self._hosts.update({arn: h.private_ip for arn, h in hosts.items() if h.private_ip})

    def read(self, names: Iterable[str]) -> list[RecordSet]:
        """Every record set at ``names`` (name-scoped: one request per name or page)."""
        return owned_records_by_names(self.zone, names).records

    def _reconcile(self, task: Task, fixed: bool, extra: Mapping[str, Any]) -> dict[str, Any]:
        definition = self.declared(task, extra)
        if definition is None and not fixed:  # spares the zone read: Route 53 is the scarce API
            log.debug("no records to keep for the task", extra=extra)
            return _summary("ignored", "no services declared", task)

        zone = self.zone
        own = ownership.owned_by_task(task.cluster, task.id)
        names, listing = self._read_for(task, definition, fixed, own)
        candidates: list[tr.TaskRecords] = []
        if definition is not None and task.phase is Phase.REGISTER:
            candidates.append(self.records_of(task, definition, extra))
        siblings: list[tr.TaskRecords] = []
        if (definition is not None and task.phase is Phase.REMOVE and self.config.health_gate
                and task.service_name and any(own(r) for r in listing)):
            siblings = self.siblings(task, extra)
        deciding = ownership.owned_by_these_tasks(
            [(task.cluster, task.id), *((s.task.cluster, s.task.id) for s in siblings)])
        desired = gated([*candidates, *siblings], listing, deciding)
        more = _names_to_complete(siblings, desired, listing, names)
        if more:
            listing += self.read(more)
            names |= more
        owns: Owns = ownership.either(own, self._owned_but_fixed(siblings))
        if fixed:
            fixed_desired, fixed_owns = self._fixed(task, listing, extra)
            desired += fixed_desired
            if fixed_owns is not None:
                owns = ownership.either(owns, fixed_owns)
        read = frozenset(names)
        desired = [r for r in desired if r.name in read]
        for name in unanswered([*candidates, *siblings], desired):
            log.info("%s: published before its health check passed (nothing else answers "
                     "there)", name, extra=extra)

        outcome = converge(zone, desired, lambda r: r.name in read and owns(r),
                           read=first_then(listing, lambda: self.read(read)),
                           dry_run=self.config.dry_run)
        changes = outcome.changes + self.take_back(outcome.changes,
                                                   [*candidates, *siblings], extra)
        log.info("%s task %s: %d change(s) in %d change request(s)%s", task.phase.value,
                 task.id, len(changes), outcome.requests,
                 f", {len(siblings)} other task(s) of its service read" if siblings else "",
                 extra={**extra, "changes": len(changes), "requests": outcome.requests})
        return _summary("ok", task.phase.value, task, changes=len(changes),
                        requests=outcome.requests,
                        records=[c.record.describe() for c in changes],
                        actions=[c.action.value for c in changes])

    def _read_for(self, task: Task, definition: TaskDefinition | None, fixed: bool,
                  own: Owns) -> tuple[set[str], list[RecordSet]]:
        """The names the event touches, and what the zone holds there.

        A leaving task's own A record is read first: every record set of a task's services
        is published with it and goes with it, so without it there is nothing else of the
        task to read (the later events of a stopping task cost one request each).
        """
        zone_name = self.zone.zone.name
        names = set(tr.record_names(task, definition, zone_name)) if definition else set()
        first = {self.fixed_name} if fixed else set()
        if definition is not None and task.phase is Phase.REMOVE:
            anchor = tr.task_record_name(task.id, zone_name)
            listing = self.read(first | {anchor})
            if not any(r.name == anchor and own(r) for r in listing):
                return first | {anchor}, listing
            return names | first, listing + self.read(names - {anchor})
        return names | first, self.read(names | first)

    def siblings(self, task: Task, extra: Mapping[str, Any]) -> list[tr.TaskRecords]:
        """The other running tasks of ``task``'s ECS service, with the health ECS reports now
        (ListTasks and DescribeTasks, 100 a call): when a task of a rolling deployment leaves,
        its replacements are published in the same change. A read that fails costs only
        them: the leaving task's records still go."""
        try:
            arns = [a for a in ecs_api.list_tasks(self.ecs, task.cluster, "RUNNING",
                                                  service=task.service_name)
                    if naming.task_id(a) != task.id]
            described = (ecs_api.describe_tasks(self.ecs, task.cluster, arns) if arns
                         else ecs_api.DescribedTasks())
            running = [t for t in described.tasks.values()
                       if t.phase is Phase.REGISTER and t.group == task.group]
            if self.config.bridge_records:
                self.know_hosts(task.cluster,
                                (t.container_instance_arn for t in running if not t.eni_ip))
        except ecs_api.EcsReadError as exc:
            log.warning("the other tasks of service %s are not known (%s): they wait for an "
                        "event or the reconcile", task.service_name, exc, extra=extra)
            return []
        found: list[tr.TaskRecords] = []
        for sibling in sorted(running, key=lambda t: t.id):
            try:
                definition = self.declared(sibling, extra)
                if definition is not None:
                    found.append(self.records_of(sibling, definition, extra))
            except (ecs_api.EcsReadError, TaskStateUnknown) as exc:
                log.warning("task %s of service %s left as it is: %s", sibling.id,
                            task.service_name, exc, extra=extra)
        return found

    def _owned_but_fixed(self, tasks: Sequence[tr.TaskRecords]) -> Owns:
        """The record sets of ``tasks``, except a fixed record one of them holds (who holds
        ``RR_NAME`` is decided for the task of the event alone)."""
        owns = ownership.owned_by_these_tasks((t.task.cluster, t.task.id) for t in tasks)
        fixed = self.fixed_name if self.config.fixed_record else None
        return lambda r: r.name != fixed and owns(r)

    @property
    def fixed_name(self) -> str:
        return naming.record_name(self.config.rr_name, self.zone.zone.name)

    def take_back(self, changes: Sequence[Change], written: Sequence[tr.TaskRecords],
                  extra: Mapping[str, Any]) -> list[Change]:
        """After a write: the record sets just added for a task that has stopped meanwhile
        are removed again (see :mod:`ecssd_agent.events.recheck`). An ECS error leaves them:
        unknown is not gone. Returns the changes made."""
        added = added_for(changes)
        tasks = [t for t in written if t.task.id in added]
        if self.config.dry_run or not tasks:
            return []
        try:
            now = describe_now(self.ecs, [t.task for t in tasks])
        except ecs_api.EcsReadError as exc:
            log.warning("could not check that the tasks just registered still run: %s", exc,
                        extra=extra)
            return []
        gone = [t for t in tasks if t.task.id in now.leaving]
        if not gone:
            return []
        names = frozenset().union(*(t.names for t in gone))
        owns = self._owned_but_fixed(gone)
        log.info("task(s) %s stopped while their records were written: removing them",
                 ", ".join(t.task.id for t in gone), extra=extra)
        outcome = converge(self.zone, [], lambda r: r.name in names and owns(r),
                           read=lambda: self.read(names), dry_run=self.config.dry_run)
        return outcome.changes

    # -- the fixed record --------------------------------------------------------------

    def _fixed(self, task: Task, listing: Sequence[RecordSet],
               extra: Mapping[str, Any]) -> tuple[list[RecordSet], Owns | None]:
        """The fixed record's desired state, and the ownership test to plan it with.

        Returns ``([], None)`` when the fixed record is not this event's business (another
        task keeps it); the task's own fixed record set, if any, then goes with its other
        records, because ``owned_by_task`` covers it.
        """
        name = naming.record_name(self.config.rr_name, self.zone.zone.name)
        owns_fixed = ownership.owned_fixed_record(name)
        holders = [owner for r in listing if owns_fixed(r)
                   and (owner := ownership.parse_set_identifier(r.set_identifier)) is not None]
        others = [owner for owner in holders if owner.task != task.id]

        if task.phase is Phase.REGISTER:
            for owner in others:
                holder = self._describe_holder(owner.cluster, owner.task, task)
                if holder is not None and tr.holder_keeps(holder, task):
                    log.info("fixed record %s stays with newer task %s", name, holder.id,
                             extra=extra)
                    return [], None
            return [self.fixed_record_for(task)], owns_fixed

        # REMOVE: only a record set this task holds is ours to remove or repoint.
        if len(holders) == len(others):
            return [], None
        if others:  # someone else serves the name too: just drop ours
            return [], None
        successor = tr.newest(t for t in self._running_in_group(task.cluster)
                              if t.id != task.id)
        if successor is None:
            log.info("fixed record %s removed: no other running task of group %s", name,
                     self.config.task_group, extra=extra)
            return [], owns_fixed
        record = self.fixed_record_for(successor)
        log.info("fixed record %s repointed to task %s", name, successor.id, extra=extra)
        return [record], owns_fixed

    def fixed_record_for(self, task: Task) -> RecordSet:
        """``RR_NAME`` pointed at ``task``; raises TaskStateUnknown when its address is not
        known (also used by the reconcile when no task holds the name)."""
        name = naming.record_name(self.config.rr_name, self.zone.zone.name)
        ip = self._address(task, self._mode(task))
        return tr.fixed_record(name, task, ip, self.config.routing, self.config.ttl)

    def _mode(self, task: Task) -> str:
        """awsvpc when the task has an ENI; otherwise it is reached at its host's address."""
        return "awsvpc" if task.eni_ip or task.launch_type == "FARGATE" else "bridge"

    def _describe_holder(self, owner_cluster: str, owner_task: str, task: Task) -> Task | None:
        """The task holding the fixed record, if it is still running (None: gone or leaving)."""
        cluster = task.cluster if ownership.cluster_matches(owner_cluster, task.cluster) else owner_cluster
        if cluster.startswith("#"):  # a digested cluster name we cannot describe by
            return None
        described = ecs_api.describe_tasks(self.ecs, cluster, [owner_task])
        found = described.tasks.get(owner_task)
        if found is None:
            if owner_task in described.missing:
                return None
            raise TaskStateUnknown(f"DescribeTasks gave no answer for fixed-record holder "
                                   f"{owner_task}: {described.failures.get(owner_task, '?')}")
        return found if found.phase is Phase.REGISTER else None

    def _running_in_group(self, cluster: str) -> list[Task]:
        """Running tasks of TASK_GROUP in the cluster (candidates to serve the fixed name)."""
        arns = ecs_api.list_tasks(self.ecs, cluster, "RUNNING")
        if not arns:
            return []
        described = ecs_api.describe_tasks(self.ecs, cluster, arns)
        return [t for t in described.tasks.values() if t.group == self.config.task_group
                and t.phase is Phase.REGISTER]

"""ECS tasks -> the record sets the task-events Lambda keeps for them. Pure: no I/O.

What a task declares lives in its task definition's container definitions; each is turned
into a :class:`~ecssd_agent.core.model.Container` so that ``SERVICE_<port>_NAME`` is read by
the parser the agent uses (:func:`ecssd_agent.core.metadata.service_instances`).

- Every record set of a task is owned by ``Owner(kind=Kind.TASK, cluster, task, port)``
  (:mod:`ecssd_agent.core.ownership`), so "everything of task X" is an exact SetIdentifier test
  and the health sweep can tell from the SetIdentifier alone which task a record belongs to.
- The task's own A record is ``<task id>.task.<zone>`` -> the task's IP (its ENI address in
  ``awsvpc``, the host's address in bridge/host mode), owner port ``""``. SRV records target
  it, never an agent's host A record, so the Lambda and an agent never write the same record.
- A service ``calc`` gets ``SRV calc.<zone> <priority> <weight> <port> <task id>.task.<zone>.``
  (owner port ``<container port>/<proto>``) and, when clients can reach it at its container
  port (``awsvpc`` and host mode) and the name is a host name (not ``_calc._tcp``), a
  weighted or multivalue ``A calc.<zone>`` -> task IP, one record set per task. The
  ``discovery.service.name`` label declares the first mapped port (or, without one, an A
  record only). In bridge mode the SRV carries the host port ECS bound; no A record.
- The health gate: a container's record sets are grouped by what ECS shows of it
  (:class:`Proof`): proven (no health check, or ``HEALTHY``), starting (a check without a
  verdict: ``UNKNOWN`` or none reported) or ``UNHEALTHY``; which of them are published is
  :mod:`ecssd_agent.core.task_gate`'s decision.
- The fixed record (``RR_NAME``, e.g. ``xray.<zone>``) is one A record set owned by the one
  task serving it, so an older task's STOPPED event can see the record is no longer its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum

from ecssd_agent.core import naming
from ecssd_agent.core.ecs_task import (
    HEALTHY,
    RUNNING,
    STOPPED,
    UNHEALTHY,
    ContainerDefinition,
    Task,
    TaskDefinition,
    network_mode,
)
from ecssd_agent.core.metadata import (
    ECS_CLUSTER,
    ECS_CONTAINER_NAME,
    ECS_TASK_ARN,
    Problem,
    declares_a_name,
    is_true,
    merged_metadata,
    service_instances,
)
from ecssd_agent.core.model import DEFAULT_WEIGHT, Container, RecordSet, Routing
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import routed, srv_value

DISCOVERY_LABEL = "discovery.service.name"
TASK_LEVEL = "task"  # <task id>.task.<zone>


# --- ownership and names -----------------------------------------------------------------

def task_owner(task: Task, port: str = "") -> Owner:
    """The owner of a task's record sets; ``port`` is "" for its A records."""
    return Owner(kind=Kind.TASK, cluster=task.cluster, task=task.id, port=port)


def task_names_parent(zone: str) -> str:
    """``task.<zone>.``: the name every task's own A record is under."""
    return naming.record_name(TASK_LEVEL, zone)


def task_record_name(task_id: str, zone: str) -> str:
    """``<task id>.task.<zone>.``: the per-task A record that SRV records target."""
    return naming.record_name(f"{task_id.lower()}.{TASK_LEVEL}", zone)


# --- the task definition -----------------------------------------------------------------

def _first_port(definition: ContainerDefinition) -> int | None:
    """The container port of a definition's first portMapping."""
    return definition.port_mappings[0].container_port if definition.port_mappings else None


def container_model(task: Task, definition: ContainerDefinition, mode: str) -> Container:
    """A container definition (+ the task's overrides and bindings) as the metadata parser's input.

    In ``awsvpc`` a container port is reachable at the task's IP whether or not a
    portMapping names it: the parser's "host" semantics (the container port is the client
    port). In bridge mode only bound ports are reachable, at their host port, from the
    event's ``networkBindings``.
    """
    name = definition.name
    env = {**definition.environment, **task.env_overrides.get(name, {})}
    labels = dict(definition.labels)
    labels.update({ECS_TASK_ARN: task.arn, ECS_CLUSTER: task.cluster, ECS_CONTAINER_NAME: name})
    running = task.container(name)
    ports: dict[str, tuple[int, ...]] = {}
    if mode == "bridge":
        for binding in running.bindings if running else ():
            key = f"{binding.container_port}/{binding.protocol}"
            ports[key] = tuple(sorted({*ports.get(key, ()), binding.host_port}))
    else:
        for mapping in definition.port_mappings:
            ports[f"{mapping.container_port}/{mapping.protocol}"] = (mapping.container_port,)
    return Container(
        id=(running.runtime_id if running and running.runtime_id else f"{task.id}/{name}"),
        name=name,
        env=env,
        labels=labels,
        ports=ports,
        network_mode="bridge" if mode == "bridge" else "host",
        running=not (running and running.last_status == STOPPED),
    )


class Proof(str, Enum):
    """How sure ECS is that a container serves, for the health gate."""

    UNCHECKED = "unchecked"  # no health check: it serves once it runs
    HEALTHY = "healthy"  # its health check passes
    STARTING = "starting"  # a health check without a verdict yet (UNKNOWN, or not reported)
    UNHEALTHY = "unhealthy"  # its health check fails


def proof(task: Task, definition: ContainerDefinition) -> Proof:
    """What ECS shows of the container of ``definition`` in ``task`` (DescribeTasks: a task
    state change event reports no health)."""
    if not definition.health_check:
        return Proof.UNCHECKED
    running = task.container(definition.name)
    status = running.health_status if running else ""
    if status == HEALTHY:
        return Proof.HEALTHY
    if status == UNHEALTHY:
        return Proof.UNHEALTHY
    return Proof.STARTING


PROVEN = frozenset({Proof.UNCHECKED, Proof.HEALTHY})


def declares_services(task: Task, task_definition: TaskDefinition) -> bool:
    """Whether any container asks for records: decides if a zone read is worth it at all."""
    for definition in task_definition.containers:
        meta = merged_metadata(container_model(task, definition, "awsvpc"))
        if DISCOVERY_LABEL in meta or declares_a_name(meta):
            return True
    return False


# --- desired record sets -----------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    """A record set a container declares, before the task's address is known."""

    container: str  # the container definition's name
    name: str
    type: str  # "SRV" or "A"
    owner: Owner
    weight: int
    value: str | None  # the SRV value; None for an A record (the task's address)


def _is_host_name(name: str) -> bool:
    """``calc`` is a host name an A record suits; ``_calc._tcp`` is an SRV owner name."""
    return not any(label.startswith("_") for label in name.split("."))


def _label_container(container: Container, definition: ContainerDefinition, label: str) -> Container:
    """The ``discovery.service.name`` convention as a SERVICE_<first port>_NAME declaration,
    with that port's SERVICE_<port>_WEIGHT and _PRIORITY if the container declares them."""
    first = _first_port(definition)
    env: dict[str, str] = {}
    if first is not None:
        prefix = f"SERVICE_{first}_"
        declared = merged_metadata(container)
        env = {prefix + key: declared[prefix + key] for key in ("WEIGHT", "PRIORITY")
               if prefix + key in declared}
        env[prefix + "NAME"] = label
    ecs_labels = {k: v for k, v in container.labels.items()
                  if k in (ECS_TASK_ARN, ECS_CLUSTER, ECS_CONTAINER_NAME)}
    return Container(container.id, container.name, env, ecs_labels, container.ports,
                     container.network_mode, container.running)


def _entries(task: Task, task_definition: TaskDefinition,
             zone: str) -> tuple[list[_Entry], list[Problem]]:
    """Every record set the task's containers declare, whatever their health, and the
    problems of the services that cannot be registered."""
    mode = network_mode(task, task_definition)
    target = task_record_name(task.id, zone)
    entries: list[_Entry] = []
    problems: list[Problem] = []
    for definition in task_definition.containers:
        container = container_model(task, definition, mode)
        instances, bad = service_instances(container)
        problems.extend(bad)
        label = container.labels.get(DISCOVERY_LABEL, "").strip().lower()
        label_only_a = False
        if label and container.running and not is_true(merged_metadata(container).get("SERVICE_IGNORE")):
            if definition.port_mappings:
                more, bad = service_instances(_label_container(container, definition, label))
                instances.extend(more)
                problems.extend([p for p in bad if p not in problems])  # one bad weight, one problem
            else:
                label_only_a = True
        for instance in instances:
            try:
                name = naming.record_name(instance.name, zone)
                port = f"{instance.container_port}/{instance.protocol}"
                entries.append(_Entry(definition.name, name, "SRV", task_owner(task, port),
                                      instance.weight, srv_value(instance.port, target,
                                                                 instance.priority,
                                                                 instance.weight)))
                if mode != "bridge" and _is_host_name(instance.name):
                    entries.append(_Entry(definition.name, name, "A", task_owner(task),
                                          instance.weight, None))
            except (naming.InvalidName, ValueError) as exc:
                problems.append(Problem(container.id, container.name,
                                        f"SERVICE_{instance.container_port}_NAME", str(exc)))
        if label_only_a:
            try:
                if mode == "bridge":
                    raise ValueError("bridge mode needs a portMapping to register a service")
                entries.append(_Entry(definition.name, naming.record_name(label, zone), "A",
                                      task_owner(task), DEFAULT_WEIGHT, None))
            except (naming.InvalidName, ValueError) as exc:
                problems.append(Problem(container.id, container.name, DISCOVERY_LABEL, str(exc)))
    return entries, problems


@dataclass(frozen=True)
class TaskRecords:
    """A running task's record sets, by how sure ECS is that their containers serve.

    ``anchor`` is the task's own A record (``<task id>.task.<zone>``, which SRV records
    target): published whenever any other record set of the task is. ``names`` holds every
    name the task can have record sets at, whatever its health: the names to read before
    planning it.
    """

    task: Task
    proven: tuple[RecordSet, ...]  # containers without a health check, or HEALTHY
    starting: tuple[RecordSet, ...]  # health-checked containers without a verdict yet
    failing: tuple[RecordSet, ...]  # UNHEALTHY containers: never published
    anchor: RecordSet
    names: frozenset[str]

    def published(self, with_starting: Iterable[RecordSet] = ()) -> list[RecordSet]:
        """The proven record sets and ``with_starting`` (some of the starting ones), with
        the anchor when there is anything at all."""
        chosen = {r.key: r for r in (*self.proven, *with_starting)}
        if chosen:
            chosen.setdefault(self.anchor.key, self.anchor)
        return sorted(chosen.values(), key=lambda r: r.key)


def _materialise(entries: Iterable[_Entry], ip: str, routing: Routing,
                 ttl: int) -> tuple[RecordSet, ...]:
    records: dict[tuple[str, str, str | None], RecordSet] = {}
    for entry in entries:
        record = routed(entry.name, entry.type, [entry.value if entry.value else ip],
                        entry.owner, routing, ttl, entry.weight)
        records.setdefault(record.key, record)
    return tuple(sorted(records.values(), key=lambda r: r.key))


def task_records(
    task: Task,
    task_definition: TaskDefinition,
    ip: str,
    zone: str,
    routing: Routing,
    ttl: int,
    health_gate: bool = True,
) -> tuple[TaskRecords, list[Problem]]:
    """The record sets a running task's declared services can have, by container
    :func:`proof` (without ``health_gate`` every container counts as proven). ``ip`` is the
    task's address: its ENI IP in awsvpc, the host's private IP in bridge or host mode. A
    service that cannot be registered becomes a problem; the others are kept."""
    entries, problems = _entries(task, task_definition, zone)
    proofs = {d.name: (proof(task, d) if health_gate else Proof.UNCHECKED)
              for d in task_definition.containers}
    target = task_record_name(task.id, zone)
    return TaskRecords(
        task=task,
        proven=_materialise((e for e in entries if proofs[e.container] in PROVEN), ip,
                            routing, ttl),
        starting=_materialise((e for e in entries if proofs[e.container] is Proof.STARTING),
                              ip, routing, ttl),
        failing=_materialise((e for e in entries if proofs[e.container] is Proof.UNHEALTHY),
                             ip, routing, ttl),
        anchor=routed(target, "A", [ip], task_owner(task), routing, ttl),
        names=frozenset({target, *(e.name for e in entries)}),
    ), problems


def record_names(task: Task, task_definition: TaskDefinition, zone: str) -> frozenset[str]:
    """Every name the task's records can be at (its own name and its services'), whatever
    its health, state and address: what a removal reads. A stopped task's containers and
    ports count as they were while it ran (a STOPPED event shows no port bindings)."""
    running = replace(task, containers=tuple(replace(c, last_status=RUNNING)
                                             for c in task.containers))
    every_port = replace(task_definition, network_mode="awsvpc")  # each mapping, as on an ENI
    entries, _ = _entries(running, every_port, zone)
    return frozenset({task_record_name(task.id, zone), *(e.name for e in entries)})


def service_records(
    task: Task,
    task_definition: TaskDefinition,
    ip: str,
    zone: str,
    routing: Routing,
    ttl: int,
    health_gate: bool = True,
) -> tuple[list[RecordSet], list[Problem]]:
    """The record sets a running task should have for the services it declares, by the
    health gate alone: its proven containers' (see :func:`task_records`)."""
    found, problems = task_records(task, task_definition, ip, zone, routing, ttl, health_gate)
    return found.published(), problems


def fixed_record(name: str, task: Task, ip: str, routing: Routing, ttl: int) -> RecordSet:
    """The fixed name (``RR_NAME``) -> ``ip``, owned by ``task``."""
    return routed(name, "A", [ip], task_owner(task), routing, ttl)


# --- who serves the fixed name -----------------------------------------------------------

def _age_key(task: Task) -> tuple[int, datetime, str]:
    """Sort key, newest last: tasks with a start (or create) time after those without."""
    when = task.started_at or task.created_at
    return (1 if when else 0, when or datetime.min.replace(tzinfo=timezone.utc), task.id)


def newest(tasks: Iterable[Task]) -> Task | None:
    """The most recently started task: the one a fixed name should point at."""
    return max(tasks, key=_age_key, default=None)


def holder_keeps(holder: Task | None, candidate: Task) -> bool:
    """Whether the fixed name stays with ``holder`` (a running task) when ``candidate`` runs.

    The holder keeps it only when it provably started after the candidate: a late or
    duplicate RUNNING event of an older task must not take the name back. Without start
    times on both, the RUNNING event is the newest evidence and the candidate takes over.
    """
    if holder is None:
        return False
    if holder.id == candidate.id:
        return True
    held, new = holder.started_at, candidate.started_at
    return held is not None and new is not None and held > new

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
- The health gate: a container whose definition has a health check gets records only while
  ECS shows it ``HEALTHY``; ``UNKNOWN`` and a missing status count as not healthy.
- The fixed record (``RR_NAME``, e.g. ``xray.<zone>``) is one A record set owned by the one
  task serving it, so an older task's STOPPED event can see the record is no longer its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ecssd_agent.core import naming
from ecssd_agent.core.ecs_task import (
    HEALTHY,
    STOPPED,
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


def withheld(task: Task, definition: ContainerDefinition) -> bool:
    """The health gate: a health-checked container not (yet, or no longer) shown HEALTHY."""
    if not definition.health_check:
        return False
    running = task.container(definition.name)
    return running is None or running.health_status != HEALTHY


def declares_services(task: Task, task_definition: TaskDefinition) -> bool:
    """Whether any container asks for records: decides if a zone read is worth it at all."""
    for definition in task_definition.containers:
        meta = merged_metadata(container_model(task, definition, "awsvpc"))
        if DISCOVERY_LABEL in meta or declares_a_name(meta):
            return True
    return False


# --- desired record sets -----------------------------------------------------------------

@dataclass
class _Collector:
    zone: str
    routing: Routing
    ttl: int
    records: dict[tuple[str, str, str | None], RecordSet] = field(default_factory=dict)

    def add(self, name: str, rtype: str, values: Sequence[str], owner: Owner,
            weight: int = DEFAULT_WEIGHT) -> None:
        record = routed(name, rtype, values, owner, self.routing, self.ttl, weight)
        self.records.setdefault(record.key, record)


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


def service_records(
    task: Task,
    task_definition: TaskDefinition,
    ip: str,
    zone: str,
    routing: Routing,
    ttl: int,
    health_gate: bool = True,
) -> tuple[list[RecordSet], list[Problem]]:
    """The record sets a running task should have for the services it declares.

    ``ip`` is the task's address: its ENI IP in awsvpc, the host's private IP in bridge or
    host mode. A service that cannot be registered becomes a problem; the others are kept.
    With ``health_gate``, a container :func:`withheld` declares nothing for now.
    """
    mode = network_mode(task, task_definition)
    target = task_record_name(task.id, zone)
    out = _Collector(zone, routing, ttl)
    problems: list[Problem] = []
    for definition in task_definition.containers:
        if health_gate and withheld(task, definition):
            continue
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
                out.add(name, "SRV",
                        [srv_value(instance.port, target, instance.priority, instance.weight)],
                        task_owner(task, f"{instance.container_port}/{instance.protocol}"),
                        instance.weight)
                if mode != "bridge" and _is_host_name(instance.name):
                    out.add(name, "A", [ip], task_owner(task), instance.weight)
            except (naming.InvalidName, ValueError) as exc:
                problems.append(Problem(container.id, container.name,
                                        f"SERVICE_{instance.container_port}_NAME", str(exc)))
        if label_only_a:
            try:
                if mode == "bridge":
                    raise ValueError("bridge mode needs a portMapping to register a service")
                out.add(naming.record_name(label, zone), "A", [ip], task_owner(task))
            except (naming.InvalidName, ValueError) as exc:
                problems.append(Problem(container.id, container.name, DISCOVERY_LABEL, str(exc)))
    if out.records:
        out.add(target, "A", [ip], task_owner(task))
    return sorted(out.records.values(), key=lambda r: r.key), problems


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

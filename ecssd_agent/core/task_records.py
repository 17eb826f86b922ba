"""ECS tasks -> the record sets the task-events Lambda keeps for them. Pure: no I/O.

A per-host agent sees containers through Docker; the task-events Lambda sees *tasks* through
"ECS Task State Change" events and DescribeTasks, whose task descriptions have one shape
(:func:`parse_task` reads both). What a task declares lives in its task definition's
container definitions, which are turned into :class:`~ecssd_agent.core.model.Container` values so
that ``SERVICE_<port>_NAME`` is read by the very parser the agent uses
(:func:`ecssd_agent.core.metadata.service_instances`), not by a second copy of it.

Names and ownership (see :mod:`ecssd_agent.core.naming` for the SetIdentifier scheme):

- Every record set written for a task is owned by ``Owner(kind="t", cluster, task, port)``,
  so "everything of task X" is an exact SetIdentifier test (:func:`owned_by_task`) and the
  health sweep can tell from the SetIdentifier alone which task a record belongs to.
- The task's own A record is ``<task id>.task.<zone>`` -> the task's IP (its ENI address in
  ``awsvpc``, the host's address in bridge/host mode), owner port ``""``. A task id is 32 hex
  digits (or a 36-character UUID in old ARNs), so the label always fits in 63 characters, and
  the ``task`` level keeps these names apart from service and host names at the zone's top.
  SRV records target it, never the agent's host A record ``<host>.<zone>``, so the Lambda and
  an agent never write the same record set.
- A service ``calc`` gets ``SRV calc.<zone> 1 1 <port> <task id>.task.<zone>.`` (owner port
  ``<container port>/<proto>``) and, when clients can reach it at its container port
  (``awsvpc`` and host mode) and the name is a host name (not ``_calc._tcp``), a weighted
  or multivalue ``A calc.<zone>`` -> task IP (owner port ``""``), one record set per task, as
  the ``discovery.service.name`` agent did. In bridge mode the SRV carries the host port
  from the event's ``networkBindings``; an A record would suggest the container port, so
  none is written.
- The fixed record (``RR_NAME``, e.g. the X-Ray daemon's ``xray.<zone>``) is an A record set
  owned by the one task currently serving it (``Owner(kind="t", cluster, task, port="")``):
  exactly one record set at that name, whose SetIdentifier says which task it points at, so
  a STOPPED event of an older task can see that the record is no longer its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ecssd_agent.core import naming
from ecssd_agent.core.metadata import (
    ECS_CLUSTER,
    ECS_CONTAINER_NAME,
    ECS_TASK_ARN,
    Problem,
    is_true,
    merged_metadata,
    service_instances,
)
from ecssd_agent.core.model import Container, Owner, RecordSet, Routing
from ecssd_agent.core.plan import Owns
from ecssd_agent.core.records import routed, srv_value

SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Task State Change"
RUNNING = "RUNNING"
STOPPED = "STOPPED"
#: lastStatus values after RUNNING: the task is on its way out, its records must go.
LEAVING_STATUSES = frozenset({"DEACTIVATING", "STOPPING", "DEPROVISIONING", STOPPED})
DISCOVERY_LABEL = "discovery.service.name"
TASK_LEVEL = "task"  # <task id>.task.<zone>
ENI_ATTACHMENT_TYPES = frozenset({"eni", "ElasticNetworkInterface"})  # event / DescribeTasks


class MalformedEvent(ValueError):
    """An event (or task description) this Lambda cannot act on; the message says why."""


class Phase(str, Enum):
    """What a task's state asks of us."""

    REGISTER = "register"  # lastStatus and desiredStatus RUNNING
    REMOVE = "remove"  # desiredStatus STOPPED (draining began) or lastStatus past RUNNING
    WAIT = "wait"  # not running yet (PROVISIONING, PENDING, ACTIVATING): nothing to do


@dataclass(frozen=True)
class Binding:
    container_port: int
    host_port: int
    protocol: str  # "tcp" | "udp"


@dataclass(frozen=True)
class TaskContainer:
    name: str
    runtime_id: str = ""
    last_status: str = ""
    bindings: tuple[Binding, ...] = ()


@dataclass(frozen=True)
class Task:
    """The fields of an ECS task description (event detail or DescribeTasks) we act on."""

    arn: str
    id: str
    cluster: str  # the cluster name
    last_status: str
    desired_status: str
    group: str = ""
    launch_type: str = ""
    task_definition_arn: str = ""
    container_instance_arn: str = ""
    eni_ip: str = ""  # the ENI's private IPv4 address (awsvpc, Fargate)
    containers: tuple[TaskContainer, ...] = ()
    env_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    started_at: datetime | None = None
    created_at: datetime | None = None
    version: int | None = None

    @property
    def phase(self) -> Phase:
        if self.desired_status == STOPPED or self.last_status in LEAVING_STATUSES:
            return Phase.REMOVE
        if self.last_status == RUNNING and self.desired_status == RUNNING:
            return Phase.REGISTER
        return Phase.WAIT

    def container(self, name: str) -> TaskContainer | None:
        return next((c for c in self.containers if c.name == name), None)


# --- parsing -----------------------------------------------------------------------------

def _text(data: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise MalformedEvent(f"missing {key!r}")
        return ""
    if not isinstance(value, str):
        raise MalformedEvent(f"{key!r} is not a string: {value!r}")
    return value


def _timestamp(value: Any) -> datetime | None:
    """An event's ISO 8601 string or boto3's datetime -> an aware datetime (None if absent)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _bindings(raw: Any) -> tuple[Binding, ...]:
    found: list[Binding] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, Mapping):
            continue
        container_port, host_port = item.get("containerPort"), item.get("hostPort")
        protocol = str(item.get("protocol") or "tcp").lower()
        if isinstance(container_port, int) and isinstance(host_port, int) and host_port > 0:
            found.append(Binding(container_port, host_port, protocol))
    return tuple(found)


def _eni_ip(detail: Mapping[str, Any]) -> str:
    for attachment in detail.get("attachments") or []:
        if not isinstance(attachment, Mapping) or attachment.get("type") not in ENI_ATTACHMENT_TYPES:
            continue
        for pair in attachment.get("details") or []:
            if isinstance(pair, Mapping) and pair.get("name") == "privateIPv4Address":
                return str(pair.get("value") or "")
    for container in detail.get("containers") or []:  # the same address, per container
        for interface in (container or {}).get("networkInterfaces") or []:
            if isinstance(interface, Mapping) and interface.get("privateIpv4Address"):
                return str(interface["privateIpv4Address"])
    return ""


def _env_overrides(detail: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    overrides = detail.get("overrides")
    out: dict[str, dict[str, str]] = {}
    if not isinstance(overrides, Mapping):
        return out
    for item in overrides.get("containerOverrides") or []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            env = _environment(item.get("environment"))
            if env:
                out[item["name"]] = env
    return out


def _environment(pairs: Any) -> dict[str, str]:
    """ECS's ``[{"name": K, "value": V}, ...]`` -> a dict."""
    env: dict[str, str] = {}
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, Mapping) and isinstance(pair.get("name"), str):
            env[pair["name"]] = str(pair.get("value", ""))
    return env


def parse_task(detail: Mapping[str, Any]) -> Task:
    """A task description (an event's ``detail`` or a DescribeTasks task) -> :class:`Task`."""
    if not isinstance(detail, Mapping):
        raise MalformedEvent("the task description is not an object")
    arn = _text(detail, "taskArn", required=True)
    task = naming.task_id(arn)
    cluster = naming.cluster_name(_text(detail, "clusterArn", required=True))
    if not task or not cluster:
        raise MalformedEvent(f"cannot tell the task id and cluster from {arn!r}")
    containers = []
    for raw in detail.get("containers") or []:
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            containers.append(TaskContainer(
                name=raw["name"],
                runtime_id=str(raw.get("runtimeId") or ""),
                last_status=str(raw.get("lastStatus") or ""),
                bindings=_bindings(raw.get("networkBindings")),
            ))
    version = detail.get("version")
    return Task(
        arn=arn,
        id=task,
        cluster=cluster,
        last_status=_text(detail, "lastStatus", required=True),
        desired_status=_text(detail, "desiredStatus", required=True),
        group=_text(detail, "group"),
        launch_type=_text(detail, "launchType"),
        task_definition_arn=_text(detail, "taskDefinitionArn"),
        container_instance_arn=_text(detail, "containerInstanceArn"),
        eni_ip=_eni_ip(detail),
        containers=tuple(containers),
        env_overrides=_env_overrides(detail),
        started_at=_timestamp(detail.get("startedAt")),
        created_at=_timestamp(detail.get("createdAt")),
        version=version if isinstance(version, int) and not isinstance(version, bool) else None,
    )


def parse_event(event: Any) -> Task:
    """An EventBridge "ECS Task State Change" event -> :class:`Task`; else MalformedEvent."""
    if not isinstance(event, Mapping):
        raise MalformedEvent("the event is not an object")
    if event.get("source") != SOURCE or event.get("detail-type") != DETAIL_TYPE:
        raise MalformedEvent(
            f"not an {DETAIL_TYPE!r} event from {SOURCE} "
            f"(source={event.get('source')!r}, detail-type={event.get('detail-type')!r})"
        )
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedEvent("the event has no 'detail' object")
    return parse_task(detail)


# --- ownership and names -----------------------------------------------------------------

def task_owner(task: Task, port: str = "") -> Owner:
    """The owner of a task's record sets; ``port`` is "" for its A records."""
    return Owner(kind="t", cluster=task.cluster, task=task.id, port=port)


def owned_by_task(cluster: str, task_id: str) -> Owns:
    """Record sets written for this one task (any name, any port)."""

    def owns(record: RecordSet) -> bool:
        owner = naming.parse_set_identifier(record.set_identifier)
        return (owner is not None and owner.kind == "t" and owner.task == task_id
                and naming.cluster_matches(owner.cluster, cluster))

    return owns


def fixed_record_owns(name: str) -> Owns:
    """Record sets of the fixed name written by this Lambda (for whichever task)."""

    def owns(record: RecordSet) -> bool:
        if record.name != name or record.type != "A":
            return False
        owner = naming.parse_set_identifier(record.set_identifier)
        return owner is not None and owner.kind == "t" and not owner.port

    return owns


def either(*tests: Owns) -> Owns:
    def owns(record: RecordSet) -> bool:
        return any(test(record) for test in tests)

    return owns


def task_record_name(task_id: str, zone: str) -> str:
    """``<task id>.task.<zone>.``: the per-task A record that SRV records target."""
    return naming.record_name(f"{task_id.lower()}.{TASK_LEVEL}", zone)


# --- the task definition -----------------------------------------------------------------

def network_mode(task: Task, task_definition: Mapping[str, Any]) -> str:
    """awsvpc, bridge, host or none; Fargate is always awsvpc, EC2's default is bridge."""
    if task.launch_type == "FARGATE":
        return "awsvpc"
    mode = task_definition.get("networkMode")
    return mode if isinstance(mode, str) and mode else "bridge"


def container_definitions(task_definition: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    defs = task_definition.get("containerDefinitions")
    return [d for d in defs if isinstance(d, Mapping) and isinstance(d.get("name"), str)] \
        if isinstance(defs, list) else []


def _port_mappings(definition: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(container port, protocol) of each portMapping, in declaration order."""
    found = []
    for mapping in definition.get("portMappings") or []:
        if isinstance(mapping, Mapping) and isinstance(mapping.get("containerPort"), int):
            found.append((mapping["containerPort"], str(mapping.get("protocol") or "tcp").lower()))
    return found


def container_model(task: Task, definition: Mapping[str, Any], mode: str) -> Container:
    """A container definition (+ the task's overrides and bindings) as the metadata parser's input.

    In ``awsvpc`` a container port is reachable at the task's IP whether or not a
    portMapping names it: the parser's "host" semantics (the container port is the client
    port). In bridge mode only bound ports are reachable, at their host port, from the
    event's ``networkBindings``.
    """
    name = definition["name"]
    env = _environment(definition.get("environment"))
    env.update(task.env_overrides.get(name, {}))
    labels = {str(k): str(v) for k, v in (definition.get("dockerLabels") or {}).items()}
    labels.update({ECS_TASK_ARN: task.arn, ECS_CLUSTER: task.cluster, ECS_CONTAINER_NAME: name})
    running = task.container(name)
    ports: dict[str, tuple[int, ...]] = {}
    if mode == "bridge":
        for binding in running.bindings if running else ():
            key = f"{binding.container_port}/{binding.protocol}"
            ports[key] = tuple(sorted({*ports.get(key, ()), binding.host_port}))
    else:
        for port, protocol in _port_mappings(definition):
            ports[f"{port}/{protocol}"] = (port,)
    return Container(
        id=(running.runtime_id if running and running.runtime_id else f"{task.id}/{name}"),
        name=name,
        env=env,
        labels=labels,
        ports=ports,
        network_mode="bridge" if mode == "bridge" else "host",
        running=not (running and running.last_status == STOPPED),
    )


def declares_services(task: Task, task_definition: Mapping[str, Any]) -> bool:
    """Whether any container asks for records: decides if a zone read is worth it at all."""
    for definition in container_definitions(task_definition):
        keys = set(merged_metadata(container_model(task, definition, "awsvpc")))
        if DISCOVERY_LABEL in keys or any(k.startswith("SERVICE_") and k.endswith("_NAME")
                                          for k in keys):
            return True
    return False


# --- desired record sets -----------------------------------------------------------------

@dataclass
class _Collector:
    zone: str
    routing: Routing
    ttl: int
    records: dict[tuple[str, str, str | None], RecordSet] = field(default_factory=dict)

    def add(self, name: str, rtype: str, values: Sequence[str], owner: Owner) -> None:
        record = routed(name, rtype, values, owner, self.routing, self.ttl)
        self.records.setdefault(record.key, record)


def _is_host_name(name: str) -> bool:
    """``calc`` is a host name an A record suits; ``_calc._tcp`` is an SRV owner name."""
    return not any(label.startswith("_") for label in name.split("."))


def _label_container(container: Container, definition: Mapping[str, Any], label: str) -> Container:
    """The ``discovery.service.name`` convention as a SERVICE_<first port>_NAME declaration."""
    mappings = _port_mappings(definition)
    env = {f"SERVICE_{mappings[0][0]}_NAME": label} if mappings else {}
    ecs_labels = {k: v for k, v in container.labels.items()
                  if k in (ECS_TASK_ARN, ECS_CLUSTER, ECS_CONTAINER_NAME)}
    return Container(container.id, container.name, env, ecs_labels, container.ports,
                     container.network_mode, container.running)


def service_records(
    task: Task,
    task_definition: Mapping[str, Any],
    ip: str,
    zone: str,
    routing: Routing,
    ttl: int,
) -> tuple[list[RecordSet], list[Problem]]:
    """The record sets a running task should have for the services it declares.

    ``ip`` is the task's address: its ENI IP in awsvpc, the host's private IP in bridge or
    host mode. A service that cannot be registered becomes a problem; the others are kept.
    """
    mode = network_mode(task, task_definition)
    target = task_record_name(task.id, zone)
    out = _Collector(zone, routing, ttl)
    problems: list[Problem] = []
    for definition in container_definitions(task_definition):
        container = container_model(task, definition, mode)
        instances, bad = service_instances(container)
        problems.extend(bad)
        label = container.labels.get(DISCOVERY_LABEL, "").strip().lower()
        label_only_a = False
        if label and container.running and not is_true(merged_metadata(container).get("SERVICE_IGNORE")):
            if _port_mappings(definition):
                more, bad = service_instances(_label_container(container, definition, label))
                instances.extend(more)
                problems.extend(bad)
            else:
                label_only_a = True
        for instance in instances:
            try:
                name = naming.record_name(instance.name, zone)
                out.add(name, "SRV", [srv_value(instance.port, target)],
                        task_owner(task, f"{instance.container_port}/{instance.protocol}"))
                if mode != "bridge" and _is_host_name(instance.name):
                    out.add(name, "A", [ip], task_owner(task))
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

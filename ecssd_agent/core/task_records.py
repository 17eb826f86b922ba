"""ECS tasks -> the record sets the task-events Lambda keeps for them. Pure: no I/O.

A per-host agent sees containers through Docker; the task-events Lambda sees *tasks* through
"ECS Task State Change" events and DescribeTasks, whose task descriptions have one shape
(:func:`parse_task` reads both). What a task declares lives in its task definition's
container definitions, which are turned into :class:`~ecssd_agent.core.model.Container` values so
that ``SERVICE_<port>_NAME`` is read by the very parser the agent uses
(:func:`ecssd_agent.core.metadata.service_instances`), not by a second copy of it.

Names and ownership (see :mod:`ecssd_agent.core.naming` for the SetIdentifier scheme):

- Every record set written for a task is owned by ``Owner(kind=Kind.TASK, cluster, task, port)``,
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
  the ``discovery.service.name`` agent did. ``SERVICE_<port>_WEIGHT`` and ``_PRIORITY`` of
  the container definition (environment or dockerLabels) are read by the agent's parser and
  written as the agent writes them (:mod:`ecssd_agent.core.records`); the service's A record
  takes the weight too, so a canary task gets its share of A answers as of SRV answers
  (a ``discovery.service.name`` service takes those of its first port).
  In bridge mode the SRV carries the host port from the event's ``networkBindings``; an A
  record would suggest the container port, so none is written.
- The health gate: a container whose definition has a ``healthCheck`` gets records only
  while the task description shows it ``HEALTHY`` (ECS sends a Task State Change when a
  container's health changes, so an ``UNHEALTHY`` one loses them, a ``HEALTHY`` one gets
  them back). ``UNKNOWN`` (not checked yet) and a missing status count as not healthy.
- The fixed record (``RR_NAME``, e.g. the X-Ray daemon's ``xray.<zone>``) is an A record set
  owned by the one task currently serving it (``Owner(kind=Kind.TASK, cluster, task, port="")``):
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
from ecssd_agent.core.model import DEFAULT_WEIGHT, Container, RecordSet, Routing
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import routed, srv_value

SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Task State Change"
SCHEDULE_SOURCE = "aws.events"  # an EventBridge schedule's invocation: the periodic reconcile
SCHEDULE_DETAIL_TYPE = "Scheduled Event"
RUNNING = "RUNNING"
STOPPED = "STOPPED"
#: lastStatus values after RUNNING: the task is on its way out, its records must go.
LEAVING_STATUSES = frozenset({"DEACTIVATING", "STOPPING", "DEPROVISIONING", STOPPED})
DISCOVERY_LABEL = "discovery.service.name"
HEALTHY = "HEALTHY"
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
    health_status: str = ""  # HEALTHY, UNHEALTHY, UNKNOWN; "" when not reported


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
#
# An event is outside input: every field read here is checked for its type, and a wrong one
# refuses the whole event with one MalformedEvent naming the field's path (for example
# "detail.containers[2] is not an object"), never an AttributeError from deep inside. A null
# is taken as an absent field. Fields this module does not read are not looked at, so a new
# field in ECS's events never refuses one.

def _object(value: Any, path: str) -> Mapping[str, Any]:
    """``value`` as an object; null is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"{path} is not an object: {_shown(value)}")
    return value


def _objects(value: Any, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """A list of objects, each with its path; null is an empty list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedEvent(f"{path} is not a list: {_shown(value)}")
    out = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise MalformedEvent(f"{where} is not an object: {_shown(item)}")
        out.append((where, item))
    return out


def _text(data: Mapping[str, Any], key: str, path: str, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise MalformedEvent(f"{path}.{key} is missing")
        return ""
    if not isinstance(value, str):
        raise MalformedEvent(f"{path}.{key} is not a string: {_shown(value)}")
    return value


def _whole(data: Mapping[str, Any], key: str, path: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent(f"{path}.{key} is not a whole number: {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A wrong value, short enough for a log line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _timestamp(data: Mapping[str, Any], key: str, path: str) -> datetime | None:
    """An event's ISO 8601 string or boto3's datetime -> an aware datetime (None if absent)."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise MalformedEvent(f"{path}.{key} is not a timestamp: {_shown(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedEvent(f"{path}.{key} is not a timestamp: {_shown(value)}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _bindings(raw: Any, path: str) -> tuple[Binding, ...]:
    """Bound ports; a binding of a port range (no containerPort/hostPort) is not one."""
    found: list[Binding] = []
    for where, item in _objects(raw, path):
        container_port = _whole(item, "containerPort", where)
        host_port = _whole(item, "hostPort", where)
        protocol = (_text(item, "protocol", where) or "tcp").lower()
        if container_port is not None and host_port is not None and host_port > 0:
            found.append(Binding(container_port, host_port, protocol))
    return tuple(found)


def _containers(detail: Mapping[str, Any], path: str) -> tuple[tuple[TaskContainer, ...], str]:
    """The task's containers, and the ENI address their network interfaces show (if any)."""
    containers = []
    interface_ip = ""
    for where, raw in _objects(detail.get("containers"), f"{path}.containers"):
        containers.append(TaskContainer(
            name=_text(raw, "name", where, required=True),
            runtime_id=_text(raw, "runtimeId", where),
            last_status=_text(raw, "lastStatus", where),
            bindings=_bindings(raw.get("networkBindings"), f"{where}.networkBindings"),
            health_status=_text(raw, "healthStatus", where),
        ))
        for inner, interface in _objects(raw.get("networkInterfaces"),
                                         f"{where}.networkInterfaces"):
            interface_ip = interface_ip or _text(interface, "privateIpv4Address", inner)
    return tuple(containers), interface_ip


def _attachment_ip(detail: Mapping[str, Any], path: str) -> str:
    """The private IPv4 address of the task's ENI attachment ("" when it has none)."""
    found = ""
    for where, attachment in _objects(detail.get("attachments"), f"{path}.attachments"):
        if _text(attachment, "type", where) not in ENI_ATTACHMENT_TYPES:
            continue
        for inner, pair in _objects(attachment.get("details"), f"{where}.details"):
            if _text(pair, "name", inner) == "privateIPv4Address":
                found = found or _text(pair, "value", inner)
    return found


def _env_overrides(detail: Mapping[str, Any], path: str) -> dict[str, dict[str, str]]:
    overrides = _object(detail.get("overrides"), f"{path}.overrides")
    out: dict[str, dict[str, str]] = {}
    for where, item in _objects(overrides.get("containerOverrides"),
                                f"{path}.overrides.containerOverrides"):
        name = _text(item, "name", where)
        env = {}
        for inner, pair in _objects(item.get("environment"), f"{where}.environment"):
            env[_text(pair, "name", inner, required=True)] = _text(pair, "value", inner)
        if name and env:
            out[name] = env
    return out


def _environment(pairs: Any) -> dict[str, str]:
    """A task definition's ``[{"name": K, "value": V}, ...]`` -> a dict (API data: lenient)."""
    env: dict[str, str] = {}
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, Mapping) and isinstance(pair.get("name"), str):
            env[pair["name"]] = str(pair.get("value", ""))
    return env


def parse_task(detail: Any, path: str = "task") -> Task:
    """A task description (an event's ``detail`` or a DescribeTasks task) -> :class:`Task`.

    ``path`` is how error messages name the description (``detail`` in an event).
    """
    if not isinstance(detail, Mapping):
        raise MalformedEvent(f"{path} is not an object: {_shown(detail)}")
    arn = _text(detail, "taskArn", path, required=True)
    task = naming.task_id(arn)
    cluster = naming.cluster_name(_text(detail, "clusterArn", path, required=True))
    if not task or not cluster:
        raise MalformedEvent(f"cannot tell the task id and cluster from {path}.taskArn {arn!r}")
    containers, interface_ip = _containers(detail, path)
    return Task(
        arn=arn,
        id=task,
        cluster=cluster,
        last_status=_text(detail, "lastStatus", path, required=True),
        desired_status=_text(detail, "desiredStatus", path, required=True),
        group=_text(detail, "group", path),
        launch_type=_text(detail, "launchType", path),
        task_definition_arn=_text(detail, "taskDefinitionArn", path),
        container_instance_arn=_text(detail, "containerInstanceArn", path),
        eni_ip=_attachment_ip(detail, path) or interface_ip,  # the same address, per container
        containers=containers,
        env_overrides=_env_overrides(detail, path),
        started_at=_timestamp(detail, "startedAt", path),
        created_at=_timestamp(detail, "createdAt", path),
        version=_whole(detail, "version", path),
    )


def is_schedule(event: Any) -> bool:
    """Whether ``event`` is an EventBridge schedule's invocation (not a task state change)."""
    return (isinstance(event, Mapping) and event.get("source") == SCHEDULE_SOURCE
            and event.get("detail-type") == SCHEDULE_DETAIL_TYPE)


def parse_event(event: Any) -> Task:
    """An EventBridge "ECS Task State Change" event -> :class:`Task`; else MalformedEvent."""
    if not isinstance(event, Mapping):
        raise MalformedEvent(f"the event is not an object: {_shown(event)}")
    if event.get("source") != SOURCE or event.get("detail-type") != DETAIL_TYPE:
        raise MalformedEvent(
            f"not an {DETAIL_TYPE!r} event from {SOURCE} "
            f"(source={_shown(event.get('source'))}, detail-type={_shown(event.get('detail-type'))})"
        )
    if event.get("detail") is None:
        raise MalformedEvent("the event has no 'detail' object")
    return parse_task(event["detail"], "detail")


# --- ownership and names -----------------------------------------------------------------

def task_owner(task: Task, port: str = "") -> Owner:
    """The owner of a task's record sets; ``port`` is "" for its A records."""
    return Owner(kind=Kind.TASK, cluster=task.cluster, task=task.id, port=port)


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


def health_checked(definition: Mapping[str, Any]) -> bool:
    """Whether a container definition has a health check (a ``healthCheck`` with a command)."""
    check = definition.get("healthCheck")
    return isinstance(check, Mapping) and bool(check.get("command"))


def withheld(task: Task, definition: Mapping[str, Any]) -> bool:
    """The health gate: a health-checked container not (yet, or no longer) shown HEALTHY."""
    if not health_checked(definition):
        return False
    running = task.container(definition["name"])
    return running is None or running.health_status != HEALTHY


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

    def add(self, name: str, rtype: str, values: Sequence[str], owner: Owner,
            weight: int = DEFAULT_WEIGHT) -> None:
        record = routed(name, rtype, values, owner, self.routing, self.ttl, weight)
        self.records.setdefault(record.key, record)


def _is_host_name(name: str) -> bool:
    """``calc`` is a host name an A record suits; ``_calc._tcp`` is an SRV owner name."""
    return not any(label.startswith("_") for label in name.split("."))


def _label_container(container: Container, definition: Mapping[str, Any], label: str) -> Container:
    """The ``discovery.service.name`` convention as a SERVICE_<first port>_NAME declaration,
    with that port's SERVICE_<port>_WEIGHT and _PRIORITY if the container declares them."""
    mappings = _port_mappings(definition)
    env: dict[str, str] = {}
    if mappings:
        prefix = f"SERVICE_{mappings[0][0]}_"
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
    task_definition: Mapping[str, Any],
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
    for definition in container_definitions(task_definition):
        if health_gate and withheld(task, definition):
            continue
        container = container_model(task, definition, mode)
        instances, bad = service_instances(container)
        problems.extend(bad)
        label = container.labels.get(DISCOVERY_LABEL, "").strip().lower()
        label_only_a = False
        if label and container.running and not is_true(merged_metadata(container).get("SERVICE_IGNORE")):
            if _port_mappings(definition):
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

"""ECS and EC2: the only code that knows their wire format, and every read of them.

Tasks and task definitions are parsed here, tolerantly, into the one task model
(:mod:`ecssd_agent.core.ecs_task`): :func:`parse_task` reads a DescribeTasks task and the
``detail`` of a task state change event (the same shape), :func:`parse_task_definition` a
DescribeTaskDefinition answer. A null or absent optional field is an absent one, a field not
read is never looked at, and a field of the wrong type refuses the description with one
:class:`MalformedTask` naming it (``detail.containers[2] is not an object``).

Every list goes through a boto3 paginator; every describe is batched to its API's limit (100
container instances or tasks a call); task definitions, which never change once registered,
are cached per ARN (:class:`TaskDefinitions`, one per process). A failed call raises
:class:`EcsReadError`: the state it would have shown is unknown. An entity the API *says* does
not exist (a ``MISSING`` failure, an instance DescribeInstances does not return) is data,
never an error: that is evidence, an error is not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.core.ecs_task import (
    ContainerDefinition,
    PortBinding,
    Task,
    TaskContainer,
    TaskDefinition,
)
from ecssd_agent.core.naming import cluster_name, task_id

DESCRIBE_BATCH = 100  # DescribeContainerInstances and DescribeTasks take at most 100 each
EC2_FILTER_BATCH = 100  # instance ids per DescribeInstances filter (EC2 allows up to 200)
LIVE_EC2_STATES = frozenset({"pending", "running"})
LIVE_CONTAINER_INSTANCE_STATES = frozenset({"ACTIVE", "DRAINING"})

T = TypeVar("T")


class EcsReadError(RuntimeError):
    """An ECS or EC2 call failed: the state it would have shown is unknown (not "gone")."""

    def __init__(self, operation: str, cluster: str, cause: BaseException) -> None:
        where = f" for cluster {cluster}" if cluster else ""
        super().__init__(f"{operation}{where} failed: {cause}")
        self.operation = operation
        self.cluster = cluster


@dataclass(frozen=True)
class InstanceHost:
    """A container instance and the EC2 instance under it.

    ``state`` is the EC2 state name ("" when DescribeInstances did not return the instance,
    which happens once it has been terminated for a while); ``status`` the container
    instance's ECS status.
    """

    container_instance_arn: str
    instance_id: str
    private_ip: str
    private_dns_name: str
    state: str = ""
    status: str = ""

    @property
    def label(self) -> str:
        """The first label of the private DNS name (how an agent on it names itself)."""
        return self.private_dns_name.strip().lower().split(".", 1)[0]

    @property
    def live(self) -> bool:
        return (self.state in LIVE_EC2_STATES and self.status in LIVE_CONTAINER_INSTANCE_STATES
                and bool(self.private_ip))


@dataclass(frozen=True)
class Ec2Instance:
    instance_id: str
    private_ip: str
    private_dns_name: str
    state: str


@dataclass(frozen=True)
class DescribedTasks:
    """DescribeTasks results: tasks found, ids ECS says do not exist, other failures (a
    description this module cannot read is one, with its reason)."""

    tasks: dict[str, Task] = field(default_factory=dict)  # by task id
    missing: frozenset[str] = frozenset()  # task ids with failure reason MISSING
    failures: Mapping[str, str] = field(default_factory=dict)  # task id -> other reason


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _call(operation: str, where: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise EcsReadError(operation, where, exc) from exc


def _paginate(client: Any, operation: str, key: str, where: str, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    try:
        for page in client.get_paginator(operation).paginate(**kwargs):
            out.extend(page.get(key, []))
    except (ClientError, BotoCoreError) as exc:
        raise EcsReadError(operation, where, exc) from exc
    return out


# --- clusters, container instances, EC2 --------------------------------------------------

def list_clusters(ecs: Any) -> list[str]:
    """Every cluster ARN of the account and region."""
    return _paginate(ecs, "list_clusters", "clusterArns", "")


def describe_clusters(ecs: Any, clusters: Sequence[str]) -> dict[str, str]:
    """Cluster name -> status (ACTIVE, INACTIVE, ...) for the clusters ECS knows, 100 a call;
    a cluster it does not know is absent (DescribeClusters reports it as MISSING)."""
    found: dict[str, str] = {}
    for chunk in _chunks(list(clusters), DESCRIBE_BATCH):
        page = _call("describe_clusters", ",".join(chunk), ecs.describe_clusters,
                     clusters=list(chunk))
        for cluster in page.get("clusters", []):
            found[cluster["clusterName"]] = cluster.get("status", "")
    return found


def list_container_instances(ecs: Any, cluster: str) -> list[str]:
    """Container instance ARNs of a cluster (ECS lists every status but INACTIVE)."""
    return _paginate(ecs, "list_container_instances", "containerInstanceArns", cluster,
                     cluster=cluster)


def ec2_instances(ec2: Any, instance_ids: Iterable[str], cluster: str = "") -> dict[str, Ec2Instance]:
    """EC2 instances by id; ids EC2 does not know are simply absent.

    A filter rather than ``InstanceIds``: with ``InstanceIds`` one long-terminated instance
    fails the whole call (InvalidInstanceID.NotFound), which would blind the sweep to a
    cluster for as long as that instance stays registered.
    """
    ids = sorted({i for i in instance_ids if i})
    found: dict[str, Ec2Instance] = {}
    for chunk in _chunks(ids, EC2_FILTER_BATCH):
        reservations = _paginate(ec2, "describe_instances", "Reservations", cluster,
                                 Filters=[{"Name": "instance-id", "Values": list(chunk)}])
        for reservation in reservations:
            for inst in reservation.get("Instances", []):
                found[inst["InstanceId"]] = Ec2Instance(
                    instance_id=inst["InstanceId"],
                    private_ip=inst.get("PrivateIpAddress", "") or "",
                    private_dns_name=inst.get("PrivateDnsName", "") or "",
                    state=inst.get("State", {}).get("Name", ""),
                )
    return found


def instance_hosts(
    ecs: Any, ec2: Any, cluster: str, container_instance_arns: Iterable[str]
) -> dict[str, InstanceHost]:
    """Container instance ARN -> :class:`InstanceHost` (EC2 instance id, private IP and DNS).

    DescribeContainerInstances 100 at a time, then one DescribeInstances per 100 EC2 ids.
    Container instances ECS cannot describe are absent; those whose EC2 instance EC2 no
    longer returns are present with empty ``private_ip`` and ``state`` (so ``live`` is False).
    Raises :class:`EcsReadError`.
    """
    arns = sorted(set(container_instance_arns))
    described: list[Mapping[str, Any]] = []
    for chunk in _chunks(arns, DESCRIBE_BATCH):
        page = _call("describe_container_instances", cluster, ecs.describe_container_instances,
                     cluster=cluster, containerInstances=list(chunk))
        described.extend(page.get("containerInstances", []))
    ec2_by_id = ec2_instances(ec2, (ci.get("ec2InstanceId", "") for ci in described), cluster)
    hosts: dict[str, InstanceHost] = {}
    for ci in described:
        instance_id = ci.get("ec2InstanceId", "")
        ec2_instance = ec2_by_id.get(instance_id)
        hosts[ci["containerInstanceArn"]] = InstanceHost(
            container_instance_arn=ci["containerInstanceArn"],
            instance_id=instance_id,
            private_ip=ec2_instance.private_ip if ec2_instance else "",
            private_dns_name=ec2_instance.private_dns_name if ec2_instance else "",
            state=ec2_instance.state if ec2_instance else "",
            status=ci.get("status", ""),
        )
    return hosts


def container_instance_status(ecs: Any, cluster: str, arn: str) -> str:
    """One container instance's ECS status (ACTIVE, DRAINING, ...): the drain watch's one
    call. "" when ECS describes no such instance (a failure entry: nothing is known of it).
    Raises :class:`EcsReadError`."""
    page = _call("describe_container_instances", cluster, ecs.describe_container_instances,
                 cluster=cluster, containerInstances=[arn])
    for ci in page.get("containerInstances", []):
        if ci.get("containerInstanceArn") == arn:
            return str(ci.get("status", "") or "")
    return ""


# --- tasks -------------------------------------------------------------------------------

def list_tasks(ecs: Any, cluster: str, desired_status: str = "RUNNING",
               service: str = "") -> list[str]:
    """Task ARNs of a cluster, or of one of its services (``service``: its name). The
    ``desiredStatus`` is always sent: real ECS defaults to RUNNING but moto (and a future
    API) may not, and the caller must know which it asked for."""
    kwargs = {"serviceName": service} if service else {}
    return _paginate(ecs, "list_tasks", "taskArns", cluster, cluster=cluster,
                     desiredStatus=desired_status, **kwargs)


def describe_tasks(ecs: Any, cluster: str, tasks: Iterable[str],
                   include_tags: bool = False) -> DescribedTasks:
    """Describe tasks (ids or ARNs) 100 at a time (``include_tags``: with their tags).

    A ``MISSING`` failure is ECS saying the task does not exist (stopped tasks are kept about
    an hour, then forgotten): evidence that it is gone. Any other failure reason, and a
    description :func:`parse_task` refuses, is kept apart and means nothing. Raises
    :class:`EcsReadError` when a call fails, or when a description names no task.
    """
    wanted = sorted(set(tasks))
    found: dict[str, Task] = {}
    missing: set[str] = set()
    failures: dict[str, str] = {}
    for chunk in _chunks(wanted, DESCRIBE_BATCH):
        page = _call("describe_tasks", cluster, ecs.describe_tasks, cluster=cluster,
                     tasks=list(chunk), **({"include": ["TAGS"]} if include_tags else {}))
        for raw in page.get("tasks", []):
            try:
                task = parse_task(raw, cluster=cluster)
            except MalformedTask as exc:
                arn = raw.get("taskArn") if isinstance(raw, Mapping) else None
                if not isinstance(arn, str) or not task_id(arn):
                    raise EcsReadError("describe_tasks", cluster, exc) from exc
                failures[task_id(arn)] = f"unreadable description: {exc}"
                continue
            found[task.id] = task
        for failure in page.get("failures", []):
            tid = task_id(failure.get("arn", ""))
            if failure.get("reason") == "MISSING":
                missing.add(tid)
            else:
                failures[tid] = failure.get("reason", "") or failure.get("detail", "") or "?"
    return DescribedTasks(found, frozenset(missing - set(found)), failures)


def tag_task(ecs: Any, task_arn: str, tags: Mapping[str, str]) -> None:
    """TagResource on a task: set these tags (others are left as they are). Raises
    ClientError / BotoCoreError."""
    ecs.tag_resource(resourceArn=task_arn,
                     tags=[{"key": k, "value": v} for k, v in sorted(tags.items())])


def untag_task(ecs: Any, task_arn: str, keys: Iterable[str]) -> None:
    """UntagResource on a task. Raises ClientError / BotoCoreError."""
    ecs.untag_resource(resourceArn=task_arn, tagKeys=sorted(keys))


class TaskDefinitions:
    """DescribeTaskDefinition, cached per ARN: a registered revision never changes.

    Thread-safe. Keep one for the life of the process (a Lambda's warm execution environment)
    so that each revision is asked for once, ever.
    """

    def __init__(self) -> None:
        self._cache: dict[str, TaskDefinition] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def get(self, ecs: Any, arn: str, cluster: str = "") -> TaskDefinition:
        """The task definition; raises :class:`EcsReadError` (also when it is unreadable)."""
        with self._lock:
            cached = self._cache.get(arn)
        if cached is not None:
            return cached
        raw = _call("describe_task_definition", cluster, ecs.describe_task_definition,
                    taskDefinition=arn)
        try:
            definition = parse_task_definition(raw.get("taskDefinition"), arn)
        except MalformedTask as exc:
            raise EcsReadError("describe_task_definition", cluster, exc) from exc
        with self._lock:
            self.calls += 1
            self._cache[arn] = definition
        return definition


# --- the wire format: tasks and task definitions -------------------------------------------

class MalformedTask(ValueError):
    """A task or task definition description that cannot be read; the message names the field."""


ENI_ATTACHMENT_TYPES = frozenset({"eni", "ElasticNetworkInterface"})  # event / DescribeTasks


def _object(value: Any, path: str) -> Mapping[str, Any]:
    """``value`` as an object; null is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedTask(f"{path} is not an object: {_shown(value)}")
    return value


def _objects(value: Any, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """A list of objects, each with its path; null is an empty list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedTask(f"{path} is not a list: {_shown(value)}")
    out = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise MalformedTask(f"{where} is not an object: {_shown(item)}")
        out.append((where, item))
    return out


def _text(data: Mapping[str, Any], key: str, path: str, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise MalformedTask(f"{path}.{key} is missing")
        return ""
    if not isinstance(value, str):
        raise MalformedTask(f"{path}.{key} is not a string: {_shown(value)}")
    return value


def _whole(data: Mapping[str, Any], key: str, path: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedTask(f"{path}.{key} is not a whole number: {_shown(value)}")
    return value


def _seconds(data: Mapping[str, Any], key: str, path: str) -> float:
    value = data.get(key)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise MalformedTask(f"{path}.{key} is not a number of seconds: {_shown(value)}")
    return float(value)


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
        raise MalformedTask(f"{path}.{key} is not a timestamp: {_shown(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedTask(f"{path}.{key} is not a timestamp: {_shown(value)}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _ports(raw: Any, path: str, bound: bool) -> tuple[PortBinding, ...]:
    """networkBindings (``bound``: only ports ECS bound on the host) or portMappings. An entry
    of a port range (``containerPortRange``, no containerPort) names no single port: skipped."""
    found: list[PortBinding] = []
    for where, item in _objects(raw, path):
        container_port = _whole(item, "containerPort", where)
        host_port = _whole(item, "hostPort", where)
        protocol = (_text(item, "protocol", where) or "tcp").lower()
        if container_port is None or (bound and not (host_port and host_port > 0)):
            continue
        found.append(PortBinding(container_port, host_port or 0, protocol))
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
            health_status=_text(raw, "healthStatus", where),
            bindings=_ports(raw.get("networkBindings"), f"{where}.networkBindings", bound=True),
        ))
        for inner, interface in _objects(raw.get("networkInterfaces"),
                                         f"{where}.networkInterfaces"):
            interface_ip = interface_ip or _text(interface, "privateIpv4Address", inner)
    return tuple(containers), interface_ip


def _attachment_ips(detail: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """The private IPv4 addresses of the task's ENI attachments."""
    found: list[str] = []
    for where, attachment in _objects(detail.get("attachments"), f"{path}.attachments"):
        if _text(attachment, "type", where) not in ENI_ATTACHMENT_TYPES:
            continue
        for inner, pair in _objects(attachment.get("details"), f"{where}.details"):
            if _text(pair, "name", inner) == "privateIPv4Address":
                ip = _text(pair, "value", inner)
                if ip and ip not in found:
                    found.append(ip)
    return tuple(found)


def _environment(raw: Any, path: str) -> dict[str, str]:
    """``[{"name": K, "value": V}, ...]`` -> a dict (a pair without a name names nothing)."""
    env: dict[str, str] = {}
    for where, pair in _objects(raw, path):
        name = _text(pair, "name", where)
        if name:
            env[name] = _text(pair, "value", where)
    return env


def _env_overrides(detail: Mapping[str, Any], path: str) -> dict[str, dict[str, str]]:
    overrides = _object(detail.get("overrides"), f"{path}.overrides")
    out: dict[str, dict[str, str]] = {}
    for where, item in _objects(overrides.get("containerOverrides"),
                                f"{path}.overrides.containerOverrides"):
        name = _text(item, "name", where)
        env = _environment(item.get("environment"), f"{where}.environment")
        if name and env:
            out[name] = env
    return out


def _tags(raw: Any, path: str) -> dict[str, str]:
    """``[{"key": K, "value": V}, ...]`` (DescribeTasks with include TAGS) -> a dict."""
    tags: dict[str, str] = {}
    for where, pair in _objects(raw, path):
        key = _text(pair, "key", where)
        if key:
            tags[key] = _text(pair, "value", where)
    return tags


def parse_task(detail: Any, path: str = "task", cluster: str = "") -> Task:
    """A DescribeTasks task, or an event's ``detail``, -> :class:`Task`.

    ``path`` is how refusals name the description (``detail`` in an event); ``cluster``, the
    cluster the description was asked of, stands for a missing ``clusterArn``. Raises
    :class:`MalformedTask`.
    """
    if not isinstance(detail, Mapping):
        raise MalformedTask(f"{path} is not an object: {_shown(detail)}")
    arn = _text(detail, "taskArn", path, required=True)
    tid = task_id(arn)
    cluster = cluster_name(_text(detail, "clusterArn", path, required=not cluster) or cluster)
    if not tid or not cluster:
        raise MalformedTask(f"cannot tell the task id and cluster from {path}.taskArn {arn!r}")
    containers, interface_ip = _containers(detail, path)
    eni_ips = _attachment_ips(detail, path) or ((interface_ip,) if interface_ip else ())
    return Task(
        arn=arn,
        id=tid,
        cluster=cluster,
        last_status=_text(detail, "lastStatus", path, required=True),
        desired_status=_text(detail, "desiredStatus", path, required=True),
        group=_text(detail, "group", path),
        started_by=_text(detail, "startedBy", path),
        launch_type=_text(detail, "launchType", path),
        task_definition_arn=_text(detail, "taskDefinitionArn", path),
        container_instance_arn=_text(detail, "containerInstanceArn", path),
        eni_ips=eni_ips,
        containers=containers,
        env_overrides=_env_overrides(detail, path),
        started_at=_timestamp(detail, "startedAt", path),
        created_at=_timestamp(detail, "createdAt", path),
        version=_whole(detail, "version", path),
        health_status=_text(detail, "healthStatus", path),
        tags=_tags(detail.get("tags"), f"{path}.tags"),
    )


def _health_check(raw: Any, path: str) -> tuple[bool, float]:
    """(ECS runs a check, its startPeriod). ECS documents ``command`` as required: a
    ``healthCheck`` without one is no check ECS can run, and its containers stay UNKNOWN."""
    check = _object(raw, path)
    command = check.get("command")
    if command is not None and not isinstance(command, list):
        raise MalformedTask(f"{path}.command is not a list: {_shown(command)}")
    if not command:
        return False, 0.0
    return True, _seconds(check, "startPeriod", path)


def _labels(raw: Any, path: str) -> dict[str, str]:
    labels = _object(raw, path)
    for key, value in labels.items():
        if not isinstance(value, str):
            raise MalformedTask(f"{path}.{key} is not a string: {_shown(value)}")
    return {str(k): v for k, v in labels.items()}


def parse_task_definition(raw: Any, arn: str = "", path: str = "taskDefinition") -> TaskDefinition:
    """DescribeTaskDefinition's ``taskDefinition`` -> :class:`TaskDefinition`. A container
    definition without a name is skipped (nothing can address it). Raises
    :class:`MalformedTask`."""
    if not isinstance(raw, Mapping):
        raise MalformedTask(f"{path} is not an object: {_shown(raw)}")
    containers = []
    for where, item in _objects(raw.get("containerDefinitions"), f"{path}.containerDefinitions"):
        name = _text(item, "name", where)
        if not name:
            continue
        health_check, start_period = _health_check(item.get("healthCheck"), f"{where}.healthCheck")
        containers.append(ContainerDefinition(
            name=name,
            environment=_environment(item.get("environment"), f"{where}.environment"),
            labels=_labels(item.get("dockerLabels"), f"{where}.dockerLabels"),
            port_mappings=_ports(item.get("portMappings"), f"{where}.portMappings", bound=False),
            health_check=health_check,
            start_period=start_period,
        ))
    return TaskDefinition(
        arn=_text(raw, "taskDefinitionArn", path) or arn,
        network_mode=_text(raw, "networkMode", path) or "bridge",
        containers=tuple(containers),
    )

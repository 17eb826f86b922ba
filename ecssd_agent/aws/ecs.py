"""ECS and EC2 reads: the only code that knows their response shapes.

Shared by the health sweep and the task-events Lambda. Every list goes through a boto3
paginator; every describe is batched to its API's limit (100 container instances or tasks a
call); task definitions, which never change once registered, are cached per ARN.

Errors: any failed call raises :class:`EcsReadError` (naming the operation and the cluster)
from the botocore exception, so callers can fail closed on "unknown". An entity the API
*says* does not exist (a ``MISSING`` failure of DescribeTasks, an instance DescribeInstances
does not return) is reported as data, never as an error: that is evidence, an error is not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.core.naming import task_id

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
class PortBinding:
    """A port of a container: a DescribeTasks ``networkBindings`` entry (the host port ECS
    bound, bridge and host network modes) or a task definition's ``portMappings`` entry (the
    declared port; in awsvpc mode the container port is the port on the task's ENI)."""

    container_port: int
    host_port: int  # 0: not bound (a definition's dynamic port) or not stated
    protocol: str = "tcp"


@dataclass(frozen=True)
class TaskContainer:
    name: str
    runtime_id: str = ""  # the Docker container id (absent in some describes, e.g. moto)
    health_status: str = ""  # HEALTHY, UNHEALTHY or UNKNOWN (UNKNOWN without a healthCheck)
    network_bindings: tuple[PortBinding, ...] = ()  # none in awsvpc mode, nor while PENDING


@dataclass(frozen=True)
class EcsTask:
    """The parts of a DescribeTasks entry that service discovery needs."""

    arn: str
    cluster_arn: str
    last_status: str
    desired_status: str
    task_definition_arn: str
    container_instance_arn: str = ""  # "" for Fargate
    group: str = ""  # "service:<name>" for a service's task, "family:<name>" or custom for RunTask
    started_by: str = ""  # "ecs-svc/<id>" for a service's task
    started_at: datetime | None = None
    created_at: datetime | None = None
    eni_ips: tuple[str, ...] = ()  # private IPv4 addresses of awsvpc ENI attachments
    containers: tuple[TaskContainer, ...] = ()
    version: int = 0
    health_status: str = ""  # the task's: HEALTHY only when its essential checks pass

    @property
    def id(self) -> str:
        return task_id(self.arn)

    @property
    def of_service(self) -> bool:
        """Started by an ECS service's scheduler (ECS's documented marks: the task group
        ``service:<name>``, ``startedBy`` ``ecs-svc/<id>``): ECS stops it when it drains the
        instance; standalone tasks (RunTask, StartTask) it leaves running."""
        return self.group.startswith("service:") or self.started_by.startswith("ecs-svc/")

    @property
    def stopping(self) -> bool:
        """Stopped, or on its way there (ECS never takes a STOPPED desiredStatus back)."""
        return self.last_status == "STOPPED" or self.desired_status == "STOPPED"


@dataclass(frozen=True)
class DescribedTasks:
    """DescribeTasks results: tasks found, ids ECS says do not exist, other failures."""

    tasks: dict[str, EcsTask] = field(default_factory=dict)  # by task id
    missing: frozenset[str] = frozenset()  # task ids with failure reason MISSING
    failures: Mapping[str, str] = field(default_factory=dict)  # task id -> other reason


@dataclass(frozen=True)
class ContainerDefinition:
    name: str
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    port_mappings: tuple[PortBinding, ...] = ()
    health_check: bool = False  # the definition has a ``healthCheck``: ECS judges it too
    start_period: float = 0.0  # the healthCheck's startPeriod, seconds


@dataclass(frozen=True)
class TaskDefinition:
    arn: str
    network_mode: str
    containers: tuple[ContainerDefinition, ...]


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

def list_tasks(ecs: Any, cluster: str, desired_status: str = "RUNNING") -> list[str]:
    """Task ARNs of a cluster. ``desiredStatus`` is always sent: real ECS defaults to RUNNING
    but moto (and a future API) may not, and the caller must know which it asked for."""
    return _paginate(ecs, "list_tasks", "taskArns", cluster, cluster=cluster,
                     desiredStatus=desired_status)


def _task(raw: Mapping[str, Any]) -> EcsTask:
    eni_ips: list[str] = []
    for attachment in raw.get("attachments", []):
        if attachment.get("type") != "ElasticNetworkInterface":
            continue
        for detail in attachment.get("details", []):
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                eni_ips.append(detail["value"])
    return EcsTask(
        arn=raw["taskArn"],
        cluster_arn=raw.get("clusterArn", ""),
        last_status=raw.get("lastStatus", ""),
        desired_status=raw.get("desiredStatus", ""),
        task_definition_arn=raw.get("taskDefinitionArn", ""),
        container_instance_arn=raw.get("containerInstanceArn", "") or "",
        group=raw.get("group", "") or "",
        started_by=raw.get("startedBy", "") or "",
        started_at=raw.get("startedAt"),
        created_at=raw.get("createdAt"),
        eni_ips=tuple(eni_ips),
        containers=tuple(
            TaskContainer(c.get("name", ""), c.get("runtimeId", "") or "",
                          health_status=c.get("healthStatus", "") or "",
                          network_bindings=_ports(c.get("networkBindings") or []))
            for c in raw.get("containers", [])),
        version=int(raw.get("version", 0) or 0),
        health_status=raw.get("healthStatus", "") or "",
    )


def _ports(items: Iterable[Mapping[str, Any]]) -> tuple[PortBinding, ...]:
    """networkBindings or portMappings -> :class:`PortBinding` (entries without an integer
    containerPort are dropped: they name no port)."""
    out: list[PortBinding] = []
    for item in items:
        container_port, host_port = item.get("containerPort"), item.get("hostPort")
        if not isinstance(container_port, int) or isinstance(container_port, bool):
            continue
        out.append(PortBinding(container_port,
                               host_port if isinstance(host_port, int) else 0,
                               str(item.get("protocol") or "tcp").lower()))
    return tuple(out)


def describe_tasks(ecs: Any, cluster: str, tasks: Iterable[str]) -> DescribedTasks:
    """Describe tasks (ids or ARNs) 100 at a time.

    A ``MISSING`` failure is ECS saying the task does not exist (stopped tasks are kept about
    an hour, then forgotten): evidence that it is gone. Any other failure reason is kept apart
    and means nothing. Raises :class:`EcsReadError` when a call fails.
    """
    wanted = sorted(set(tasks))
    found: dict[str, EcsTask] = {}
    missing: set[str] = set()
    failures: dict[str, str] = {}
    for chunk in _chunks(wanted, DESCRIBE_BATCH):
        page = _call("describe_tasks", cluster, ecs.describe_tasks, cluster=cluster,
                     tasks=list(chunk))
        for raw in page.get("tasks", []):
            task = _task(raw)
            found[task.id] = task
        for failure in page.get("failures", []):
            tid = task_id(failure.get("arn", ""))
            if failure.get("reason") == "MISSING":
                missing.add(tid)
            else:
                failures[tid] = failure.get("reason", "") or failure.get("detail", "") or "?"
    return DescribedTasks(found, frozenset(missing - set(found)), failures)


def _pairs(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(i.get("name", "")): str(i.get("value", "")) for i in items if i.get("name")}


class TaskDefinitions:
    """DescribeTaskDefinition, cached per ARN: a registered revision never changes.

    Thread-safe. Keep one for the life of the process (a Lambda's warm container) so a
    sweep asks for each revision once, ever.
    """

    def __init__(self) -> None:
        self._cache: dict[str, TaskDefinition] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def get(self, ecs: Any, arn: str, cluster: str = "") -> TaskDefinition:
        with self._lock:
            cached = self._cache.get(arn)
        if cached is not None:
            return cached
        raw = _call("describe_task_definition", cluster, ecs.describe_task_definition,
                    taskDefinition=arn)["taskDefinition"]
        definition = TaskDefinition(
            arn=raw.get("taskDefinitionArn", arn),
            network_mode=raw.get("networkMode", "bridge") or "bridge",
            containers=tuple(
                ContainerDefinition(
                    name=c.get("name", ""),
                    environment=_pairs(c.get("environment", [])),
                    labels={str(k): str(v) for k, v in (c.get("dockerLabels") or {}).items()},
                    port_mappings=_ports(c.get("portMappings") or []),
                    health_check=bool(c.get("healthCheck")),
                    start_period=float((c.get("healthCheck") or {}).get("startPeriod", 0) or 0),
                )
                for c in raw.get("containerDefinitions", [])
            ),
        )
        with self._lock:
            self.calls += 1
            self._cache[arn] = definition
        return definition


def task_definition_document(ecs: Any, arn: str, cluster: str = "") -> Mapping[str, Any]:
    """DescribeTaskDefinition's ``taskDefinition`` as the API returns it (portMappings,
    dockerLabels and all), for a caller that hands it to a pure parser
    (:mod:`ecssd_agent.core.task_records`). Raises :class:`EcsReadError`. Added by the
    task-events Lambda (issue 6); :class:`TaskDefinitions` keeps only what the sweep needs.
    """
    response = _call("describe_task_definition", cluster, ecs.describe_task_definition,
                     taskDefinition=arn)
    document: Mapping[str, Any] = response["taskDefinition"]
    return document


def describe_task_documents(ecs: Any, cluster: str, tasks: Iterable[str]) -> list[Mapping[str, Any]]:
    """DescribeTasks' task entries as the API returns them, 100 tasks a call, for a caller that
    hands them to the pure parser the task events go through (:func:`ecssd_agent.core.task_records.
    parse_task`), so a task read here and a task read from its event give the same records.
    Tasks ECS does not return are simply absent. Raises :class:`EcsReadError`. Added by the
    task-events Lambda's periodic reconcile (issue 14).
    """
    found: list[Mapping[str, Any]] = []
    for chunk in _chunks(sorted(set(tasks)), DESCRIBE_BATCH):
        page = _call("describe_tasks", cluster, ecs.describe_tasks, cluster=cluster,
                     tasks=list(chunk))
        found.extend(page.get("tasks", []))
    return found

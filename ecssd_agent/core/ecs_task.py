"""The ECS task model: a task, its containers and port bindings, its task definition.

One model for every reader of ECS: the task-events Lambda (events and DescribeTasks), its
reconcile and the health sweep. Pure values; :mod:`ecssd_agent.aws.ecs` parses ECS's wire
format into them (DescribeTasks, DescribeTaskDefinition, and the task state change event,
whose ``detail`` is a DescribeTasks task).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

RUNNING = "RUNNING"
STOPPED = "STOPPED"
HEALTHY = "HEALTHY"
UNHEALTHY = "UNHEALTHY"
#: lastStatus values after RUNNING: the task is on its way out, its records must go.
LEAVING_STATUSES = frozenset({"DEACTIVATING", "STOPPING", "DEPROVISIONING", STOPPED})


class Phase(str, Enum):
    """What a task's state asks of its records."""

    REGISTER = "register"  # lastStatus and desiredStatus RUNNING
    REMOVE = "remove"  # desiredStatus STOPPED (draining began) or lastStatus past RUNNING
    WAIT = "wait"  # not running yet (PROVISIONING, PENDING, ACTIVATING): nothing to do


@dataclass(frozen=True)
class PortBinding:
    """A port of a container: a task's ``networkBindings`` entry (the host port ECS bound, in
    bridge and host mode) or a container definition's ``portMappings`` entry (the declared
    port; in awsvpc mode the container port is the port on the task's ENI)."""

    container_port: int
    host_port: int = 0  # 0: not bound (a mapping's dynamic port) or not stated
    protocol: str = "tcp"  # "tcp" | "udp"


@dataclass(frozen=True)
class TaskContainer:
    """A container of a task, as ECS reports it running."""

    name: str
    runtime_id: str = ""  # the Docker container id (absent in some answers, e.g. moto's)
    last_status: str = ""
    health_status: str = ""  # HEALTHY, UNHEALTHY, UNKNOWN; "" when not reported
    bindings: tuple[PortBinding, ...] = ()  # none in awsvpc mode, nor while PENDING


@dataclass(frozen=True)
class Task:
    """An ECS task: what service discovery reads of a DescribeTasks entry or an event."""

    arn: str
    id: str
    cluster: str  # the cluster name
    last_status: str
    desired_status: str
    group: str = ""  # "service:<name>" for a service's task, "family:<name>" or custom for RunTask
    started_by: str = ""  # "ecs-svc/<id>" for a service's task
    launch_type: str = ""
    task_definition_arn: str = ""
    container_instance_arn: str = ""  # "" on Fargate
    eni_ips: tuple[str, ...] = ()  # the private IPv4 address of its ENI (awsvpc, Fargate)
    containers: tuple[TaskContainer, ...] = ()
    env_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    started_at: datetime | None = None
    created_at: datetime | None = None
    version: int | None = None
    health_status: str = ""  # the task's: HEALTHY only when its essential checks pass
    tags: Mapping[str, str] = field(default_factory=dict)  # only when asked for (include TAGS)

    @property
    def eni_ip(self) -> str:
        return self.eni_ips[0] if self.eni_ips else ""

    @property
    def phase(self) -> Phase:
        if self.desired_status == STOPPED or self.last_status in LEAVING_STATUSES:
            return Phase.REMOVE
        if self.last_status == RUNNING and self.desired_status == RUNNING:
            return Phase.REGISTER
        return Phase.WAIT

    @property
    def of_service(self) -> bool:
        """Started by an ECS service's scheduler (ECS's documented marks: the task group
        ``service:<name>``, ``startedBy`` ``ecs-svc/<id>``): ECS stops it when it drains the
        instance; standalone tasks (RunTask, StartTask) it leaves running."""
        return self.group.startswith("service:") or self.started_by.startswith("ecs-svc/")

    @property
    def service_name(self) -> str:
        """The name of the ECS service that started it (its group ``service:<name>``), or ""."""
        return self.group[len("service:"):] if self.group.startswith("service:") else ""

    @property
    def stopping(self) -> bool:
        """Stopped, or on its way there (ECS never takes a STOPPED desiredStatus back)."""
        return self.last_status == STOPPED or self.desired_status == STOPPED

    @property
    def began(self) -> datetime | None:
        """When it started (``startedAt``, else ``createdAt``)."""
        return self.started_at or self.created_at

    def container(self, name: str) -> TaskContainer | None:
        return next((c for c in self.containers if c.name == name), None)


@dataclass(frozen=True)
class ContainerDefinition:
    """A container definition of a task definition."""

    name: str
    environment: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)  # dockerLabels
    port_mappings: tuple[PortBinding, ...] = ()
    health_check: bool = False  # a ``healthCheck`` with a command: ECS runs it
    start_period: float = 0.0  # that check's startPeriod, seconds

    @property
    def metadata(self) -> dict[str, str]:
        """Environment, then docker labels over it (registrator's order)."""
        return {**self.environment, **self.labels}


@dataclass(frozen=True)
class TaskDefinition:
    """A registered task definition revision (it never changes once registered)."""

    arn: str
    network_mode: str = "bridge"  # EC2's default when the definition names none
    containers: tuple[ContainerDefinition, ...] = ()


def network_mode(task: Task, definition: TaskDefinition) -> str:
    """awsvpc, bridge, host or none: Fargate is always awsvpc."""
    return "awsvpc" if task.launch_type == "FARGATE" else definition.network_mode

"""What ECS says about a task, and what it backs: the sweep's evidence before it probes.

Pure, like :mod:`ecssd_agent.sweep.decide`, which decides with it. A record's port and task id
come from the record, which any writer of the zone can forge, so the sweep probes a task only
at a port ECS confirms the task has (:func:`port_evidence`); ECS's own health check, where a
task definition has one, speaks for the container (:func:`ecs_vouches`); and a service is
judged only after its grace (:func:`grace_seconds`). Port ranges name no single port and are
not read: a record at a port inside one is unconfirmed or suspect, never probed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from ecssd_agent.core.ecs_task import HEALTHY, ContainerDefinition, Task, TaskDefinition
from ecssd_agent.core.metadata import Declaration, Problem, declarations
from ecssd_agent.core.ownership import Owner


@dataclass(frozen=True)
class TaskEvidence:
    """A task as DescribeTasks shows it, with its task definition when it was read (only for
    tasks whose instances are to be probed)."""

    task: Task
    definition: TaskDefinition | None = None

    @property
    def specs(self) -> tuple[ContainerDefinition, ...]:
        return self.definition.containers if self.definition is not None else ()

    @cached_property
    def services(self) -> tuple[Declaration, ...]:
        """The ``SERVICE_<port>_NAME`` declarations of its container definitions."""
        return tuple(d for spec in self.specs for d in declarations(spec.name, spec.metadata)[0])

    @cached_property
    def runtime_ids(self) -> dict[str, str]:
        """Container name -> Docker id, where ECS reports one."""
        return {c.name: c.runtime_id for c in self.task.containers if c.runtime_id}

    @property
    def awsvpc(self) -> bool:
        if self.task.launch_type == "FARGATE":
            return True
        if self.definition is not None:
            return self.definition.network_mode == "awsvpc"
        return bool(self.task.eni_ips)


def definition_problems(definition: TaskDefinition) -> list[Problem]:
    """The unusable health-check variables of a task definition (each falls back to the
    sweep's own setting for that service alone)."""
    return [p for spec in definition.containers
            for p in declarations(spec.name, spec.metadata)[1]]


@dataclass(frozen=True)
class Doubt:
    """Why a record's task is not probed at the record's port. ``suspect``: ECS says the task
    has ports, none of them this one (the record may be forged); else unconfirmed (yet)."""

    reason: str
    suspect: bool = False


def check_path(task: TaskEvidence | None, owner: Owner, default: str) -> str:
    """The HTTP path to check an instance at: its container's CHECK_HTTP, else ``default``."""
    port = owner_port(owner)
    if task is None or port is None:
        return default
    candidates = [s for s in task.services if s.port == port]
    if owner.container and task.runtime_ids:
        exact = [s for s in candidates
                 if task.runtime_ids.get(s.container, "").startswith(owner.container)]
        candidates = exact or candidates
    path = next((s.check_http for s in candidates if s.check_http), "")
    if not path:
        return default
    return path if path.startswith("/") else "/" + path


def owner_port(owner: Owner) -> int | None:
    number, _, _ = owner.port.partition("/")
    return int(number) if number.isdigit() else None


# --- what ECS backs ---------------------------------------------------------------------

def port_evidence(evidence: TaskEvidence, owner: Owner, port: int) -> Doubt | None:
    """Does ECS confirm that the record's task has the record's port?

    The port and the task id both come from the record, which any writer of the zone can
    forge; ECS's word decides whether probing that port says anything about that task.
    bridge/host mode: some container of the task (the record's own container, when ECS gives
    runtime ids that match it) has a ``networkBinding`` whose hostPort is the SRV port, of the
    record's protocol and, when the record names it, container port. awsvpc: a
    ``portMapping`` of the task definition has the SRV port as its containerPort (the port on
    the task's ENI). A task that has ports, none of them this one: suspect. ECS reporting no
    binding at all (a task still starting, or moto, which reports none) or an awsvpc
    definition mapping no port: unconfirmed (the caller waits). Neither is ever probed.
    """
    task = evidence.task
    protocol = owner.port.partition("/")[2] or "tcp"
    container_port = owner_port(owner)
    if evidence.awsvpc:
        mappings = [m for s in evidence.specs for m in s.port_mappings]
        if not mappings:
            return Doubt(f"the definition of task {task.id} maps no port: port {port} "
                         "cannot be confirmed")
        if any(m.container_port == port and m.protocol == protocol
               and container_port in (None, port) for m in mappings):
            return None
        return Doubt(f"record names task {task.id} at port {port}/{protocol}, which its "
                     f"awsvpc task definition does not map (it maps "
                     f"{_ports_text(m.container_port for m in mappings)})", suspect=True)
    if not any(c.bindings for c in task.containers):
        return Doubt(f"ECS reports no port bindings for task {task.id}: port {port} "
                     "cannot be confirmed")
    containers = list(task.containers)
    if owner.container:
        own = [c for c in containers if c.runtime_id and c.runtime_id.startswith(owner.container)]
        containers = own or containers
    bindings = [b for c in containers for b in c.bindings]
    if any(b.host_port == port and b.protocol == protocol
           and container_port in (None, b.container_port) for b in bindings):
        return None
    return Doubt(f"record names task {task.id} at port {port}/{protocol}, which ECS "
                 f"does not report bound (its host ports: "
                 f"{_ports_text(b.host_port for b in bindings)})", suspect=True)


def _ports_text(ports: Iterable[int]) -> str:
    return ", ".join(str(p) for p in sorted(set(ports))) or "none"


def service_containers(task: TaskEvidence, owner: Owner) -> set[str]:
    """Names of the task's container definitions that serve the record's container port:
    those declaring ``SERVICE_<port>_NAME`` for it (the record's own container when runtime
    ids tell), else those mapping the port."""
    port = owner_port(owner)
    if port is None:
        return set()
    declared = [s for s in task.services if s.port == port]
    if owner.container and task.runtime_ids:
        exact = [s for s in declared
                 if task.runtime_ids.get(s.container, "").startswith(owner.container)]
        declared = exact or declared
    if declared:
        return {s.container for s in declared}
    return {c.name for c in task.specs if any(m.container_port == port
                                               for m in c.port_mappings)}


def grace_seconds(task: TaskEvidence, owner: Owner, base: float) -> float:
    """Seconds after its start before the record's instance is judged: the longest of
    ``base`` (``GRACE_SECONDS``), the service's ``SERVICE_<port>_CHECK_GRACE`` and the ``startPeriod``
    of its container's own ECS healthCheck (during which ECS itself reports UNKNOWN)."""
    names = service_containers(task, owner)
    port = owner_port(owner)
    grace = base
    for decl in task.services:
        if decl.port == port and decl.container in names and decl.check_grace is not None:
            grace = max(grace, decl.check_grace)
    for spec in task.specs:
        if spec.name in names and spec.health_check:
            grace = max(grace, spec.start_period)
    return grace


def ecs_vouches(evidence: TaskEvidence, owner: Owner) -> str:
    """Why ECS's own health check speaks for the instance ("" when it does not).

    ECS's word counts only for a container whose definition has a ``healthCheck`` (without
    one ECS reports UNKNOWN; moto reports HEALTHY for every container). Such a container
    that ECS reports HEALTHY is not judged on our probe: a failed probe of a container that
    passes its own check says more about the path from the sweep than about the container.
    When the record's container cannot be told, the task's healthStatus HEALTHY (every
    essential container's check passes) vouches the same way. UNHEALTHY or UNKNOWN leave the
    judgement to the probe.
    """
    checked = {s.name for s in evidence.specs if s.health_check}
    if not checked:
        return ""
    task = evidence.task
    names = service_containers(evidence, owner)
    if names:
        healthy = sorted(c.name for c in task.containers
                         if c.name in names and c.name in checked and c.health_status == HEALTHY)
        return (f"ECS reports container {healthy[0]} of task {task.id} HEALTHY"
                if healthy else "")
    return f"ECS reports task {task.id} HEALTHY" if task.health_status == HEALTHY else ""

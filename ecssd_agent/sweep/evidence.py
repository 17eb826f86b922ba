"""What ECS says about a task, and what it backs: the sweep's evidence before it probes.

Pure, like :mod:`ecssd_agent.sweep.decide`, which decides with it. A record's port and task id
come from the record, which any writer of the zone can forge, so the sweep probes a task only
at a port ECS confirms the task has AND a container of the task declares a service on
(:func:`backing`); ECS's own health check, where a task definition has one, speaks for the
container (:func:`ecs_vouches`); a service is judged only after its grace
(:func:`grace_seconds`); and the sweeps in a row a task's service has failed are kept on the
task itself, as ECS tags (:func:`failures`, :func:`failure_tag`). Port ranges name no single
port and are not read: a record at a port inside one is unconfirmed or suspect, never probed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from ecssd_agent.core.ecs_task import (
    HEALTHY,
    ContainerDefinition,
    PortBinding,
    Task,
    TaskDefinition,
)
from ecssd_agent.core.metadata import Declaration, Problem, declarations
from ecssd_agent.core.ownership import Owner

#: The tag the sweep keeps a task's failed sweeps in, one per probed port:
#: ``ecssd:check-failures:<port>`` = how many sweeps in a row that port failed its check.
FAILURES_TAG = "ecssd:check-failures:"


@dataclass(frozen=True)
class TaskEvidence:
    """A task as DescribeTasks shows it, with its task definition when it was read (only for
    tasks whose instances are to be probed)."""

    task: Task
    definition: TaskDefinition | None = None

    @property
    def specs(self) -> tuple[ContainerDefinition, ...]:
        return self.definition.containers if self.definition is not None else ()

    def metadata(self, spec: ContainerDefinition) -> dict[str, str]:
        """A container's variables as its container sees them: the definition's environment,
        the task's container overrides over it, docker labels over both (the agent's order)."""
        return {**spec.environment, **self.task.env_overrides.get(spec.name, {}), **spec.labels}

    @cached_property
    def services(self) -> tuple[Declaration, ...]:
        """The ``SERVICE_<port>_NAME`` declarations of its containers."""
        return tuple(d for spec in self.specs
                     for d in declarations(spec.name, self.metadata(spec))[0])

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

    def declared(self, container: str, port: int) -> Declaration | None:
        return next((d for d in self.services if d.container == container and d.port == port),
                    None)


def definition_problems(definition: TaskDefinition) -> list[Problem]:
    """The unusable health-check variables of a task definition (each costs that service
    alone: its grace falls back to GRACE_SECONDS, or it is not checked)."""
    return [p for spec in definition.containers
            for p in declarations(spec.name, spec.metadata)[1]]


@dataclass(frozen=True)
class Doubt:
    """Why a record's task is not probed at the record's port. ``suspect``: ECS says the task
    has ports, none of them a declared service at this one (the record may be forged); else
    unconfirmed (yet)."""

    reason: str
    suspect: bool = False


def owner_port(owner: Owner) -> int | None:
    number, _, _ = owner.port.partition("/")
    return int(number) if number.isdigit() else None


# --- what ECS backs ---------------------------------------------------------------------

def backing(evidence: TaskEvidence, owner: Owner, port: int) -> Declaration | Doubt:
    """The service declaration that backs probing the record's task at ``port``, or why none.

    The port and the task id both come from the record, which any writer of the zone can
    forge; ECS's word decides whether probing that port says anything about that task, and
    the task's own definition whether it is a service at all. bridge/host mode: a container
    of the task (the record's own, when ECS's runtime ids tell it) has a ``networkBinding``
    whose hostPort is the SRV port, of the record's protocol and, when the record names it,
    container port; awsvpc: a ``portMapping`` of a container definition has the SRV port as
    its containerPort (the port on the task's ENI). That container must declare
    ``SERVICE_<container port>_NAME`` (environment, the task's container overrides, docker
    labels): a sidecar's metrics port, bound but undeclared, is never probed. A task with
    ports, none of them a declared one at ``port``: suspect. ECS reporting no binding at all
    (a task still starting, or moto, which reports none), an awsvpc definition mapping no
    port, or a definition not read: unconfirmed. Neither is ever probed.
    """
    task = evidence.task
    protocol = owner.port.partition("/")[2] or "tcp"
    container_port = owner_port(owner)
    if evidence.definition is None:
        return Doubt(f"the definition of task {task.id} was not read: port {port} cannot be "
                     "confirmed")
    if evidence.awsvpc:
        mapped = [(s.name, m) for s in evidence.specs for m in s.port_mappings]
        if not mapped:
            return Doubt(f"the definition of task {task.id} maps no port: port {port} "
                         "cannot be confirmed")
        ports = [(name, m.container_port) for name, m in mapped
                 if m.container_port == port and m.protocol == protocol
                 and container_port in (None, port)]
        where = "its awsvpc task definition does not map"
        shown = _ports_text(m.container_port for _, m in mapped)
    else:
        if not any(c.bindings for c in task.containers):
            return Doubt(f"ECS reports no port bindings for task {task.id}: port {port} "
                         "cannot be confirmed")
        containers = list(task.containers)
        if owner.container:
            own = [c for c in containers
                   if c.runtime_id and c.runtime_id.startswith(owner.container)]
            containers = own or containers
        bound: list[tuple[str, PortBinding]] = [(c.name, b) for c in containers
                                                for b in c.bindings]
        ports = [(name, b.container_port) for name, b in bound
                 if b.host_port == port and b.protocol == protocol
                 and container_port in (None, b.container_port)]
        where = "ECS does not report bound"
        shown = _ports_text(b.host_port for _, b in bound)
    if not ports:
        return Doubt(f"record names task {task.id} at port {port}/{protocol}, which {where} "
                      f"(its ports: {shown})", suspect=True)
    for name, cport in ports:
        declaration = evidence.declared(name, cport)
        if declaration is not None:
            return declaration
    name, cport = ports[0]
    return Doubt(f"record names task {task.id} at port {port}/{protocol}, container {name}'s "
                 f"port {cport}, which declares no SERVICE_{cport}_NAME", suspect=True)


def _ports_text(ports: Iterable[int]) -> str:
    return ", ".join(str(p) for p in sorted(set(ports))) or "none"


def check_path(declaration: Declaration, default: str) -> str:
    """The HTTP path to check a service at: its CHECK_HTTP, else ``default``."""
    path = declaration.check_http or default
    return path if path.startswith("/") else "/" + path


def grace_seconds(evidence: TaskEvidence, declaration: Declaration, base: float) -> float:
    """Seconds after its start before a service is judged: the longest of ``base``
    (``GRACE_SECONDS``), its ``SERVICE_<port>_CHECK_GRACE`` and the ``startPeriod`` of its
    container's own ECS healthCheck (during which ECS itself reports UNKNOWN)."""
    grace = max(base, declaration.check_grace or 0.0)
    for spec in evidence.specs:
        if spec.name == declaration.container and spec.health_check:
            grace = max(grace, spec.start_period)
    return grace


def ecs_vouches(evidence: TaskEvidence, declaration: Declaration) -> str:
    """Why ECS's own health check speaks for the service's container ("" when it does not).

    ECS's word counts only for a container whose definition has a ``healthCheck`` (without
    one ECS reports UNKNOWN; moto reports HEALTHY for every container). Such a container
    that ECS reports HEALTHY is not judged on our probe: a failed probe of a container that
    passes its own check says more about the path from the sweep than about the container.
    UNHEALTHY or UNKNOWN leave the judgement to the probe.
    """
    name = declaration.container
    if not any(s.name == name and s.health_check for s in evidence.specs):
        return ""
    container = evidence.task.container(name)
    if container is not None and container.health_status == HEALTHY:
        return f"ECS reports container {name} of task {evidence.task.id} HEALTHY"
    return ""


# --- failures in a row, kept on the task ---------------------------------------------------

def failures(task: Task, port: int) -> int:
    """How many sweeps in a row ``port`` of the task failed its check, as its tag says (0 when
    untagged, or when the tag is not a count: someone else's value is not evidence)."""
    text = task.tags.get(f"{FAILURES_TAG}{port}", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 4 else 0


def failure_tag(port: int) -> str:
    return f"{FAILURES_TAG}{port}"


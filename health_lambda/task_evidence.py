"""What ECS says about a task, and what it backs: the sweep's evidence before it probes.

Pure, like :mod:`health_lambda.sweep`, which decides with it. A record's port and task id
come from the record, which any writer of the zone can forge, so the sweep probes a task only
at a port ECS confirms the task has (:func:`port_evidence`); ECS's own health check, where a
task definition has one, speaks for the container (:func:`ecs_vouches`); and a service is
judged only after its grace (:func:`grace_seconds`). The views are filled by
:mod:`health_lambda.observe` from DescribeTasks and DescribeTaskDefinition (moto reports no
``networkBindings`` and every container HEALTHY; the tests feed real shapes).

Port ranges (``containerPortRange``/``hostPortRange`` bindings) name no single port and are
not read: a record at a port inside one is unconfirmed or suspect, never probed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ecssd_agent.core.ownership import Owner

_SERVICE_NAME_VAR = re.compile(r"^SERVICE_([0-9]{1,5})_NAME$")


@dataclass(frozen=True)
class ServiceDecl:
    """A ``SERVICE_<port>_NAME`` declared by a container definition of the task."""

    container: str  # container definition name
    port: int
    check_http: str = ""
    check_grace: float | None = None  # SERVICE_<port>_CHECK_GRACE, seconds


@dataclass(frozen=True)
class Binding:
    """A port ECS knows a container has (observed binding or declared mapping)."""

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"


@dataclass(frozen=True)
class ContainerSpec:
    """A container definition, as far as judging its health needs."""

    name: str
    port_mappings: tuple[Binding, ...] = ()
    health_check: bool = False  # ECS runs the definition's own healthCheck
    start_period: float = 0.0  # that check's startPeriod, seconds


@dataclass(frozen=True)
class ContainerState:
    """A running container of the task, as DescribeTasks reports it."""

    name: str
    runtime_id: str = ""
    health: str = ""  # HEALTHY, UNHEALTHY, UNKNOWN
    bindings: tuple[Binding, ...] = ()  # networkBindings (bridge and host network modes)


@dataclass(frozen=True)
class TaskView:
    id: str
    last_status: str
    desired_status: str
    container_instance_arn: str = ""
    started_at: float | None = None  # epoch seconds (startedAt, else createdAt)
    eni_ips: tuple[str, ...] = ()
    services: tuple[ServiceDecl, ...] = ()
    runtime_ids: Mapping[str, str] = field(default_factory=dict)  # container name -> docker id
    network_mode: str = ""  # the task definition's ("" when it was not read)
    health: str = ""  # the task's healthStatus
    containers: tuple[ContainerState, ...] = ()
    specs: tuple[ContainerSpec, ...] = ()

    @property
    def gone(self) -> bool:
        return self.last_status == "STOPPED" or self.desired_status == "STOPPED"

    @property
    def awsvpc(self) -> bool:
        return self.network_mode == "awsvpc" or (not self.network_mode and bool(self.eni_ips))


@dataclass(frozen=True)
class Doubt:
    """Why a record's task is not probed at the record's port. ``suspect``: ECS says the task
    has ports, none of them this one (the record may be forged); else unconfirmed (yet)."""

    reason: str
    suspect: bool = False


# --- the task definition's declarations ---------------------------------------------------

def service_decls(containers: Iterable[tuple[str, Mapping[str, str], Mapping[str, str]]]
                  ) -> tuple[ServiceDecl, ...]:
    """(name, environment, docker labels) of container definitions -> declared services."""
    return parse_services(containers)[0]


def parse_services(containers: Iterable[tuple[str, Mapping[str, str], Mapping[str, str]]]
                   ) -> tuple[tuple[ServiceDecl, ...], list[str]]:
    """Declared services, and one problem per unusable ``SERVICE_<port>_CHECK_GRACE`` (naming
    the container and the variable). A bad grace falls back to ``GRACE_SECONDS`` for that
    service alone: one container's typo never blocks the judging of another."""
    out: list[ServiceDecl] = []
    problems: list[str] = []
    for name, environment, labels in containers:
        merged = {**environment, **labels}  # labels win, as in the agent
        for variable in sorted(merged):
            match = _SERVICE_NAME_VAR.match(variable)
            if match and merged[variable].strip():
                port = int(match[1])
                grace_var = f"SERVICE_{port}_CHECK_GRACE"
                grace, problem = _seconds(merged.get(grace_var))
                if problem:
                    problems.append(f"container {name}: {grace_var}={merged[grace_var]!r} "
                                    f"{problem}; GRACE_SECONDS applies")
                out.append(ServiceDecl(name, port,
                                       merged.get(f"SERVICE_{port}_CHECK_HTTP", "").strip(),
                                       grace))
    return tuple(out), problems


def _seconds(value: str | None) -> tuple[float | None, str]:
    if value is None or not value.strip():
        return None, ""
    try:
        seconds = float(value.strip().removesuffix("s"))
    except ValueError:
        return None, "is not a number of seconds"
    if not math.isfinite(seconds) or seconds < 0:
        return None, "must be a finite number of seconds, at least 0"
    return seconds, ""


def check_path(task: TaskView | None, owner: Owner, default: str) -> str:
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

def port_evidence(task: TaskView, owner: Owner, port: int) -> Doubt | None:
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
    protocol = owner.port.partition("/")[2] or "tcp"
    container_port = owner_port(owner)
    if task.awsvpc:
        mappings = [m for s in task.specs for m in s.port_mappings]
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


def service_containers(task: TaskView, owner: Owner) -> set[str]:
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


def grace_seconds(task: TaskView, owner: Owner, base: float) -> float:
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


def ecs_vouches(task: TaskView, owner: Owner) -> str:
    """Why ECS's own health check speaks for the instance ("" when it does not).

    ECS's word counts only for a container whose definition has a ``healthCheck`` (without
    one ECS reports UNKNOWN; moto reports HEALTHY for every container). Such a container
    that ECS reports HEALTHY is not judged on our probe: a failed probe of a container that
    passes its own check says more about the path from the sweep than about the container.
    When the record's container cannot be told, the task's healthStatus HEALTHY (every
    essential container's check passes) vouches the same way. UNHEALTHY or UNKNOWN leave the
    judgement to the probe.
    """
    checked = {s.name for s in task.specs if s.health_check}
    if not checked:
        return ""
    names = service_containers(task, owner)
    if names:
        healthy = sorted(c.name for c in task.containers
                         if c.name in names and c.name in checked and c.health == "HEALTHY")
        return (f"ECS reports container {healthy[0]} of task {task.id} HEALTHY"
                if healthy else "")
    return f"ECS reports task {task.id} HEALTHY" if task.health == "HEALTHY" else ""

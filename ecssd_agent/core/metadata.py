"""Registrator-compatible service metadata: ``SERVICE_<port>_NAME`` and friends -> instances.

Pure: a :class:`~ecssd_agent.core.model.Container` in, service instances and problems out. A bad
variable becomes one problem naming the container and the variable, and only that service is
skipped, so one typo never hides the other services of the container, let alone other
containers. Labels win over environment variables because a label can be changed by an
operator without rebuilding the task's environment (registrator's order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ecssd_agent.core import naming
from ecssd_agent.core.model import Container, ServiceInstance

_SERVICE_VAR = re.compile(r"^SERVICE_(?P<port>[^_]+)_(?P<key>NAME|IGNORE|CHECK_HTTP)$")
_TRUE = {"1", "true", "yes", "on", "y", "t"}

ECS_TASK_ARN = "com.amazonaws.ecs.task-arn"
ECS_CLUSTER = "com.amazonaws.ecs.cluster"
ECS_CONTAINER_NAME = "com.amazonaws.ecs.container-name"


@dataclass(frozen=True)
class Problem:
    """A service that was skipped, and why, in words an operator can act on."""

    container_id: str
    container_name: str
    variable: str
    reason: str

    def __str__(self) -> str:
        who = self.container_name or self.container_id[:12]
        return f"container {who} ({self.container_id[:12]}): {self.variable}: {self.reason}"


def merged_metadata(container: Container) -> dict[str, str]:
    """Environment first, then labels over it."""
    merged = dict(container.env)
    merged.update(container.labels)
    return merged


def is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def _published_port(
    container: Container, port: int, protocol: str | None
) -> tuple[str, int] | None:
    """The (protocol, client port) of a container port, or None when not reachable.

    With host networking the container port is the host port, published or not; in bridge
    mode only a published port is reachable, at its host port.
    """
    if container.network_mode == "host":
        if protocol:
            return protocol, port
        only_udp = f"{port}/udp" in container.ports and f"{port}/tcp" not in container.ports
        return ("udp" if only_udp else "tcp"), port
    for proto in [protocol] if protocol else ["tcp", "udp"]:
        host_ports = container.ports.get(f"{port}/{proto}", ())
        if host_ports:
            return proto, min(host_ports)
    return None


def _declared_protocol(name: str) -> str | None:
    labels = name.split(".")
    if "_udp" in labels:
        return "udp"
    if "_tcp" in labels:
        return "tcp"
    return None


def service_instances(container: Container) -> tuple[list[ServiceInstance], list[Problem]]:
    """Every service a running container declares, with the problems of those it skipped."""
    meta = merged_metadata(container)
    if not container.running or is_true(meta.get("SERVICE_IGNORE")):
        return [], []

    def problem(variable: str, reason: str) -> Problem:
        return Problem(container.id, container.name, variable, reason)

    by_port: dict[str, dict[str, str]] = {}
    for variable, value in meta.items():
        match = _SERVICE_VAR.match(variable)
        if match:
            by_port.setdefault(match["port"], {})[match["key"]] = value

    instances: list[ServiceInstance] = []
    problems: list[Problem] = []
    task_arn = container.labels.get(ECS_TASK_ARN, "")
    cluster = naming.cluster_name(container.labels.get(ECS_CLUSTER, ""))
    for port_text, keys in sorted(by_port.items()):
        variable = f"SERVICE_{port_text}_NAME"
        if "NAME" not in keys or is_true(keys.get("IGNORE")):
            continue
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            problems.append(problem(variable, f"port {port_text!r} is not a number in 1-65535"))
            continue
        port = int(port_text)
        raw_name = keys["NAME"].strip().lower()
        try:
            naming.check_name(raw_name)
        except naming.InvalidName as exc:
            problems.append(problem(variable, f"invalid service name: {exc}"))
            continue
        published = _published_port(container, port, _declared_protocol(raw_name))
        if published is None:
            problems.append(problem(
                variable,
                f"container port {port} is not published on the host "
                f"(publish it, e.g. -p {port} or a portMapping with hostPort 0)",
            ))
            continue
        protocol, client_port = published
        instances.append(ServiceInstance(
            name=raw_name,
            protocol=protocol,
            container_port=port,
            port=client_port,
            container_id=container.id,
            container_name=container.labels.get(ECS_CONTAINER_NAME, container.name),
            cluster=cluster,
            task_arn=task_arn,
            check_http=keys.get("CHECK_HTTP", "").strip(),
        ))
    return instances, problems


def environment_list(pairs: list[str] | None) -> Mapping[str, str]:
    """Docker's ``["K=V", ...]`` -> a dict (a bare ``K`` means an empty value)."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        env[key] = value
    return env

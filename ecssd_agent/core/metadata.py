"""Registrator-compatible service metadata: the one parser of every ``SERVICE_<port>_*``
variable (``NAME``, ``IGNORE``, ``CHECK``, ``CHECK_HTTP``, ``CHECK_GRACE``, ``WEIGHT``,
``PRIORITY``).

Pure: a :class:`~ecssd_agent.core.model.Container` in, service instances and problems out
(:func:`service_instances`, for the records); or a container definition's variables in, what
each port declares for its health checks (:func:`declarations`, for the health sweep). A bad
variable becomes one problem naming the container and the variable, and only that service is
skipped, so one typo never hides the other services of the container, let alone other
containers. Labels win over environment variables because a label can be changed by an
operator without rebuilding the task's environment (registrator's order).

``SERVICE_<port>_WEIGHT`` (0-255) and ``SERVICE_<port>_PRIORITY`` (0-65535) follow the same
rule: a value that is not a whole number in range skips that service with one problem,
rather than registering it at the default. A weight is how an operator sizes a canary's
share; an instance published at a weight it did not ask for could take ten times the
traffic meant for it, which is worse than not being found until the variable is fixed.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from ecssd_agent.core import naming
from ecssd_agent.core.model import (
    DEFAULT_PRIORITY,
    DEFAULT_WEIGHT,
    MAX_PRIORITY,
    MAX_WEIGHT,
    Container,
    ServiceInstance,
)

_SERVICE_VAR = re.compile(
    r"^SERVICE_(?P<port>[^_]+)_(?P<key>NAME|IGNORE|CHECK|CHECK_HTTP|CHECK_GRACE|WEIGHT|PRIORITY)$")
_NUMBERS = (("WEIGHT", MAX_WEIGHT, DEFAULT_WEIGHT), ("PRIORITY", MAX_PRIORITY, DEFAULT_PRIORITY))
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
        short = f" ({self.container_id[:12]})" if self.container_id else ""
        return f"container {who}{short}: {self.variable}: {self.reason}"


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


def _numbers(keys: Mapping[str, str]) -> tuple[dict[str, int], tuple[str, str] | None]:
    """A service's WEIGHT and PRIORITY (the defaults when not declared), or the first bad one
    as (key, reason): anything but a whole number in range (``-1``, ``1.5``, ``x``, empty)."""
    found: dict[str, int] = {}
    for key, maximum, default in _NUMBERS:
        value = keys.get(key)
        if value is None:
            found[key] = default
            continue
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > maximum:
            return found, (key, f"{value!r} is not a whole number in 0-{maximum}")
        found[key] = int(text)
    return found, None


def _declared_protocol(name: str) -> str | None:
    labels = name.split(".")
    if "_udp" in labels:
        return "udp"
    if "_tcp" in labels:
        return "tcp"
    return None


def _by_port(meta: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``SERVICE_<port>_<key>`` variables, grouped by the port as written."""
    by_port: dict[str, dict[str, str]] = {}
    for variable, value in meta.items():
        match = _SERVICE_VAR.match(variable)
        if match:
            by_port.setdefault(match["port"], {})[match["key"]] = value
    return by_port


def declares_a_name(meta: Mapping[str, str]) -> bool:
    """Whether any ``SERVICE_<port>_NAME`` is among these variables."""
    return any("NAME" in keys for keys in _by_port(meta).values())


def service_instances(container: Container) -> tuple[list[ServiceInstance], list[Problem]]:
    """Every service a running container declares, with the problems of those it skipped."""
    meta = merged_metadata(container)
    if not container.running or is_true(meta.get("SERVICE_IGNORE")):
        return [], []

    def problem(variable: str, reason: str) -> Problem:
        return Problem(container.id, container.name, variable, reason)

    by_port = _by_port(meta)

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
        numbers, bad = _numbers(keys)
        if bad is not None:
            problems.append(problem(f"SERVICE_{port_text}_{bad[0]}", bad[1]))
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
            weight=numbers["WEIGHT"],
            priority=numbers["PRIORITY"],
        ))
    return instances, problems


class Check(str, Enum):
    """How the health sweep checks a service (``SERVICE_<port>_CHECK``, default ``http``)."""

    HTTP = "http"  # GET CHECK_HTTP (or the sweep's path); 2xx is healthy
    TCP = "tcp"  # a TCP connection accepted is healthy
    NONE = "none"  # never checked: the service is judged by ECS alone (its task's state)


@dataclass(frozen=True)
class Declaration:
    """What one ``SERVICE_<port>_NAME`` of a container declares about checking its health.

    ``unusable`` says why the declared check cannot be run as written (a misspelt CHECK, a
    CHECK_HTTP that is no request path): that service gets no verdict, never a guessed one.
    """

    container: str  # the container (definition) name
    port: int
    check_http: str = ""  # SERVICE_<port>_CHECK_HTTP
    check_grace: float | None = None  # SERVICE_<port>_CHECK_GRACE, seconds
    check: Check = Check.HTTP  # SERVICE_<port>_CHECK
    unusable: str = ""


def grace_seconds(value: str | None) -> tuple[float | None, str]:
    """``SERVICE_<port>_CHECK_GRACE`` (``"90"`` or ``"90s"``) -> (seconds, "") or (None, why)."""
    if value is None or not value.strip():
        return None, ""
    try:
        seconds = float(value.strip().removesuffix("s"))
    except ValueError:
        return None, "is not a number of seconds"
    if not math.isfinite(seconds) or seconds < 0:
        return None, "must be a finite number of seconds, at least 0"
    return seconds, ""


def check_kind(value: str | None) -> tuple[Check | None, str]:
    """``SERVICE_<port>_CHECK`` -> (the check, "") or (None, why); unset or empty is http."""
    text = (value or "").strip().lower()
    if not text:
        return Check.HTTP, ""
    try:
        return Check(text), ""
    except ValueError:
        return None, f"is not one of {', '.join(c.value for c in Check)}"


def request_path_problem(path: str) -> str:
    """Why ``path`` cannot be sent as an HTTP request target ("" when it can).

    HTTP sends the target in ASCII: a non-ASCII character has to be percent-encoded, and
    which bytes were meant (UTF-8, Latin-1) is the service's to say, not the sweep's to
    guess; a space or a control character would end or split the request line.
    """
    if not path.isascii():
        encoded = urllib.parse.quote(path, safe="/?#[]@!$&'()*+,;=:%~")
        return f"is not ASCII: percent-encode it ({encoded!r} for UTF-8)"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in path):
        return "contains a space or a control character"
    return ""


def declarations(container: str, meta: Mapping[str, str]) -> tuple[list[Declaration], list[Problem]]:
    """The ports a container declares a ``SERVICE_<port>_NAME`` for (not ignored), with their
    health-check variables; ``meta`` as :func:`merged_metadata` merges them. An unusable
    ``SERVICE_<port>_CHECK_GRACE`` is one problem and leaves that port's grace unset; an
    unusable ``CHECK`` or ``CHECK_HTTP`` is one problem and makes the declaration
    :attr:`~Declaration.unusable`. Either way the service is still declared."""
    found: list[Declaration] = []
    problems: list[Problem] = []
    if is_true(meta.get("SERVICE_IGNORE")):
        return found, problems

    def problem(port_text: str, key: str, value: str, why: str) -> str:
        variable = f"SERVICE_{port_text}_{key}"
        problems.append(Problem("", container, variable, f"{value!r} {why}"))
        return f"{variable}={value!r} {why}"

    for port_text, keys in sorted(_by_port(meta).items()):
        if not (port_text.isdigit() and len(port_text) <= 5 and keys.get("NAME", "").strip()):
            continue
        if is_true(keys.get("IGNORE")):
            continue
        grace, bad = grace_seconds(keys.get("CHECK_GRACE"))
        if bad:
            problem(port_text, "CHECK_GRACE", keys["CHECK_GRACE"], f"{bad}: GRACE_SECONDS applies")
        unusable = ""
        check, bad = check_kind(keys.get("CHECK"))
        if check is None:
            unusable = problem(port_text, "CHECK", keys["CHECK"], f"{bad}: the service is not "
                               "checked")
        path = keys.get("CHECK_HTTP", "").strip()
        bad = request_path_problem(path)
        if bad and check in (Check.HTTP, None):
            unusable = unusable or problem(port_text, "CHECK_HTTP", path,
                                           f"{bad}: the service is not checked")
        found.append(Declaration(container, int(port_text), path, grace, check or Check.HTTP,
                                 unusable))
    return found, problems


def environment_list(pairs: list[str] | None) -> Mapping[str, str]:
    """Docker's ``["K=V", ...]`` -> a dict (a bare ``K`` means an empty value)."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        env[key] = value
    return env

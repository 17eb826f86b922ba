"""The record model shared by the agent, both Lambdas, the DNS server and the benchmarks.

Everything here is a frozen value: the planning core compares them, puts them in sets and
hands them between threads, so they must not change under it. Nothing here knows the
Route 53 wire format (that is :mod:`ecssd_agent.aws.route53`) or talks to any system.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: A service instance's weight and priority when its container declares none: SRV fields
#: ``1 1`` and Route 53 weight 1, the values every record of such a container carries.
DEFAULT_WEIGHT = 1
DEFAULT_PRIORITY = 1
#: Route 53 takes a Weight of 0-255; SERVICE_<port>_WEIGHT is both that and the SRV weight,
#: so it is held to Route 53's range. An SRV priority is any 16-bit number.
MAX_WEIGHT = 255
MAX_PRIORITY = 65535


class Routing(str, Enum):
    """How Route 53 answers for a name served by several record sets."""

    WEIGHTED = "weighted"  # one record set per answer, chosen by weight
    MULTIVALUE = "multivalue"  # up to eight healthy record sets per answer


class Action(str, Enum):
    """A Route 53 change action, in the order a batch must apply them."""

    DELETE = "DELETE"
    UPSERT = "UPSERT"
    CREATE = "CREATE"


@dataclass(frozen=True)
class RecordSet:
    """One Route 53 resource record set, as the planning core sees it.

    ``name`` is absolute and lowercase with its trailing dot; ``values`` are sorted so two
    equal record sets compare equal whatever order the API listed them in. ``listed`` keeps
    the record set exactly as the API returned it: a DELETE must send that, not a rebuild.
    """

    name: str
    type: str
    values: tuple[str, ...]
    ttl: int | None = None
    set_identifier: str | None = None
    weight: int | None = None
    multivalue: bool = False
    health_check_id: str | None = None
    alias: bool = False
    listed: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def key(self) -> tuple[str, str, str | None]:
        """Route 53's identity of a record set: two sets with one key cannot coexist."""
        return (self.name, self.type, self.set_identifier)

    @property
    def routing(self) -> Routing | None:
        if self.weight is not None:
            return Routing.WEIGHTED
        if self.multivalue:
            return Routing.MULTIVALUE
        return None

    def describe(self) -> str:
        """The log form: ``SRV _calc._tcp.zone. 1 1 32768 ip-1.zone.``."""
        return f"{self.type} {self.name} {' '.join(self.values)}"


@dataclass(frozen=True)
class Change:
    action: Action
    record: RecordSet


@dataclass(frozen=True)
class Container:
    """What the agent needs to know about one container, independent of the Docker API.

    ``ports`` maps a container port spec (``"8081/tcp"``) to the host ports it is published
    on (empty when exposed but not published). ``health`` is Docker's health status
    ("starting", "healthy", "unhealthy"), or "" when the container has no health check (or
    the agent runs without the health gate).
    """

    id: str
    name: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    ports: Mapping[str, tuple[int, ...]]
    network_mode: str = "bridge"
    running: bool = True
    health: str = ""

    @property
    def publishable(self) -> bool:
        """No health check, or a healthy one: a "starting" or "unhealthy" container would
        receive traffic it cannot serve, so its records wait (the health gate)."""
        return self.health in ("", "healthy")


@dataclass(frozen=True)
class ServiceInstance:
    """One ``SERVICE_<port>_NAME`` of one container: what an SRV record will point at."""

    name: str  # as declared, lowercase, relative to the zone: "calc" or "_calc._tcp"
    protocol: str  # "tcp" | "udp"
    container_port: int
    port: int  # the port clients connect to: the host port (bridge) or the container port
    container_id: str
    container_name: str = ""
    cluster: str = ""
    task_arn: str = ""
    check_http: str = ""  # SERVICE_<port>_CHECK_HTTP, the health path, if declared
    weight: int = DEFAULT_WEIGHT  # SERVICE_<port>_WEIGHT: the Route 53 weight and SRV weight
    priority: int = DEFAULT_PRIORITY  # SERVICE_<port>_PRIORITY: the SRV priority


@dataclass(frozen=True)
class Host:
    """The host an agent runs on: its A record is ``<label>.<zone>`` -> ``ip``."""

    label: str
    ip: str

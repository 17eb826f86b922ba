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


class Routing(str, Enum):
    """How Route 53 answers for a name served by several record sets."""

    WEIGHTED = "weighted"  # one record set per answer, chosen by weight (the reference's way)
    MULTIVALUE = "multivalue"  # up to eight healthy record sets per answer


class Action(str, Enum):
    """A Route 53 change action, in the order a batch must apply them."""

    DELETE = "DELETE"
    UPSERT = "UPSERT"
    CREATE = "CREATE"


@dataclass(frozen=True)
class Owner:
    """Who a record set belongs to; carried in its SetIdentifier (see :mod:`naming`).

    ``host`` is the agent's host label (``ip-10-0-0-12``) for records an agent writes, or ""
    for records of awsvpc/Fargate tasks written by the task-events Lambda. ``container`` and
    ``port`` say which service instance; they are "" for a host's own A record. ``cluster``
    and ``task`` name the ECS task when known, so the health sweep can tell whether the record's
    task still runs without guessing from IPs and ports.
    """

    host: str = ""
    container: str = ""
    port: str = ""  # "8081/tcp": the container port and protocol
    cluster: str = ""  # the cluster name, or "#" + a digest when the name is too long to carry
    task: str = ""  # the task id (last part of the task ARN)
    kind: str = "h"  # "h": a host agent's record; "t": a task's record (task-events Lambda)

    @property
    def is_host_record(self) -> bool:
        return self.kind == "h" and not self.container and not self.port


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
    on (empty when exposed but not published).
    """

    id: str
    name: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    ports: Mapping[str, tuple[int, ...]]
    network_mode: str = "bridge"
    running: bool = True


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


@dataclass(frozen=True)
class Host:
    """The host an agent runs on: its A record is ``<label>.<zone>`` -> ``ip``."""

    label: str
    ip: str

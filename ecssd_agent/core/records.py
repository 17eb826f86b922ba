"""Desired record sets: service instances -> SRV and A record sets, with their owners.

Pure. Also the one place that writes and reads SRV values (``priority weight port target``),
so the agent, the Lambdas and the DNS server agree on them.

An instance's weight (``SERVICE_<port>_WEIGHT``) is written twice: as the Route 53 Weight of
its record set, which decides how often Route 53 answers it under weighted routing (one
record set per answer), and as the SRV weight field, which is what clients use to choose
among the records of one answer (RFC 2782) -- the only place a weight can act under
multivalue routing, where Route 53 has no Weight. Its priority is the SRV priority field.
A host's or a task's own A record is the only record set at its name, so it keeps weight 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ecssd_agent.core import naming, ownership
from ecssd_agent.core.metadata import Problem
from ecssd_agent.core.model import (
    DEFAULT_PRIORITY,
    DEFAULT_WEIGHT,
    MAX_WEIGHT,
    Host,
    RecordSet,
    Routing,
    ServiceInstance,
)
from ecssd_agent.core.ownership import Owner

SRV_PRIORITY = DEFAULT_PRIORITY
SRV_WEIGHT = DEFAULT_WEIGHT


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str  # absolute, with the trailing dot


def srv_value(port: int, target: str, priority: int = SRV_PRIORITY, weight: int = SRV_WEIGHT) -> str:
    if not 0 < port < 65536:
        raise ValueError(f"SRV port {port} out of range")
    if not (0 <= priority < 65536 and 0 <= weight < 65536):
        raise ValueError(f"SRV priority {priority} or weight {weight} out of range (0-65535)")
    return f"{priority} {weight} {port} {target.rstrip('.').lower()}."


def parse_srv(value: str) -> Srv:
    """``"1 1 32768 ip-1.zone."`` -> :class:`Srv`; raises ValueError on anything else."""
    parts = value.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        raise ValueError(f"not an SRV value: {value!r}")
    priority, weight, port = (int(p) for p in parts[:3])
    if priority > 65535 or weight > 65535 or port > 65535:
        raise ValueError(f"SRV field out of range: {value!r}")
    target = parts[3].lower()
    return Srv(priority, weight, port, target if target.endswith(".") else target + ".")


def routed(
    name: str, rtype: str, values: Iterable[str], owner: Owner, routing: Routing, ttl: int,
    weight: int = DEFAULT_WEIGHT,
) -> RecordSet:
    """A record set with our SetIdentifier and the routing policy's fields.

    ``weight`` is the Route 53 Weight under weighted routing; multivalue has none.
    """
    if not 0 <= weight <= MAX_WEIGHT:
        raise ValueError(f"Route 53 weight {weight} out of range (0-{MAX_WEIGHT})")
    return RecordSet(
        name=name,
        type=rtype,
        values=tuple(sorted(values)),
        ttl=ttl,
        set_identifier=ownership.set_identifier(owner),
        weight=weight if routing is Routing.WEIGHTED else None,
        multivalue=routing is Routing.MULTIVALUE,
    )


def instance_owner(host_label: str, instance: ServiceInstance) -> Owner:
    return Owner(
        host=host_label,
        container=instance.container_id[:12],
        port=f"{instance.container_port}/{instance.protocol}",
        cluster=instance.cluster,
        task=naming.task_id(instance.task_arn),
    )


def host_records(
    host: Host,
    instances: Iterable[ServiceInstance],
    zone: str,
    routing: Routing,
    ttl: int,
) -> tuple[list[RecordSet], list[Problem]]:
    """The record sets a host should own: its A record and one SRV per instance.

    An instance whose name cannot live in the zone (too long once the zone is appended)
    becomes a problem and is skipped; the others are unaffected.
    """
    target = naming.host_record_name(host.label, zone)
    records = [routed(target, "A", [host.ip], Owner(host=host.label), routing, ttl)]
    problems: list[Problem] = []
    seen: set[tuple[str, str, str | None]] = set()
    for instance in instances:
        try:
            name = naming.record_name(instance.name, zone)
            record = routed(
                name, "SRV", [srv_value(instance.port, target, instance.priority, instance.weight)],
                instance_owner(host.label, instance), routing, ttl, instance.weight,
            )
        except (naming.InvalidName, ValueError) as exc:
            problems.append(Problem(
                instance.container_id, instance.container_name,
                f"SERVICE_{instance.container_port}_NAME", str(exc),
            ))
            continue
        if record.key in seen:  # the same service declared twice for one port and protocol
            continue
        seen.add(record.key)
        records.append(record)
    return records, problems

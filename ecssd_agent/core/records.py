"""Desired record sets: service instances -> SRV and A record sets, with their owners.

Pure. Also the one place that writes and reads SRV values (``priority weight port target``),
so the agent, the Lambdas and the DNS server agree on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ecssd_agent.core import naming
from ecssd_agent.core.metadata import Problem
from ecssd_agent.core.model import Host, Owner, RecordSet, Routing, ServiceInstance

SRV_PRIORITY = 1
SRV_WEIGHT = 1


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str  # absolute, with the trailing dot


def srv_value(port: int, target: str, priority: int = SRV_PRIORITY, weight: int = SRV_WEIGHT) -> str:
    if not 0 < port < 65536:
        raise ValueError(f"SRV port {port} out of range")
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
    name: str, rtype: str, values: Iterable[str], owner: Owner, routing: Routing, ttl: int
) -> RecordSet:
    """A record set with our SetIdentifier and the routing policy's fields."""
    return RecordSet(
        name=name,
        type=rtype,
        values=tuple(sorted(values)),
        ttl=ttl,
        set_identifier=naming.set_identifier(owner),
        weight=1 if routing is Routing.WEIGHTED else None,
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
                name, "SRV", [srv_value(instance.port, target)],
                instance_owner(host.label, instance), routing, ttl,
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

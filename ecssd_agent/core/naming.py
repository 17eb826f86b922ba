"""Record names and the ownership scheme: the only code that builds or parses a SetIdentifier.

Ownership lives in the SetIdentifier, as registrator kept it in its service IDs, because a
SetIdentifier is the one field of a record set that is ours to choose, is returned by every
listing at no extra cost, and makes two hosts' records of one name distinct. The scheme::

    ecssd:h:<host>                                           a host's A record
    ecssd:h:<host>:<container>:<port>/<proto>:<cluster>:<task>   a service instance on a host
    ecssd:t:<cluster>:<task>:<port>/<proto>                  a record of an awsvpc/Fargate task

``<container>`` is the first 12 characters of the Docker id, ``<task>`` the task id (the last
part of its ARN); ``<cluster>`` and ``<task>`` are empty for containers ECS did not start.
None of the fields can contain ``:`` (DNS labels, hex ids, ECS names), so parsing is exact: a
SetIdentifier that does not parse completely is not ours, and is never changed.

Route 53 limits a SetIdentifier to 128 characters. The longest fields are the host label
(a DNS label, at most 63) and the cluster name (up to 255); when the whole does not fit,
the cluster is carried as ``#`` plus the first 16 hex digits of its SHA-256, which
:func:`cluster_matches` still recognises.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from ecssd_agent.core.model import Owner, RecordSet

PREFIX = "ecssd"
MAX_SET_IDENTIFIER = 128
MAX_NAME = 253
MAX_LABEL = 63

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ID_FIELD = re.compile(r"^[A-Za-z0-9_./-]*$")
_PORT_FIELD = re.compile(r"^([0-9]{1,5})/(tcp|udp)$")


class InvalidName(ValueError):
    """A name that cannot be a DNS name in the zone; the message says why."""


def zone_fqdn(domain: str) -> str:
    """``servicediscovery.internal`` -> ``servicediscovery.internal.`` (lowercase, validated)."""
    name = domain.strip().lower().rstrip(".")
    check_name(name)
    return name + "."


def check_name(name: str) -> None:
    """Raise :class:`InvalidName` unless ``name`` (relative or absolute) is a valid DNS name."""
    bare = name.rstrip(".")
    if not bare:
        raise InvalidName("empty name")
    if len(bare) > MAX_NAME:
        raise InvalidName(f"{bare!r} is longer than {MAX_NAME} characters")
    for label in bare.split("."):
        if not _LABEL.match(label):
            raise InvalidName(
                f"{bare!r} has an invalid label {label!r} (1-63 of a-z, 0-9, '-', '_'; "
                "no leading or trailing '-')"
            )


def record_name(relative: str, zone: str) -> str:
    """The absolute name of ``relative`` in ``zone``; an absolute name in the zone is kept.

    ``calc`` -> ``calc.zone.``; ``_calc._tcp`` -> ``_calc._tcp.zone.``;
    ``calc.zone`` or ``calc.zone.`` -> ``calc.zone.``. Raises :class:`InvalidName`.
    """
    name = relative.strip().lower()
    zone_bare = zone.rstrip(".")
    if name.endswith("."):
        name = name[:-1]
        if name != zone_bare and not name.endswith("." + zone_bare):
            raise InvalidName(f"{relative!r} is not in the zone {zone_bare}")
        full = name
    elif name == zone_bare or name.endswith("." + zone_bare):
        full = name
    else:
        full = f"{name}.{zone_bare}"
    check_name(full)
    if full == zone_bare:
        raise InvalidName(f"{relative!r} is the zone apex, not a service name")
    return full + "."


def host_label(hostname: str) -> str:
    """The first label of a host name, which names the host's A record and owns its records."""
    label = hostname.strip().lower().split(".", 1)[0]
    if not _HOST_LABEL.match(label):
        raise InvalidName(f"host name {hostname!r} does not start with a valid DNS label")
    return label


def host_record_name(label: str, zone: str) -> str:
    return f"{label}.{zone.rstrip('.')}."


def task_id(task_arn: str) -> str:
    """``arn:aws:ecs:r:a:task/cluster/abc`` (or the old ``task/abc``) -> ``abc``."""
    return task_arn.rsplit("/", 1)[-1] if task_arn else ""


def cluster_name(cluster: str) -> str:
    """A cluster ARN or name -> the name."""
    return cluster.rsplit("/", 1)[-1] if cluster else ""


def cluster_digest(name: str) -> str:
    return "#" + hashlib.sha256(name.encode()).hexdigest()[:16]


def cluster_matches(field: str, name: str) -> bool:
    """Whether an Owner's cluster field denotes the cluster ``name`` (by name or digest)."""
    if not field:
        return False
    return field == name or field == cluster_digest(name)


def _join(fields: list[str]) -> str:
    return ":".join([PREFIX, *fields])


def set_identifier(owner: Owner) -> str:
    """Build the SetIdentifier for ``owner``; raises :class:`InvalidName` if it cannot fit."""
    for value in (owner.host, owner.container, owner.cluster, owner.task):
        if ":" in value or not _ID_FIELD.match(value.lstrip("#")):
            raise InvalidName(f"{value!r} cannot be part of a SetIdentifier")
    if owner.port and not _PORT_FIELD.match(owner.port):
        raise InvalidName(f"port {owner.port!r} is not <number>/<tcp|udp>")

    def build(cluster: str) -> str:
        if owner.kind == "t":
            return _join(["t", cluster, owner.task, owner.port])
        if owner.kind != "h":
            raise InvalidName(f"unknown owner kind {owner.kind!r}")
        if owner.is_host_record:
            return _join(["h", owner.host])
        return _join(["h", owner.host, owner.container, owner.port, cluster, owner.task])

    ident = build(owner.cluster)
    if len(ident) > MAX_SET_IDENTIFIER and owner.cluster and not owner.cluster.startswith("#"):
        ident = build(cluster_digest(owner.cluster))
    if len(ident) > MAX_SET_IDENTIFIER:
        raise InvalidName(
            f"SetIdentifier {ident!r} is longer than {MAX_SET_IDENTIFIER} characters"
        )
    return ident


def parse_set_identifier(ident: str | None) -> Owner | None:
    """The Owner a SetIdentifier names, or None when it is not exactly one of ours."""
    if not ident or not ident.startswith(PREFIX + ":") or len(ident) > MAX_SET_IDENTIFIER:
        return None
    parts = ident.split(":")[1:]
    kind = parts[0] if parts else ""
    if kind == "h" and len(parts) == 2:
        owner = Owner(host=parts[1])
    elif kind == "h" and len(parts) == 6:
        _, host, container, port, cluster, task = parts
        owner = Owner(host=host, container=container, port=port, cluster=cluster, task=task)
    elif kind == "t" and len(parts) == 4:
        _, cluster, task, port = parts
        owner = Owner(kind="t", cluster=cluster, task=task, port=port)
    else:
        return None
    if owner.kind == "h" and not _HOST_LABEL.match(owner.host):
        return None
    if owner.kind == "h" and not owner.is_host_record and not owner.container:
        return None
    if owner.kind == "t" and not (owner.cluster and owner.task):
        return None
    if owner.port and not _PORT_FIELD.match(owner.port):
        return None
    # Round-trip check: anything we would not have written ourselves is not ours.
    try:
        return owner if set_identifier(owner) == ident else None
    except InvalidName:
        return None


def owned_by_host(label: str) -> Callable[[RecordSet], bool]:
    """The ownership test of one host: the SetIdentifier parses and names this host exactly."""

    def owns(record: RecordSet) -> bool:
        owner = parse_set_identifier(record.set_identifier)
        return owner is not None and owner.kind == "h" and owner.host == label

    return owns

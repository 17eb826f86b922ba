"""Names in the zone: validating DNS names, record names relative to the zone, host labels,
and the task and cluster parts of ECS ARNs.

Who owns a record set (the SetIdentifier) is :mod:`ecssd_agent.core.ownership`.
"""

from __future__ import annotations

import re

MAX_NAME = 253
MAX_LABEL = 63

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


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


def is_host_label(label: str) -> bool:
    """Whether ``label`` is a host label as :func:`host_label` makes them (lowercase)."""
    return bool(_HOST_LABEL.match(label))


def host_record_name(label: str, zone: str) -> str:
    return f"{label}.{zone.rstrip('.')}."


def task_id(task_arn: str) -> str:
    """``arn:aws:ecs:r:a:task/cluster/abc`` (or the old ``task/abc``) -> ``abc``."""
    return task_arn.rsplit("/", 1)[-1] if task_arn else ""


def cluster_name(cluster: str) -> str:
    """A cluster ARN or name -> the name."""
    return cluster.rsplit("/", 1)[-1] if cluster else ""

"""Who owns a record set: the :class:`Owner`, its SetIdentifier, and the ownership tests.

Ownership lives in the SetIdentifier: it is the one field of a record set that is ours to
choose, every listing returns it at no extra cost, and it keeps two writers' record sets of
one name apart. The only code that builds or parses one is here::

    ecssd:h:<host>                                               a host's A record
    ecssd:h:<host>:<container>:<port>/<proto>:<cluster>:<task>   a service instance on a host
    ecssd:t:<cluster>:<task>:<port>/<proto>                      a record of an ECS task

``<container>`` is the first 12 characters of the Docker id, ``<task>`` the task id;
``<cluster>`` and ``<task>`` are empty for containers ECS did not start. No field can hold
``:``, so parsing is exact: a SetIdentifier that does not round-trip is not ours and is never
changed. Route 53 allows 128 characters; a cluster name that does not fit is carried as ``#``
plus 16 hex digits of its SHA-256 (:func:`cluster_matches` recognises both).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from ecssd_agent.core import naming
from ecssd_agent.core.model import RecordSet

PREFIX = "ecssd"
MAX_SET_IDENTIFIER = 128

_ID_FIELD = re.compile(r"^[A-Za-z0-9_./-]*$")
_PORT_FIELD = re.compile(r"^([0-9]{1,5})/(tcp|udp)$")


class Kind(str, Enum):
    """Which writer a record set belongs to; the value is its SetIdentifier's second field."""

    HOST = "h"  # a host agent's (direct mode, or the zone writer on its behalf)
    TASK = "t"  # an ECS task's (the task-events Lambda)


@dataclass(frozen=True)
class Owner:
    """Who a record set belongs to.

    ``host`` is the agent's host label (``ip-10-0-0-12``); "" for a task's records.
    ``container`` and ``port`` (``"8081/tcp"``) name the service instance; both are "" for a
    host's own A record, and ``port`` is "" for a task's A records. ``cluster`` and ``task``
    name the ECS task when known, so the health sweep can ask ECS whether it still runs.
    """

    host: str = ""
    container: str = ""
    port: str = ""
    cluster: str = ""  # the cluster name, or "#" + a digest when the name is too long
    task: str = ""  # the task id (last part of the task ARN)
    kind: Kind = Kind.HOST

    @property
    def is_host_record(self) -> bool:
        return self.kind is Kind.HOST and not self.container and not self.port


Owns = Callable[[RecordSet], bool]


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
    """Build the SetIdentifier for ``owner``; raises :class:`naming.InvalidName` if it cannot
    be one."""
    for value in (owner.host, owner.container, owner.cluster, owner.task):
        if ":" in value or not _ID_FIELD.match(value.lstrip("#")):
            raise naming.InvalidName(f"{value!r} cannot be part of a SetIdentifier")
    if owner.port and not _PORT_FIELD.match(owner.port):
        raise naming.InvalidName(f"port {owner.port!r} is not <number>/<tcp|udp>")

    def build(cluster: str) -> str:
        if owner.kind is Kind.TASK:
            return _join([Kind.TASK.value, cluster, owner.task, owner.port])
        if owner.kind is not Kind.HOST:
            raise naming.InvalidName(f"unknown owner kind {owner.kind!r}")
        if owner.is_host_record:
            return _join([Kind.HOST.value, owner.host])
        return _join([Kind.HOST.value, owner.host, owner.container, owner.port, cluster,
                      owner.task])

    ident = build(owner.cluster)
    if len(ident) > MAX_SET_IDENTIFIER and owner.cluster and not owner.cluster.startswith("#"):
        ident = build(cluster_digest(owner.cluster))
    if len(ident) > MAX_SET_IDENTIFIER:
        raise naming.InvalidName(
            f"SetIdentifier {ident!r} is longer than {MAX_SET_IDENTIFIER} characters")
    return ident


def parse_set_identifier(ident: str | None) -> Owner | None:
    """The Owner a SetIdentifier names, or None when it is not exactly one of ours."""
    if not ident or not ident.startswith(PREFIX + ":") or len(ident) > MAX_SET_IDENTIFIER:
        return None
    parts = ident.split(":")[1:]
    kind = parts[0] if parts else ""
    if kind == Kind.HOST.value and len(parts) == 2:
        owner = Owner(host=parts[1])
    elif kind == Kind.HOST.value and len(parts) == 6:
        _, host, container, port, cluster, task = parts
        owner = Owner(host=host, container=container, port=port, cluster=cluster, task=task)
    elif kind == Kind.TASK.value and len(parts) == 4:
        _, cluster, task, port = parts
        owner = Owner(kind=Kind.TASK, cluster=cluster, task=task, port=port)
    else:
        return None
    if owner.kind is Kind.HOST and not naming.is_host_label(owner.host):
        return None
    if owner.kind is Kind.HOST and not owner.is_host_record and not owner.container:
        return None
    if owner.kind is Kind.TASK and not (owner.cluster and owner.task):
        return None
    if owner.port and not _PORT_FIELD.match(owner.port):
        return None
    # Round-trip check: anything we would not have written ourselves is not ours.
    try:
        return owner if set_identifier(owner) == ident else None
    except naming.InvalidName:
        return None


def owner_of(record: RecordSet) -> Owner | None:
    """The owner of a record set, or None when it is not ours."""
    return parse_set_identifier(record.set_identifier)


# --- ownership tests: what a writer may change ---------------------------------------------

def owned_by_host(label: str) -> Owns:
    """The record sets of one host: its A record and its service instances'."""
    return owned_by_hosts({label})


def owned_by_hosts(labels: Iterable[str]) -> Owns:
    """The record sets of any of these hosts (the zone writer plans many at once)."""
    hosts = frozenset(labels)

    def owns(record: RecordSet) -> bool:
        owner = parse_set_identifier(record.set_identifier)
        return owner is not None and owner.kind is Kind.HOST and owner.host in hosts

    return owns


def owned_by_task(cluster: str, task_id: str) -> Owns:
    """The record sets written for one ECS task (any name, any port)."""

    def owns(record: RecordSet) -> bool:
        owner = parse_set_identifier(record.set_identifier)
        return (owner is not None and owner.kind is Kind.TASK and owner.task == task_id
                and cluster_matches(owner.cluster, cluster))

    return owns


def owned_by_these_tasks(tasks: Iterable[tuple[str, str]]) -> Owns:
    """The record sets of these ECS tasks, each given as (cluster name, task id)."""
    clusters: dict[str, set[str]] = {}
    for cluster, task_id in tasks:
        clusters.setdefault(task_id, set()).add(cluster)

    def owns(record: RecordSet) -> bool:
        owner = parse_set_identifier(record.set_identifier)
        return (owner is not None and owner.kind is Kind.TASK and owner.task in clusters
                and any(cluster_matches(owner.cluster, c) for c in clusters[owner.task]))

    return owns


def owned_by_tasks() -> Owns:
    """The record sets of every ECS task: what the task-events Lambda as a whole writes."""

    def owns(record: RecordSet) -> bool:
        owner = parse_set_identifier(record.set_identifier)
        return owner is not None and owner.kind is Kind.TASK

    return owns


def owned_fixed_record(name: str) -> Owns:
    """The A record sets of the fixed name (``RR_NAME``), whichever task holds them."""

    def owns(record: RecordSet) -> bool:
        if record.name != name or record.type != "A":
            return False
        owner = parse_set_identifier(record.set_identifier)
        return owner is not None and owner.kind is Kind.TASK and not owner.port

    return owns


def either(*tests: Owns) -> Owns:
    """Owned by any of ``tests``."""

    def owns(record: RecordSet) -> bool:
        return any(test(record) for test in tests)

    return owns

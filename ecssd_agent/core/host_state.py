"""What a host asked for and what the zone writer knows it applied: the queued mode's state.

A host publishes the whole set of record sets it should own (:class:`Published`); the writer
plans each host against :class:`Applied`, what it knows it wrote for that host, instead of
reading the zone: only the writer writes these record sets, so that knowledge holds until
Route 53 says otherwise (a rejected batch) or it is older than the verification period.
Pure. Why a queued mode: :mod:`ecssd_agent.writer.zone_writer`.
"""


from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ecssd_agent.core import ownership
from ecssd_agent.core.model import Action, Change, RecordSet
from ecssd_agent.core.ownership import Kind
from ecssd_agent.core.plan import plan


@dataclass(frozen=True)
class Published:
    """The whole desired state of one host, as of ``seq`` (the host's clock, increasing).

    ``verify`` asks the writer to read the zone for this host before planning: set by an
    agent that just started (records may have changed while it was away) and by ``--remove``.
    """

    host: str
    zone: str
    seq: int
    records: tuple[RecordSet, ...]
    verify: bool = False


@dataclass(frozen=True)
class Applied:
    """The record sets the writer knows this host owns in the zone, as of ``seq``.

    ``verified`` (epoch seconds) is when they were last read from Route 53 rather than
    inferred from the writer's own successful changes.
    """

    host: str
    seq: int
    records: tuple[RecordSet, ...]
    verified: float


def needs_read(published: Published, applied: Applied | None, now: float,
               verify_after: float) -> bool:
    """Whether the writer must read the zone for this host before planning it."""
    if applied is None or now - applied.verified >= verify_after:
        return True
    return published.verify and applied.seq != published.seq  # not yet verified for this one


def names_to_read(published: Published, applied: Applied | None) -> set[str]:
    """The names a host's record sets may live under: what it wants, what it was known to own."""
    names = {r.name for r in published.records}
    if applied is not None:
        names.update(r.name for r in applied.records)
    return names


def plan_host(published: Published, owned: Iterable[RecordSet]) -> list[Change]:
    """The changes that make ``owned`` (this host's record sets in the zone) what it published.

    Raises ``plan.ForeignRecord`` when a published record set is not the host's own: a host
    can never publish records for another (invariant 1 holds in queued mode too).
    """
    return plan(owned, published.records, ownership.owned_by_host(published.host))


def split_by_host(records: Iterable[RecordSet], hosts: Iterable[str]) -> dict[str, list[RecordSet]]:
    """Owned record sets of a zone read, grouped by the host (of ``hosts``) that owns them."""
    out: dict[str, list[RecordSet]] = {host: [] for host in hosts}
    for record in records:
        owner = ownership.parse_set_identifier(record.set_identifier)
        if owner is not None and owner.kind is Kind.HOST and owner.host in out:
            out[owner.host].append(record)
    return out


def after(owned: Iterable[RecordSet], changes: Iterable[Change]) -> tuple[RecordSet, ...]:
    """``owned`` with ``changes`` applied: what the host owns once Route 53 accepted them."""
    state: dict[tuple[str, str, str | None], RecordSet] = {r.key: r for r in owned}
    for change in changes:
        if change.action is Action.DELETE:
            state.pop(change.record.key, None)
        else:
            state[change.record.key] = change.record
    return tuple(sorted(state.values(), key=lambda r: (r.name, r.type, r.set_identifier or "")))


def latest(publications: Iterable[Published]) -> dict[str, Published]:
    """The newest publication per host (the queue may deliver several, in any order)."""
    out: dict[str, Published] = {}
    for pub in publications:
        have = out.get(pub.host)
        if have is None or pub.seq > have.seq:
            out[pub.host] = pub
    return out

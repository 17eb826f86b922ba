"""Reading only what a host owns, at a cost that does not grow with the fleet.

Route 53 allows an account about 10 requests/s, and a full listing of a 1,000-host zone is
some 70 pages, so no agent can list the zone on every resync. Two things make reads
affordable: **name-scoped reads** (:func:`owned_records_by_names`: a host's record sets live
under the names it publishes, and Route 53 lists by name, so a scan starts at each name and
stops at the first record set of a name nobody asked for), and **a fleet-wide read budget**
(:func:`read_interval`, kept by :class:`ReadSchedule`): hosts read only so often that all of
them together spend about ``budget`` requests/s; between reads a host plans against what it
knows it owns. The scan logic (:class:`NameScan`) does no I/O, so the fleet simulation drives
this very code in virtual time.
"""


from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ecssd_agent.aws.route53 import Route53Zone, from_wire
from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Owns

#: Route 53 returns at most 300 record sets per ListResourceRecordSets page.
MAX_ITEMS = 300
#: Requests/s the whole fleet of agents may spend on zone reads (5% of the 10/s account rate).
DEFAULT_READ_BUDGET = 0.5
#: Never read more often than a resync, nor less often than daily (drift repair stays bounded).
DEFAULT_MAX_READ_INTERVAL = 86400.0


def absolute(name: str) -> str:
    """The listing form of a name: lowercase with a trailing dot."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def route53_order(name: str) -> str:
    """The key Route 53 sorts names by: labels reversed (``zone.internal._calc._tcp``).

    Used only to visit wanted names in listing order, so that one scan can cover several of
    them; correctness never depends on it (see :class:`NameScan`).
    """
    return ".".join(reversed(absolute(name).rstrip(".").split(".")))


@dataclass
class NameRead:
    """The outcome of a name-scoped read.

    ``records`` holds every owned record set the scans saw (under a wanted name or, in
    passing, under another one: an owned record set of a name the host no longer publishes
    is stale and planning will delete it). ``complete`` holds the wanted names whose record
    sets were all seen: for those, ``records`` is the truth of the zone.
    """

    records: list[RecordSet] = field(default_factory=list)
    complete: frozenset[str] = frozenset()
    requests: int = 0

    def merged_into(self, known: Iterable[RecordSet]) -> list[RecordSet]:
        """``known`` (what the agent believed it owns) updated with this read.

        Names read completely are replaced by what the zone holds; for other names the
        agent keeps what it knew, plus any owned record set seen in passing.
        """
        seen = {r.key for r in self.records}
        kept = [r for r in known if r.name not in self.complete and r.key not in seen]
        return [*self.records, *kept]


class NameScan:
    """Which names to list next, and what the listed pages proved; no I/O.

    Use: ``while (start := scan.next_start()) is not None``: list pages from
    ``StartRecordName=start`` (following the page's continuation), calling ``feed(page)`` for
    each and stopping as soon as it returns False. Then ``scan.result()``.

    Proof that a name was read completely rests only on what Route 53 documents: record
    sets are sorted by name first, so all record sets of one name are consecutive, and a
    listing from ``StartRecordName=X`` begins at the first record set whose name is >= X.
    Hence, within one scan, a name whose run of record sets is followed by another name was
    seen whole; the started name is complete (possibly empty) as soon as a record set of a
    different name, or the end of the zone, shows up.
    """

    def __init__(self, names: Iterable[str], owns: Owns | None = None,
                 decode: Callable[[Mapping[str, Any]], RecordSet] = from_wire) -> None:
        self._decode = decode
        self._wanted = {absolute(n) for n in names}
        self._pending = sorted(self._wanted, key=route53_order)
        self._owns = owns
        self._complete: set[str] = set()
        self._records: dict[tuple[str, str, str | None], RecordSet] = {}
        self._start: str | None = None
        self._run: str | None = None  # the name whose run of record sets the last page ended in
        self.requests = 0

    def next_start(self) -> str | None:
        """The name the next scan starts at, or None when every wanted name is complete."""
        self._pending = [n for n in self._pending if n not in self._complete]
        if not self._pending:
            self._start = None
            return None
        self._start, self._run = self._pending[0], None
        return self._start

    def feed(self, page: Mapping[str, Any]) -> bool:
        """Take one page of the current scan; True when the scan should read its next page."""
        if self._start is None:
            raise RuntimeError("feed() called without a scan started by next_start()")
        self.requests += 1
        for rrset in page.get("ResourceRecordSets", []):
            record = self._decode(rrset)
            if record.name != self._run:
                self._finish(self._run)
                if self._run is None and record.name != self._start:
                    self._finish(self._start)  # the scan began past it: it has no record sets
                self._run = record.name
            keep = record.name in self._wanted if self._owns is None else self._owns(record)
            if keep:
                self._records[record.key] = record
        if not page.get("IsTruncated"):
            self._finish(self._run)
            self._finish(self._start)  # the zone ended: nothing of it can follow
            return False
        next_name = page.get("NextRecordName")
        if next_name is not None and absolute(next_name) != self._run:
            self._finish(self._run)  # the next page starts with another name
        # Continue only to finish a wanted name cut by the page end; any other wanted name is
        # reached at least as cheaply by a scan starting at it.
        return self._run in self._wanted and self._run not in self._complete

    def _finish(self, name: str | None) -> None:
        if name is not None and name in self._wanted:
            self._complete.add(name)

    def result(self) -> NameRead:
        return NameRead(list(self._records.values()), frozenset(self._complete), self.requests)


def owned_records_by_names(
    zone: Route53Zone, names: Iterable[str], owns: Owns | None = None, max_items: int = MAX_ITEMS
) -> NameRead:
    """The record sets ``owns`` accepts under ``names`` (and any seen in passing).

    With ``owns=None``, every record set under the wanted names. Costs one request per page
    actually read: typically one per wanted name, fewer when names share a page, more for a
    name holding more than ``max_items`` record sets (a service with many instances fleet-wide).
    Uses the boto3 paginator, so a page cut inside a name's weighted record sets continues
    with ``StartRecordIdentifier``. API errors propagate (unknown is never "empty").
    """
    scan = NameScan(names, owns)
    paginator = zone.client.get_paginator("list_resource_record_sets")
    while (start := scan.next_start()) is not None:
        pages = paginator.paginate(HostedZoneId=zone.zone.id, StartRecordName=start,
                                   PaginationConfig={"PageSize": max_items})
        for page in pages:
            if not scan.feed(page):
                break
    return scan.result()


def records_at(zone: Route53Zone, names: Iterable[str], zone_records: int | None = None,
               estimate: int | None = None, max_items: int = MAX_ITEMS) -> NameRead:
    """Every record set under ``names``, read the cheaper way: name by name
    (:func:`owned_records_by_names`), or the whole zone when it has fewer pages than the
    read by name is expected to cost (``estimate``; by default one request a name).
    ``zone_records`` is the zone's ResourceRecordSetCount (:func:`zone_record_count`); None
    reads by name. API errors propagate."""
    wanted = {absolute(n) for n in names}
    by_name = len(wanted) if estimate is None else estimate
    if zone_records is None or -(-zone_records // max_items) >= by_name:
        return owned_records_by_names(zone, wanted, None, max_items)
    found: list[RecordSet] = []
    requests = 0
    paginator = zone.client.get_paginator("list_resource_record_sets")
    for page in paginator.paginate(HostedZoneId=zone.zone.id,
                                   PaginationConfig={"PageSize": max_items}):
        requests += 1
        found += [r for r in map(from_wire, page.get("ResourceRecordSets", []))
                  if r.name in wanted]
    return NameRead(found, frozenset(wanted), requests)


def records_under(zone: Route53Zone, parent: str, max_items: int = MAX_ITEMS) -> NameRead:
    """Every record set below ``parent`` (``*.task.<zone>``), one request per page: Route 53
    lists a name's subtree together, right after the name, so the read starts there and
    stops at the first name past it. (A sibling name such as ``task-x`` may sort before the
    subtree where a character below ``.`` is compared with it, as in moto; it is skipped.)
    ``complete`` holds every name seen below ``parent``."""
    top = absolute(parent)
    suffix = "." + top
    beyond = route53_order(top) + "."
    found: list[RecordSet] = []
    requests = 0
    paginator = zone.client.get_paginator("list_resource_record_sets")
    for page in paginator.paginate(HostedZoneId=zone.zone.id, StartRecordName=top,
                                   PaginationConfig={"PageSize": max_items}):
        requests += 1
        for rrset in page.get("ResourceRecordSets", []):
            record = from_wire(rrset)
            if record.name.endswith(suffix):
                found.append(record)
            elif found or route53_order(record.name) > beyond:
                return NameRead(found, frozenset(r.name for r in found), requests)
    return NameRead(found, frozenset(r.name for r in found), requests)


def zone_record_count(zone: Route53Zone) -> int:
    """The zone's ResourceRecordSetCount: one GetHostedZone request, no listing."""
    hosted = zone.client.get_hosted_zone(Id=zone.zone.id)["HostedZone"]
    return int(hosted.get("ResourceRecordSetCount", 0))


def read_interval(
    zone_records: int,
    own_records: int,
    read_cost: int,
    *,
    floor: float,
    budget: float = DEFAULT_READ_BUDGET,
    ceiling: float = DEFAULT_MAX_READ_INTERVAL,
) -> float:
    """Seconds between this host's zone reads so the fleet's reads stay within ``budget``/s.

    The fleet is estimated as ``zone_records / own_records`` hosts (every host owns about as
    many record sets as this one; foreign records only make the estimate, and so the
    interval, larger: the safe side). Each host spending ``read_cost`` requests every
    interval, the fleet spends ``hosts * read_cost / interval`` requests/s. ``floor`` is the
    resync period (a small fleet reads on every resync); ``ceiling`` bounds drift repair.
    """
    if budget <= 0:
        raise ValueError("the read budget must be positive")
    hosts = max(1.0, zone_records / max(own_records, 1))
    wanted = hosts * max(read_cost, 1) / budget
    return min(max(floor, wanted), max(floor, ceiling))


class ReadSchedule:
    """When this host next reads the zone, so that the fleet stays within the read budget.

    Pure (times are passed in) and jittered, so hosts that start together do not read
    together. Until the first read or :meth:`start`, a read is due at once.
    """

    def __init__(self, floor: float, budget: float = DEFAULT_READ_BUDGET,
                 rng: random.Random | None = None) -> None:
        self.floor = floor
        self.budget = budget
        self.interval = floor
        self.next_at = float("-inf")
        self._rng = rng or random.Random()

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def start(self, now: float, zone_records: int, own_records: int, names: int) -> None:
        """After registering without a read (one UPSERT batch): the first read falls at a
        random point of the interval, estimated from the number of names to read."""
        self.interval = read_interval(zone_records, own_records, scan_cost_estimate(names),
                                      floor=self.floor, budget=self.budget)
        self.next_at = now + self.interval * self._rng.random()

    def done(self, now: float, zone_records: int, own_records: int, cost: int) -> None:
        """A read of ``cost`` requests finished (the GetHostedZone sizing it included)."""
        self.interval = read_interval(zone_records, own_records, cost, floor=self.floor,
                                      budget=self.budget)
        self.next_at = now + self.interval * self._rng.uniform(0.75, 1.25)


def scan_cost_estimate(names: int) -> int:
    """Requests a name-scoped read of ``names`` names is expected to cost, before any read:
    one per name plus the GetHostedZone sizing it."""
    return max(1, names) + 1

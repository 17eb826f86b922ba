"""A simulated Route 53 for one account and one private hosted zone: fake, seeded, in-process.

What it enforces (the sources and the values chosen are in :class:`Limits`):

- Request rate: a token bucket per account and one per API operation; a request needs a
  token from both, else ``Throttling`` (nothing is consumed).
- Change throughput: a bucket of individual record changes per account (an UPSERT counts
  twice); a change batch needs as many tokens as it has changes, else ``Throttling``.
- ``PriorRequestNotComplete``: a ChangeResourceRecordSets to the zone while Route 53 is
  still processing the previous one (``processing`` seconds), or, with
  ``pnc_until_insync``, until the previous change is INSYNC.
- Batches are atomic and validated as Route 53 does: CREATE of an existing record set,
  DELETE of one that is missing or differs from the zone's, or a 101st weighted record set
  of one name and type, rejects the whole batch with ``InvalidChangeBatch``.
- Propagation: each accepted change is PENDING until a drawn INSYNC time.

Listing follows Route 53's documented order (names with labels reversed, then type); record
sets of one name and type are ordered by SetIdentifier, and pages continue with
``NextRecordIdentifier``. Pages carry record sets in the wire format of
:func:`ecssd_agent.aws.route53.to_wire`, so the agent's own read code consumes them.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from ecssd_agent.aws.route53 import to_wire
from ecssd_agent.core import ownership
from ecssd_agent.core.model import Action, Change, RecordSet
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.sync.zone_reads import route53_order

RecordKey = tuple[str, str, str | None]
SortKey = tuple[str, str, str]

#: "For a given name and type ... you can configure up to 100 alternative responses"
#: (Route 53 Developer Guide, "Managing over 100 weighted records"): the agent's weighted
#: records of one service cannot outnumber this.
MAX_WEIGHTED_SETS = 100

LIST = "ListResourceRecordSets"
CHANGE = "ChangeResourceRecordSets"
GET_ZONE = "GetHostedZone"


@dataclass(frozen=True)
class Bucket:
    burst: float
    rate: float  # tokens per second


@dataclass(frozen=True)
class Limits:
    """The Route 53 model's parameters.

    Defaults: the current documented request-rate quotas (Route 53 Developer Guide,
    "Throttling for Amazon Route 53 API requests": account bucket 50 / refill 10 per second,
    and per operation 50 / 10 for every operation not listed with other values, which
    includes ChangeResourceRecordSets, ListResourceRecordSets and GetHostedZone). The same
    page introduces a change-throughput bucket (individual record changes per second per
    account) whose figures could not be retrieved here: ``changes`` is an ASSUMPTION
    (burst 1,000 changes, 100 changes/s), reported as such. ``processing`` (how long the
    zone refuses a next change with PriorRequestNotComplete) is undocumented: 0.05 s is
    ASSUMED (a server-side share of the ~0.25 s request latency); the benchmark also
    reports 0.1 s and 0.2 s, and ``pnc_costs_request`` makes a PriorRequestNotComplete
    answer cost a request token (the conservative reading). Propagation:
    "changes generally propagate to all Route 53 name servers within 60 seconds" (Developer
    Guide, "Editing records"): uniform 5-60 s.
    """

    name: str = "current (50 burst, 10/s)"
    account: Bucket = Bucket(50, 10)
    per_operation: tuple[tuple[str, Bucket], ...] = (
        (CHANGE, Bucket(50, 10)), (LIST, Bucket(50, 10)), (GET_ZONE, Bucket(50, 10)))
    changes: Bucket | None = Bucket(1000, 100)
    upsert_changes: int = 2
    processing: float = 0.05
    pnc_until_insync: bool = False
    pnc_costs_request: bool = True  # a PriorRequestNotComplete answer used a request token
    propagation: tuple[float, float] = (5.0, 60.0)
    latency: tuple[tuple[str, float], ...] = ((LIST, 0.15), (CHANGE, 0.25), (GET_ZONE, 0.05))
    error_latency: float = 0.05


#: The historical quota: "five requests per second per AWS account" (no burst beyond a
#: second's worth, no change-throughput bucket).
HISTORIC = Limits(name="historic (5/s)", account=Bucket(5, 5), per_operation=(), changes=None)


@dataclass(frozen=True)
class Response:
    ok: bool
    error: str | None = None
    data: Any = None


class TokenBucket:
    """Continuous refill at ``rate`` up to ``burst``; tokens are taken only when all fit."""

    def __init__(self, bucket: Bucket) -> None:
        self.capacity = bucket.burst
        self.rate = bucket.rate
        self.tokens = bucket.burst
        self._time = 0.0

    def has(self, now: float, amount: float) -> bool:
        if now > self._time:
            self.tokens = min(self.capacity, self.tokens + (now - self._time) * self.rate)
            self._time = now
        return self.tokens >= min(amount, self.capacity)

    def take(self, amount: float) -> None:
        self.tokens -= min(amount, self.capacity)


@cache
def owner_of(set_identifier: str | None) -> Owner | None:
    """``ownership.parse_set_identifier``, memoised: the simulation asks it millions of times."""
    return ownership.parse_set_identifier(set_identifier)


@cache
def _order(name: str) -> str:
    return route53_order(name)


def sort_key(key: RecordKey) -> SortKey:
    return (_order(key[0]), key[1], key[2] or "")


class ZoneStore:
    """The zone's record sets in listing order, each kept with its wire form."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._order: list[SortKey] = []
        self._records: dict[SortKey, tuple[RecordSet, dict[str, Any]]] = {}
        self.by_host: dict[str, set[RecordKey]] = {}
        self.per_name: Counter[tuple[str, str]] = Counter()

    def __len__(self) -> int:
        return len(self._order)

    def get(self, key: RecordKey) -> RecordSet | None:
        found = self._records.get(sort_key(key))
        return found[0] if found else None

    def put(self, record: RecordSet) -> None:
        skey = sort_key(record.key)
        if skey not in self._records:
            bisect.insort(self._order, skey)
            self.per_name[(record.name, record.type)] += 1
            owner = owner_of(record.set_identifier)
            if owner is not None and owner.kind is Kind.HOST:
                self.by_host.setdefault(owner.host, set()).add(record.key)
        self._records[skey] = (record, to_wire(record))

    def delete(self, record: RecordSet) -> None:
        skey = sort_key(record.key)
        del self._records[skey]
        del self._order[bisect.bisect_left(self._order, skey)]
        self.per_name[(record.name, record.type)] -= 1
        owner = owner_of(record.set_identifier)
        if owner is not None and owner.kind is Kind.HOST:
            self.by_host.get(owner.host, set()).discard(record.key)

    def records(self) -> Iterator[RecordSet]:
        for skey in self._order:
            yield self._records[skey][0]

    def page(self, start_name: str | None = None, start_type: str | None = None,
             start_identifier: str | None = None, max_items: int = 300) -> dict[str, Any]:
        """One ListResourceRecordSets page, Route 53's fields and order."""
        if start_name:
            start = (_order(naming_absolute(start_name)), start_type or "", start_identifier or "")
            index = bisect.bisect_left(self._order, start)
        else:
            index = 0
        chosen = self._order[index:index + max_items]
        page: dict[str, Any] = {"ResourceRecordSets": [self._records[k][1] for k in chosen],
                                "IsTruncated": index + max_items < len(self._order),
                                "MaxItems": str(max_items)}
        if page["IsTruncated"]:
            following = self._records[self._order[index + max_items]][0]
            page["NextRecordName"] = following.name
            page["NextRecordType"] = following.type
            if following.set_identifier is not None:
                page["NextRecordIdentifier"] = following.set_identifier
        return page


def naming_absolute(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


class Stats:
    """Requests seen by the simulated Route 53: totals and a 10-second time series."""

    BUCKET = 10.0

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()  # (operation, outcome) -> n
        self.callers: Counter[str] = Counter()  # who made the attempts (Call.caller)
        self.series: dict[int, Counter[str]] = {}

    def add(self, now: float, op: str, outcome: str) -> None:
        self.counts[(op, outcome)] += 1
        bucket = self.series.setdefault(int(now // self.BUCKET), Counter())
        bucket[outcome] += 1
        if outcome == "attempt":
            bucket[op] += 1

    def window(self, start: float, end: float) -> Counter[str]:
        """Outcomes (attempt, ok, throttled, pnc, rejected) and attempts per operation name,
        summed over [start, end)."""
        total: Counter[str] = Counter()
        for index in range(int(start // self.BUCKET), int(end // self.BUCKET)):
            total.update(self.series.get(index, Counter()))
        return total


#: (time, the batch, its INSYNC time, the caller that sent it)
CommitHook = Callable[[float, Sequence[Change], float, str], None]


class SimRoute53:
    """One account, one zone; ``handle`` is the engine's server for every process."""

    def __init__(self, zone_name: str, limits: Limits, rng: random.Random) -> None:
        self.limits = limits
        self.zone = ZoneStore(zone_name)
        self.rng = rng
        self.stats = Stats()
        self._account = TokenBucket(limits.account)
        self._operations = {op: TokenBucket(b) for op, b in limits.per_operation}
        self._changes = TokenBucket(limits.changes) if limits.changes else None
        self._latency = dict(limits.latency)
        self._busy_until = 0.0
        self._blocked: dict[str, float] = {}  # caller -> answered PriorRequestNotComplete until
        self.on_commit: list[CommitHook] = []

    def block_changes(self, until: float, caller: str | None = None) -> None:
        """Answer every change with PriorRequestNotComplete until ``until`` (as if a change
        were stuck processing): lets a test make a writer's requests fail on purpose. With
        ``caller``, only that caller's (say, one writer whose retries keep missing the
        account's tokens while another's get through)."""
        if caller is None:
            self._busy_until = max(self._busy_until, until)
        else:
            self._blocked[caller] = max(self._blocked.get(caller, 0.0), until)

    def set_latency(self, op: str, seconds: float) -> None:
        """Answer ``op`` after ``seconds`` from now on (a request already sent keeps its
        own): lets a test make one writer's change request outlive its function timeout."""
        self._latency[op] = seconds

    def handle(self, now: float, call: Any) -> tuple[Response, float]:
        op, params = call.op, call.params
        stats = self.stats
        stats.add(now, op, "attempt")
        stats.callers[call.caller] += 1
        if op == CHANGE and not self.limits.pnc_costs_request and now < self._busy_until:
            stats.add(now, CHANGE, "pnc")
            return Response(False, "PriorRequestNotComplete"), self.limits.error_latency
        operation = self._operations.get(op)
        if not self._account.has(now, 1) or (operation is not None and not operation.has(now, 1)):
            stats.add(now, op, "throttled")
            return Response(False, "Throttling"), self.limits.error_latency
        self._account.take(1)
        if operation is not None:
            operation.take(1)
        latency = self._latency.get(op, 0.1)
        if op == LIST:
            stats.add(now, op, "ok")
            return Response(True, data=self.zone.page(**params)), latency
        if op == GET_ZONE:
            stats.add(now, op, "ok")
            data = {"HostedZone": {"ResourceRecordSetCount": len(self.zone)}}
            return Response(True, data=data), latency
        if op != CHANGE:
            raise ValueError(f"operation {op} is not simulated")
        return self._change(now, params["changes"], latency, call.caller)

    def _change(self, now: float, changes: Sequence[Change], latency: float,
                caller: str = "") -> tuple[Response, float]:
        stats = self.stats
        if now < self._busy_until or now < self._blocked.get(caller, 0.0):
            stats.add(now, CHANGE, "pnc")
            return Response(False, "PriorRequestNotComplete"), self.limits.error_latency
        weight = sum(self.limits.upsert_changes if c.action is Action.UPSERT else 1 for c in changes)
        if self._changes is not None:
            if not self._changes.has(now, weight):
                stats.add(now, CHANGE, "throttled")
                return Response(False, "Throttling"), self.limits.error_latency
            self._changes.take(weight)
        problem = self.validate(changes)
        if problem:
            stats.add(now, CHANGE, "rejected")
            return Response(False, "InvalidChangeBatch", problem), latency
        for change in changes:
            if change.action is Action.DELETE:
                self.zone.delete(change.record)
            else:
                self.zone.put(change.record)
        low, high = self.limits.propagation
        insync = now + self.rng.uniform(low, high)
        self._busy_until = insync if self.limits.pnc_until_insync else now + self.limits.processing
        stats.add(now, CHANGE, "ok")
        stats.counts[("changes", "applied")] += len(changes)
        for hook in self.on_commit:
            hook(now, changes, insync, caller)
        return Response(True, data={"insync": insync}), latency

    def validate(self, changes: Sequence[Change]) -> str:
        """Why Route 53 would reject the batch ("" when it would not); all or nothing."""
        view: dict[RecordKey, RecordSet | None] = {}
        sizes: Counter[tuple[str, str]] = Counter()
        for change in changes:
            record = change.record
            current = view[record.key] if record.key in view else self.zone.get(record.key)
            if change.action is Action.CREATE and current is not None:
                return f"Tried to create resource record set {_named(record)} but it already exists"
            if change.action is Action.DELETE and current is None:
                return f"Tried to delete resource record set {_named(record)} but it was not found"
            if change.action is Action.DELETE and current != record:
                return (f"Tried to delete resource record set {_named(record)} but the values "
                        "provided do not match the current values")
            after = None if change.action is Action.DELETE else record
            sizes[(record.name, record.type)] += (after is not None) - (current is not None)
            view[record.key] = after
        for (name, rtype), delta in sizes.items():
            if delta > 0 and self.zone.per_name[(name, rtype)] + delta > MAX_WEIGHTED_SETS:
                return f"{name} {rtype}: more than {MAX_WEIGHTED_SETS} weighted record sets"
        return ""


def _named(record: RecordSet) -> str:
    """A record set as Route 53's refusals name it."""
    text = f"[name='{record.name}', type='{record.type}'"
    if record.set_identifier:
        text += f", set-identifier='{record.set_identifier}'"
    return text + "]"

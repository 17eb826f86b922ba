"""A simulated Route 53 for one account and one private hosted zone: fake, seeded, in-process.

What it enforces (the sources and the values chosen are in :class:`Limits`):

- Request rate: a token bucket per account and one per API operation; a request needs a
  token from both, else ``Throttling`` (nothing is consumed).
- Change throughput: a bucket of individual record changes per account (an UPSERT counts
  twice); a change batch needs as many tokens as it has changes, else ``Throttling``.
- ``PriorRequestNotComplete``: a ChangeResourceRecordSets to the zone while Route 53 is
  still processing the previous one (``processing`` seconds), or, with
  ``pnc_until_insync``, until the previous change is INSYNC.
- Batches are atomic and validated as Route 53 does, with the test world's quotas and words
  (``tests/support/route53_quotas.py``, shared with the strict moto): CREATE of an existing
  record set, DELETE of one that is missing or differs from the zone's, a 101st weighted or
  multivalue record set of one name and type, a simple record set beside routed ones, more
  than 400 values in a record set, more than 1,000 values or 32,000 characters of values in
  a request (an UPSERT counting twice), or more record sets than the zone's quota
  (``Limits.zone_record_sets``) rejects the whole batch with ``InvalidChangeBatch`` and one
  message listing every problem.
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
from ecssd_agent.core.model import Action, Change, RecordSet, Routing
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.sync.zone_reads import route53_order
from tests.support import route53_quotas as quotas

RecordKey = tuple[str, str, str | None]
SortKey = tuple[str, str, str]

#: "For a given name and type ... you can configure up to 100 alternative responses"
#: (Route 53 Developer Guide, "Managing over 100 weighted records"): the agent's weighted
#: records of one service cannot outnumber this.
MAX_WEIGHTED_SETS = quotas.ROUTED_PER_NAME_AND_TYPE
#: Route 53's names of the routing policies the model knows (None: a simple record set).
POLICIES = {Routing.WEIGHTED: "weighted", Routing.MULTIVALUE: "multivalue"}

ZONE_ID = "Z0SIMULATED"  # the one hosted zone's id
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
    #: The zone's record-set quota (GetHostedZoneLimit MAX_RRSETS_BY_ZONE): Route 53's default;
    #: a fleet that needs more runs with the quota an operator would have asked for.
    zone_record_sets: int = quotas.RECORD_SETS_PER_ZONE


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
        #: record sets per (name, type, routing policy)
        self.per_name: Counter[tuple[str, str, str | None]] = Counter()

    def __len__(self) -> int:
        return len(self._order)

    def get(self, key: RecordKey) -> RecordSet | None:
        found = self._records.get(sort_key(key))
        return found[0] if found else None

    def put(self, record: RecordSet) -> None:
        skey = sort_key(record.key)
        if skey not in self._records:
            bisect.insort(self._order, skey)
            owner = owner_of(record.set_identifier)
            if owner is not None and owner.kind is Kind.HOST:
                self.by_host.setdefault(owner.host, set()).add(record.key)
        else:
            self.per_name[policy_key(self._records[skey][0])] -= 1
        self.per_name[policy_key(record)] += 1
        self._records[skey] = (record, to_wire(record))

    def delete(self, record: RecordSet) -> None:
        skey = sort_key(record.key)
        del self._records[skey]
        del self._order[bisect.bisect_left(self._order, skey)]
        self.per_name[policy_key(record)] -= 1
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


def policy_key(record: RecordSet) -> tuple[str, str, str | None]:
    """(name, type, routing policy as Route 53 names it)."""
    return (record.name, record.type, POLICIES.get(record.routing) if record.routing else None)


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
        """Why Route 53 would reject the batch ("" when it would not): its one message listing
        every problem (all or nothing)."""
        elements = sum(quotas.counted(c.action.value, len(c.record.values) or c.record.alias)
                       for c in changes)
        characters = sum(quotas.counted(c.action.value, sum(map(len, c.record.values)))
                         for c in changes)
        problems = [quotas.records_limit()] if elements > quotas.RECORDS_PER_REQUEST else []
        if characters > quotas.VALUE_CHARS_PER_REQUEST:
            problems.append(quotas.characters_limit())
        if problems:
            return quotas.batch_message(problems)
        view: dict[RecordKey, RecordSet | None] = {}
        sizes: Counter[tuple[str, str, str | None]] = Counter()
        for change in changes:
            problems += self._step(change, view, sizes)
        for (name, rtype, policy), delta in sorted(sizes.items(), key=str):
            if (policy in quotas.QUOTA_POLICIES and delta > 0
                    and self.zone.per_name[(name, rtype, policy)] + delta > MAX_WEIGHTED_SETS):
                problems.append(quotas.routed_limit(policy, name, rtype))
        growth = sum(sizes.values())
        if growth > 0 and len(self.zone) + growth > self.limits.zone_record_sets:
            problems.append(quotas.zone_limit(ZONE_ID))
        return quotas.batch_message(problems) if problems else ""

    def _step(self, change: Change, view: dict[RecordKey, RecordSet | None],
              sizes: Counter[tuple[str, str, str | None]]) -> list[str]:
        """One change against the zone as the batch's earlier changes leave it."""
        record = change.record
        name, rtype, identifier = record.key
        current = view[record.key] if record.key in view else self.zone.get(record.key)
        if change.action is Action.CREATE and current is not None:
            return [quotas.already_exists(name, rtype, identifier)]
        if change.action is Action.DELETE and current is None:
            return [quotas.not_found(name, rtype, identifier)]
        if change.action is Action.DELETE and current != record:
            return [quotas.values_differ(name, rtype, identifier)]
        after = None if change.action is Action.DELETE else record
        problems = []
        if after is not None:
            if len(after.values) > quotas.VALUES_PER_RECORD_SET:
                problems.append(quotas.values_limit())
            problems += self._beside(after, current, sizes)
        if problems:
            return problems
        if current is not None:
            sizes[policy_key(current)] -= 1
        if after is not None:
            sizes[policy_key(after)] += 1
        view[record.key] = after
        return []

    def _beside(self, record: RecordSet, current: RecordSet | None,
                sizes: Counter[tuple[str, str, str | None]]) -> list[str]:
        """Route 53's refusal of routing policies mixed under one name and type."""
        name, rtype, identifier = record.key
        wanted = policy_key(record)[2]
        replaced = policy_key(current)[2] if current is not None else "-"
        problems = []
        for other in (None, *quotas.QUOTA_POLICIES):
            if other == wanted:
                continue
            present = self.zone.per_name[(name, rtype, other)] + sizes[(name, rtype, other)]
            if present - (other == replaced) <= 0:
                continue
            if identifier is None:
                problems.append(quotas.routed_beside_simple(str(other), name, rtype))
            elif other is None:
                problems.append(quotas.simple_beside_routed(name, rtype, identifier))
            else:
                problems.append(quotas.other_policy(other, name, rtype, identifier))
        return problems

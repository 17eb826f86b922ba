"""The world every simulated party lives in: the virtual clock, the simulated Route 53 and the
bookkeeping that proves every intended change landed.

Hosts (host.py), the zone writer (writer.py) and the fleet's workload (fleet.py) all depend on
this module, never the reverse: the world knows no host and no writer, only what a host must
answer for the regression check (:class:`Tenant`). That keeps benchmarks/fleet free of
import cycles (tests/unit/test_fleet_sim.py checks it).

Intents: every event that should change the zone (a task started or stopped, a host died)
registers what the zone must end up holding for each affected record key (:meth:`World.expect`);
every committed change batch checks them. At the end of a run the zone must equal exactly what
the live hosts want, and no intent may be left: "every intended change lands eventually".
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from benchmarks.fleet.engine import Instruction, Scheduler
from benchmarks.fleet.retry import BotocoreClient
from benchmarks.fleet.route53 import LIST, Limits, RecordKey, Response, SimRoute53, owner_of
from ecssd_agent.aws.route53 import from_wire
from ecssd_agent.core.model import Action, Change, RecordSet
from ecssd_agent.core.ownership import Kind

ZONE = "servicediscovery.internal."
Caller = Callable[[str, dict[str, Any]], Generator[Instruction, Any, Response]]


class Tenant(Protocol):
    """What the world asks of a host: is it alive, and what does it want at a key."""

    @property
    def alive(self) -> bool: ...

    def wanted(self, key: RecordKey) -> RecordSet | None: ...


@dataclass
class Intent:
    record: RecordSet | None  # what the key must hold; None: absent
    since: float
    tag: str


@dataclass
class Metrics:
    #: tag -> (when the intent arose, seconds until its change was applied)
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    burst_last_applied: float = 0.0
    burst_last_insync: float = 0.0
    burst_outstanding: int = 0
    burst_total: int = 0
    burst_requests: int = 0  # accepted change requests that applied deployment changes
    regressions: int = 0  # changes that wrote an older state of a live host over a newer one
    late: int = 0  # changes that wrote an intermediate state after the host had moved on
    failed_applies: int = 0
    rejected: int = 0
    sweep_runs: int = 0
    sweep_failures: int = 0
    host_failures: int = 0


class WireCache:
    """``from_wire`` memoised per listed dict: the simulated zone hands out the same dict
    objects for unchanged record sets, and decoding 21,000 of them per listing is the
    simulation's own cost, not the system's. The cache keeps each dict alive, so an id is
    never reused while it is cached."""

    def __init__(self, decode: Callable[[Any], RecordSet] = from_wire) -> None:
        self._decode = decode
        self._cache: dict[int, tuple[Any, RecordSet]] = {}

    def __call__(self, wire: Any) -> RecordSet:
        hit = self._cache.get(id(wire))
        if hit is not None and hit[0] is wire:
            return hit[1]
        record = self._decode(wire)
        self._cache[id(wire)] = (wire, record)
        return record


class World:
    """The clock, the zone and the intents of one run (``seed`` draws Route 53's latencies
    and propagation times)."""

    def __init__(self, limits: Limits, seed: int, zone_name: str = ZONE) -> None:
        self.zone_name = zone_name
        self.sched = Scheduler()
        self.r53 = SimRoute53(zone_name, limits, random.Random(f"r53:{seed}"))
        self.r53.on_commit.append(self._committed)
        self.decode = WireCache()
        self.metrics = Metrics()
        self.intents: dict[RecordKey, Intent] = {}
        #: every host that ever ran, by label (the regression check asks the live ones)
        self.tenants: dict[str, Tenant] = {}
        #: keys a host's state took out of the zone (the sweep's deletions do not count)
        self.removed: set[RecordKey] = set()

    @property
    def now(self) -> float:
        return self.sched.now

    def list_zone(self, client: BotocoreClient, call: Caller | None = None
                  ) -> Generator[Instruction, Any, list[RecordSet] | None]:
        """A full paginated listing (the paginator's way), or None if a page failed."""
        records: list[RecordSet] = []
        params: dict[str, Any] = {}
        while True:
            response = yield from (call or client.call)(LIST, params)
            if not response.ok:
                return None
            page = response.data
            records.extend(self.decode(w) for w in page["ResourceRecordSets"])
            if not page["IsTruncated"]:
                return records
            params = {"start_name": page["NextRecordName"], "start_type": page["NextRecordType"],
                      "start_identifier": page.get("NextRecordIdentifier")}

    # --- intents ---------------------------------------------------------------------

    def expect(self, key: RecordKey, record: RecordSet | None, tag: str) -> None:
        previous = self.intents.pop(key, None)
        if previous is not None and previous.tag == "burst":
            self.metrics.burst_outstanding -= 1
        if self.r53.zone.get(key) == record:
            return
        self.intents[key] = Intent(record, self.now, tag)
        if tag == "burst":
            self.metrics.burst_outstanding += 1
            self.metrics.burst_total += 1

    def _committed(self, now: float, changes: Sequence[Change], insync: float, caller: str) -> None:
        burst = False
        for change in changes:
            key = change.record.key
            intent = self.intents.get(key)
            if intent is None and caller != "sweep":
                self._check_regression(key)
            if change.action is Action.DELETE and caller != "sweep":
                self.removed.add(key)
            if intent is None:
                continue
            if self.r53.zone.get(key) != intent.record:
                continue
            del self.intents[key]
            self.metrics.latencies.setdefault(intent.tag, []).append((intent.since, now - intent.since))
            if intent.tag == "burst":
                burst = True
                self.metrics.burst_outstanding -= 1
                self.metrics.burst_last_applied = max(self.metrics.burst_last_applied, now)
                self.metrics.burst_last_insync = max(self.metrics.burst_last_insync, insync)
        if burst:
            self.metrics.burst_requests += 1

    def _check_regression(self, key: RecordKey) -> None:
        """A change to a key nobody was waiting for: it must leave what the live owner wants.

        Every change of a host's wants arms an intent (``expect``), so a key without one held
        what its host wants; a write that takes it elsewhere wrote a state the host no longer
        wants. A key is one container's record set: wanted from the container's start to its
        stop. Deleting it while it is wanted, or writing it again after a host's state deleted
        it, can only come from a state older than one already applied: a *regression*. Writing it
        when it was never in the zone and is no longer wanted is a *late* write of a state the
        host passed through (a container stopped seconds after it started), which any
        asynchronous writer may do. Both arm an intent: the zone must come back. (The sweep's
        deletions of unhealthy instances are exempt: their tasks are stopped next.)
        """
        owner = owner_of(key[2])
        host = self.tenants.get(owner.host) if owner is not None and owner.kind is Kind.HOST else None
        if host is None or not host.alive:
            return
        want = host.wanted(key)
        have = self.r53.zone.get(key)
        if have == want:
            return
        if have is None or key in self.removed:
            self.metrics.regressions += 1
            tag = "regression"
        else:
            self.metrics.late += 1
            tag = "late"
        self.intents[key] = Intent(want, self.now, tag)

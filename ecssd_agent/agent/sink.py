"""Where the agent's output goes: one :class:`Sink`, chosen once when the agent is wired.

Why: the agent and its daemon compute the same thing in both modes (this host's whole desired
state) and differ only in what becomes of it. Direct mode converges it in Route 53 itself
(:class:`DirectSink`); queued mode publishes it for the zone writer (:class:`QueuedSink`).
With the choice made here, the agent and the daemon never ask which mode they run in, and the
state that only makes sense against Route 53 (what this host knows it owns, the budgeted
reads, the throttling watch) lives with the sink that talks to it.

Reconciles come in two kinds, and each sink honours both: a *full* one (startup, relist,
resync, retry, the one-shot ``--sync``) must make sure the state arrives even if an earlier
delivery was lost; an *event* may rely on what was delivered before.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ecssd_agent.aws.route53 import Meaning, Route53Zone, code_meaning
from ecssd_agent.core.model import Action, Change, RecordSet
from ecssd_agent.core.ownership import Owns
from ecssd_agent.sync.reconcile import Outcome, Read, converge
from ecssd_agent.sync.zone_reads import ReadSchedule, owned_records_by_names, zone_record_count
from ecssd_agent.writer.publish import Publisher

Key = tuple[str, str, "str | None"]
#: The daemon's default resync period (seconds), the read floor until a daemon attaches.
DEFAULT_RESYNC = 300.0


@dataclass
class Delivery(Outcome):
    """An :class:`Outcome` (the changes this host made in the zone itself: none in queued
    mode) and what to log about it."""

    summary: str = ""  # e.g. "2 change(s) in 1 change request(s)"
    notable: bool = False  # worth an INFO line even after a mere event
    extra: dict[str, object] = field(default_factory=dict)  # structured log fields


class Sink(Protocol):
    """The agent's output. ``owns`` is the agent's ownership test, ``dry_run`` its flag."""

    #: The zone the records are named in (absolute, with the final dot).
    zone_name: str

    def sync(self, desired: Sequence[RecordSet], owns: Owns, *, dry_run: bool) -> Delivery:
        """One-shot ``--sync``: deliver the whole desired state, trusting nothing earlier."""
        ...

    def remove(self, owns: Owns, *, dry_run: bool) -> Delivery:
        """One-shot ``--remove``: this host's records go, whatever was delivered before."""
        ...

    def attach(self, *, resync: float, clock: Callable[[], float],
               rng: random.Random) -> None:
        """The daemon's pacing (its resync period, clock and random source)."""
        ...

    def reconcile(self, desired: Sequence[RecordSet], owns: Owns, *, full: bool,
                  read_zone: bool, dry_run: bool) -> Delivery:
        """The daemon's reconcile: ``full`` unless it is for events only; ``read_zone`` when
        the daemon wants the zone read rather than the known state trusted."""
        ...

    def deregister(self, owns: Owns, *, dry_run: bool) -> Delivery:
        """The daemon's ``--deregister-on-exit``."""
        ...

    def read_due(self, now: float) -> bool:
        """Whether a budgeted read of the zone is due at ``now``."""
        ...

    def doubt(self) -> None:
        """An ambiguous error: a write may have half-happened."""
        ...

    def watch_throttling(self, on_throttled: Callable[[], None]) -> None:
        """Call ``on_throttled`` on every Throttling answer this sink's requests get."""
        ...

    @property
    def owned(self) -> int:
        """Record sets this host knows it owns in the zone (0: it keeps no such state)."""
        ...


class DirectSink:
    """Direct mode: this host converges its own records in Route 53.

    For the daemon it keeps what this host owns (``_owned``, updated from every applied
    change) and reads the zone only when it must: a full listing when nothing is known
    (startup, or --deregister-on-exit before anything), a name-scoped read when the daemon
    asks for one (a budgeted resync: ``ReadSchedule``), when the known state is doubtful, or
    after a batch Route 53 rejected. ``full`` changes nothing here: the known state is exact
    after every applied change, and a read is what ``read_zone`` asks for. ``read_owned``
    (tests) replaces every read.
    """

    def __init__(self, zone: Route53Zone, *,
                 read_owned: Callable[[], Iterable[RecordSet]] | None = None) -> None:
        self.zone = zone
        self.zone_name = zone.zone.name
        self._custom_read = read_owned
        self._owned: dict[Key, RecordSet] | None = None
        self._stale = False  # _owned may be wrong (ambiguous error): read before planning
        # the daemon's pacing (attach); the one-shot modes never read on a budget
        self._clock: Callable[[], float] = time.monotonic
        self._schedule = ReadSchedule(DEFAULT_RESYNC)
        self._schedule_started = False
        self.zone_reads = 0  # reads of the zone (full or name-scoped)
        self.full_reads = 0  # full listings of the zone

    # --- one-shot ------------------------------------------------------------------------

    def sync(self, desired: Sequence[RecordSet], owns: Owns, *, dry_run: bool) -> Delivery:
        return self._delivered(converge(self.zone, desired, owns, dry_run=dry_run))

    def remove(self, owns: Owns, *, dry_run: bool) -> Delivery:
        return self._delivered(converge(self.zone, [], owns, dry_run=dry_run))

    # --- the daemon ----------------------------------------------------------------------

    def attach(self, *, resync: float, clock: Callable[[], float],
               rng: random.Random) -> None:
        self._clock = clock
        self._schedule = ReadSchedule(resync, rng=rng)

    def reconcile(self, desired: Sequence[RecordSet], owns: Owns, *, full: bool,
                  read_zone: bool, dry_run: bool) -> Delivery:
        outcome = converge(self.zone, desired, owns, read=self._reader(read_zone, desired, owns),
                           dry_run=dry_run)
        self._learn(outcome.changes, dry_run)
        delivery = self._delivered(outcome)
        delivery.summary += f", {self.owned} record set(s) owned"
        delivery.extra["owned"] = self.owned
        return delivery

    def deregister(self, owns: Owns, *, dry_run: bool) -> Delivery:
        outcome = converge(self.zone, [], owns, read=self._reader(False, [], owns, size=False),
                           dry_run=dry_run)
        self._learn(outcome.changes, dry_run)
        return Delivery(outcome.changes, outcome.requests, outcome.attempts,
                        summary=f"{len(outcome.changes)} record set(s) deleted in "
                                f"{outcome.requests} change request(s)",
                        extra={"changes": len(outcome.changes),
                               "change_requests": outcome.requests})

    def read_due(self, now: float) -> bool:
        return self._schedule.due(now)

    def doubt(self) -> None:
        self._stale = True  # read the zone before the next plan

    def watch_throttling(self, on_throttled: Callable[[], None]) -> None:
        """See every Throttling answer, also those botocore retries by itself (its standard
        retries hide them from the caller until they run out): back pressure starts at once."""
        clients = [self.zone.client]
        if self.zone.write_client is not self.zone.client:
            clients.append(self.zone.write_client)

        def on_attempt(response: object = None, **_kwargs: object) -> None:
            parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else None
            code = parsed.get("Error", {}).get("Code", "") if isinstance(parsed, dict) else ""
            if code and code_meaning(code).kind is Meaning.THROTTLED:
                on_throttled()

        for client in clients:
            events = getattr(getattr(client, "meta", None), "events", None)
            if events is None:  # not a botocore client (a test double)
                continue
            events.register("needs-retry.route53", on_attempt,
                            unique_id=f"ecssd-daemon-throttling-{id(on_attempt)}")

    @property
    def owned(self) -> int:
        return len(self._owned) if self._owned is not None else 0

    # --- the known state -----------------------------------------------------------------

    @staticmethod
    def _delivered(outcome: Outcome) -> Delivery:
        return Delivery(outcome.changes, outcome.requests, outcome.attempts,
                        summary=f"{len(outcome.changes)} change(s) in {outcome.requests} "
                                "change request(s)",
                        notable=bool(outcome.changes),
                        extra={"changes": len(outcome.changes),
                               "change_requests": outcome.requests})

    def _reader(self, scheduled: bool, desired: Sequence[RecordSet], owns: Owns,
                size: bool = True) -> Read:
        """The zone as converge reads it: the known state, unless a read is ``scheduled`` or
        the known state is missing or doubtful; then (and on every later call: converge calls
        again after a batch Route 53 rejected) a read of the zone.

        The first read of a reconcile also sizes the zone (one GetHostedZone) to schedule the
        next budgeted read: the fleet is estimated as zone records / this host's records.
        """
        calls = 0

        def read() -> list[RecordSet]:
            nonlocal calls
            calls += 1
            if calls == 1 and not scheduled and not self._stale and self._owned is not None:
                return list(self._owned.values())
            names = self._names(desired)
            requests = self._read(names, owns)
            if calls == 1 and size:
                self._sized(desired, names, requests)
            assert self._owned is not None
            return list(self._owned.values())

        return read

    def _names(self, desired: Iterable[RecordSet]) -> set[str]:
        """What a name-scoped read covers: the names this host wants records under, and the
        names it knows it owns records under (stale ones are found and deleted so)."""
        names = {r.name for r in desired}
        if self._owned is not None:
            names.update(r.name for r in self._owned.values())
        return names

    def _read(self, names: set[str], owns: Owns) -> int | None:
        """Read the zone into ``_owned``; the requests it cost (None: not known).

        With no known state at all (startup), the whole zone is listed: that is the only
        read that finds records left under names this host no longer publishes (a container
        that went away while the agent was down). Afterwards only ``names`` are read.
        """
        requests: int | None = None
        if self._custom_read is not None:
            listed = list(self._custom_read())
        elif self._owned is None:
            listed = [r for r in self.zone.records() if owns(r)]
            self.full_reads += 1
        else:
            result = owned_records_by_names(self.zone, names, owns)
            listed = result.merged_into(self._owned.values())
            requests = result.requests
        self.zone_reads += 1
        self._owned = {r.key: r for r in listed}
        self._stale = False
        return requests

    def _sized(self, desired: Sequence[RecordSet], names: set[str],
               requests: int | None) -> None:
        """Schedule the next budgeted read after this one (see zone_reads.ReadSchedule)."""
        count = zone_record_count(self.zone)
        now = self._clock()
        if not self._schedule_started or requests is None:
            # the first (full) read: the next one at a random point of the interval, so
            # hosts that start together do not read together
            self._schedule.start(now, count, len(desired), len(names))
            self._schedule_started = True
        else:
            self._schedule.done(now, count, len(desired), requests + 1)

    def _learn(self, changes: Iterable[Change], dry_run: bool) -> None:
        """Apply the changes just made to the known state (a dry run changed nothing)."""
        if self._owned is None or dry_run:
            return
        for change in changes:
            if change.action is Action.DELETE:
                self._owned.pop(change.record.key, None)
            else:
                self._owned[change.record.key] = change.record


class QueuedSink:
    """Queued mode: publish this host's whole desired state for the zone writer
    (:mod:`ecssd_agent.writer.publish`); no Route 53 request at all, so nothing to read,
    learn or be throttled by. An event publishes only a changed state; a full reconcile
    always publishes (a hint lost on the way is so re-sent); a one-shot removal asks the
    writer to read the zone (``verify``), as nothing earlier can be trusted. ``read_zone`` is
    the writer's business here (it reads a host's names when it must)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.zone_name = publisher.zone

    def sync(self, desired: Sequence[RecordSet], owns: Owns, *, dry_run: bool) -> Delivery:
        if not dry_run:
            self.publisher.publish(desired, force=True)
        return Delivery(summary="published this host's desired state for the zone writer")

    def remove(self, owns: Owns, *, dry_run: bool) -> Delivery:
        if not dry_run:
            self.publisher.publish([], force=True, verify=True)
        return Delivery(summary="published this host's desired state for the zone writer")

    def attach(self, *, resync: float, clock: Callable[[], float],
               rng: random.Random) -> None:
        """Nothing is paced here: the zone writer reads and writes the zone."""

    def reconcile(self, desired: Sequence[RecordSet], owns: Owns, *, full: bool,
                  read_zone: bool, dry_run: bool) -> Delivery:
        published = False
        if not dry_run:
            published = self.publisher.publish(desired, force=full)
        state = "published" if published else "unchanged, not published"
        return Delivery(summary=f"{state} {len(desired)} record set(s) for the zone writer",
                        notable=published,
                        extra={"published": published, "records": len(desired)})

    def deregister(self, owns: Owns, *, dry_run: bool) -> Delivery:
        if not dry_run:
            self.publisher.publish([], force=True)
        return Delivery(summary="published an empty state for the zone writer")

    def read_due(self, now: float) -> bool:
        return False  # the zone writer decides when a host's names are read

    def doubt(self) -> None:
        """A publication either happened or not; the next full reconcile re-publishes."""

    def watch_throttling(self, on_throttled: Callable[[], None]) -> None:
        """No Route 53 request, no throttling to watch."""

    @property
    def owned(self) -> int:
        return 0  # this agent keeps no view of the zone: the zone writer does

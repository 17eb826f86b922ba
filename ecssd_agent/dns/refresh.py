"""Keeps the server's view of the zone fresh within a fixed Route 53 budget.

The budget: one token bucket for the whole process (``--route53-rate`` requests/s, default
1, ``--route53-burst`` saved up, default 5), enforced on every Route 53 request the process
sends (:mod:`ecssd_agent.aws.request_budget`). Whatever the zone's size and whatever
clients ask, the server never sends more. This module decides what each request is spent
on, one at a time, in one thread:

1. **Sweeps**: the zone listed page by page (300 record sets a page), one page per token,
   starting at most every ``interval`` seconds. A sweep of 3,000 record sets is 10 requests,
   about 10 s; of 21,000, 70 requests and 70 s. Each page applies at once what it proves
   (a name's record sets followed by another name are that name's whole truth, see
   :mod:`.zone_copy`); names a sweep did not see are removed when it ends. The view in use
   keeps being served meanwhile (stale while refreshing).
2. **Lookups**: a query for a name the view does not have (a service that registered a
   moment ago) asks for one request listing from that name (``StartRecordName``, 100 record
   sets at most); the query's answer waits for it up to ``max_defer`` seconds, and only when
   the budget allows the lookup to be sent within that time. Lookups are coalesced per name;
   a name looked up is not looked up again for ``negative_ttl`` seconds; only names a query
   still waits for are looked up; and lookups may spend at most ``lookup_share`` of the rate
   and of the burst (their own bucket), so sweeps keep at least the rest: with the defaults
   a flood of missing names leaves sweeps 0.5 requests/s, 20 s for 3,000 record sets. A
   query never starts a full listing.
3. **Backoff**: a throttled answer holds the bucket (every path: sweeps, lookups, botocore's
   retries), doubling from 2 s to a minute; other failures pause both kinds of read for
   ``interval`` doubled per failure in a row, up to a minute. The last good view is served.

Why this technique over the others: a full listing per miss (what it replaces) costs the
whole zone per query; reading the zone writer's applied state (queued mode's DynamoDB table)
would leave direct mode and zones written by other tools unserved and adds a second source
to reconcile. Paging within a budget serves any zone; lookups give a new name its first
answer within a second while the budget lasts; the sweep bounds everything else.

A changed copy builds a new :class:`ZoneView` off the query path, swapped in by assigning one
reference; builds are spaced (a 21,000-set view takes about a second to build) except when a
lookup found its name changed (queries wait for it) or a sweep ended.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.aws.request_budget import TokenBucket
from ecssd_agent.aws.route53 import ListPosition, Meaning, Page, error_meaning
from ecssd_agent.dns.responder import Responder
from ecssd_agent.dns.view import ZoneView
from ecssd_agent.dns.zone_copy import ZoneCopy

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
LOOKUP_ITEMS = 100
#: A lookup of a name with more record sets than this many pages hold stops there.
MAX_LOOKUP_PAGES = 4
#: Seconds between two builds of the view from sweep pages, at least (and 3 builds' time).
MIN_BUILD_GAP = 1.0
RECENT_NAMES = 4096  # names remembered as looked up (the negative cache)
_LOOKUP_NAME = re.compile(rb"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")

Waiter = Callable[[], None]


class Source(Protocol):
    """Where the zone is read: :class:`ecssd_agent.aws.route53.Route53Zone`."""

    def page(self, start: ListPosition | None = None, max_items: int = ...) -> Page: ...


@dataclass(eq=False)
class _Pending:
    """A name some queries wait for: looked up once, answered when that lookup ends."""

    name: str
    waiters: list[Waiter] = field(default_factory=list)
    started: bool = False


def lookup_name(qkey: bytes) -> str | None:
    """A query name in wire form -> the text to list from, or None when it is not a
    plain host name (letters, digits, ``-``, ``_``): nothing such is looked up."""
    labels: list[str] = []
    i = 0
    while i < len(qkey) and qkey[i]:
        label = qkey[i + 1:i + 1 + qkey[i]]
        if not _LOOKUP_NAME.fullmatch(label):
            return None
        labels.append(label.decode("ascii"))
        i += 1 + qkey[i]
    return ".".join(labels) + "." if labels else None


class Refresher:
    def __init__(
        self,
        zone: str,
        source: Source,
        responder: Responder,
        bucket: TokenBucket,
        interval: float = 10.0,
        lookup_share: float = 0.5,
        max_defer: float = 1.0,
        negative_ttl: float = 30.0,
        max_pending: int = 16,
        max_waiters: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.zone = zone
        self.source = source
        self.responder = responder
        self.bucket = bucket
        # Lookups save up a share of the burst too: a full one would starve sweeps for
        # burst / (rate * (1 - share)) seconds under a flood (10 s with the defaults).
        self.lookups = TokenBucket(bucket.rate * lookup_share,
                                   max(1, int(bucket.burst * lookup_share)), clock)
        self.interval = interval
        self.max_defer = max_defer
        self.negative_ttl = negative_ttl
        self.max_pending = max_pending
        self.max_waiters = max_waiters
        self.clock = clock
        self.copy = ZoneCopy()
        self.stats: dict[str, int] = {"sweeps": 0, "pages": 0, "lookups": 0, "failed": 0,
                                      "throttled": 0}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: dict[bytes, _Pending] = {}
        self._waiting = 0
        self._recent: dict[bytes, float] = {}
        self._next_sweep = clock()
        self._sweep_start = 0.0
        self._sweep_next: ListPosition | None = None
        self._paused_until = float("-inf")
        self._failures = 0
        self._built_changes = -1
        self._last_build = float("-inf")
        self._build_seconds = 0.0
        self._reported: set[str] = set()
        self._thread: threading.Thread | None = None

    # --- the refresh thread --------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="zone-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.step()
            except Exception:  # a bug in one step must not stop every later refresh
                log.exception("refreshing the zone view failed; serving the last one",
                              extra={"zone": self.zone})
                wait = 1.0
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def step(self) -> float:
        """Do the next thing due (a build, a lookup or a page); returns seconds to wait
        before the next step (0: go on at once)."""
        now = self.clock()
        if self._build_due(now):
            self._build()
            return 0.0
        if now < self._paused_until:
            return self._paused_until - now
        pending = self._next_pending()
        lookup_wait = self.lookups.wait_time() if pending is not None else float("inf")
        sweep_wait = 0.0 if self.copy.sweeping else self._next_sweep - now
        wait = min(lookup_wait, sweep_wait)
        if self.copy.complete and self.copy.changes != self._built_changes:
            wait = min(wait, self._build_gap() - (now - self._last_build))
        if wait > 0:
            return wait
        token = self.bucket.wait_time()
        if token > 0:
            return token
        if pending is not None and lookup_wait <= 0 and self.lookups.try_take():
            self._lookup(pending)
        elif sweep_wait <= 0:
            self._sweep_page()
        return 0.0

    # --- sweeps --------------------------------------------------------------------------

    def _sweep_page(self) -> None:
        if not self.copy.sweeping:
            self.copy.start_sweep()
            self._sweep_start = self.clock()
            self._sweep_next = None
        start = self._sweep_next
        page = self._read(lambda: self.source.page(start), "listing the zone")
        if page is None:
            return
        if page.next is not None and page.next == start:
            self.copy.abandon_sweep()  # a server that does not advance: never loop on it
            self._next_sweep = self.clock() + self.interval
            log.error("the zone listing did not advance past %s; sweep abandoned", start.name,
                      extra={"zone": self.zone})
            return
        self.stats["pages"] += 1
        self.copy.sweep_page(page)
        self._sweep_next = page.next
        if page.next is None:
            self.copy.end_sweep()
            self.stats["sweeps"] += 1
            self._next_sweep = self._sweep_start + self.interval
            log.debug("listed %d record set(s) in %.1f s", len(self.copy),
                      self.clock() - self._sweep_start, extra={"zone": self.zone})
            self._build()

    # --- lookups -------------------------------------------------------------------------

    def _next_pending(self) -> tuple[bytes, _Pending] | None:
        with self._lock:
            for qkey, pending in self._pending.items():
                if not pending.started:
                    return qkey, pending
        return None

    def _lookup(self, item: tuple[bytes, _Pending]) -> None:
        qkey, pending = item
        pending.started = True
        name = pending.name
        pages: list[Page] = []
        start: ListPosition | None = ListPosition(name)
        while start is not None and len(pages) < MAX_LOOKUP_PAGES:
            page = self._read(partial(self.source.page, start, LOOKUP_ITEMS),
                              f"looking up {name}", lookup=True)
            if page is None:
                break
            pages.append(page)
            start = None if self.copy.lookup_done(name, page) else page.next
        self.stats["lookups"] += 1
        with self._lock:
            self._recent[qkey] = self.clock()
            if len(self._recent) > RECENT_NAMES:
                del self._recent[next(iter(self._recent))]
        if pages:
            before = self.copy.names(name)
            self.copy.lookup(name, pages)
            log.debug("looked up %s: %d record set(s)", name, len(self.copy.names(name)),
                      extra={"zone": self.zone})
            if self.copy.names(name) != before:
                self._build()  # queries wait for this name: now, not after the build gap
        self._release(qkey, pending)

    def defer(self, qkey: bytes, waiter: Waiter) -> bool:
        """A query for ``qkey`` (wire form) found no such name: True when its answer waits
        (``waiter`` runs after a lookup of the name, or after ``max_defer`` seconds).

        False means answer now: the name was looked up a moment ago, is not a plain host
        name, too many names or queries wait already, or its lookup could not be sent
        within ``max_defer`` (the budget is spent: the next sweep will see the name).
        """
        seen = self._recent.get(qkey)  # the usual case in a flood, decided without the lock
        if seen is not None and self.clock() - seen < self.negative_ttl:
            return False
        name = lookup_name(qkey)
        if name is None:
            return False
        with self._lock:
            if self._waiting >= self.max_waiters:
                return False
            pending = self._pending.get(qkey)
            if pending is None:
                if len(self._pending) >= self.max_pending or self._starts_in() >= self.max_defer:
                    return False  # its answer would wait in vain: answer now, look up nothing
                pending = self._pending[qkey] = _Pending(name)
                timer = threading.Timer(self.max_defer, self._release, (qkey, pending))
                timer.daemon = True
                timer.start()
                self._wake.set()
            pending.waiters.append(waiter)
            self._waiting += 1
        return True

    def _starts_in(self) -> float:
        """Seconds until a lookup queued now would be sent (called with the lock held)."""
        ahead = sum(1 for p in self._pending.values() if not p.started)
        return (max(self.lookups.wait_time(), self.bucket.wait_time())
                + ahead / self.lookups.rate)

    def _release(self, qkey: bytes, pending: _Pending) -> None:
        """Answer the queries waiting for ``pending`` from the view as it is now."""
        with self._lock:
            if self._pending.get(qkey) is pending:
                del self._pending[qkey]
            waiters, pending.waiters = pending.waiters, []
            self._waiting -= len(waiters)
        for waiter in waiters:
            try:
                waiter()
            except OSError as exc:  # the client went away; nothing else to do
                log.debug("a deferred answer could not be sent: %s", exc)

    # --- reads and failures --------------------------------------------------------------

    def _read(self, read: Callable[[], Page], doing: str, lookup: bool = False) -> Page | None:
        try:
            page = read()
        except (ClientError, BotoCoreError) as exc:
            self._failed(exc, doing, lookup)
            return None
        if self._failures:
            log.info("reading the zone works again after %d failure(s)", self._failures,
                     extra={"zone": self.zone})
        self._failures = 0
        return page

    def _failed(self, exc: Exception, doing: str, lookup: bool) -> None:
        self.stats["failed"] += 1
        meaning = error_meaning(exc)
        if meaning.kind is Meaning.THROTTLED:
            self.stats["throttled"] += 1  # the bucket holds every request already
            log.warning("%s: throttled; every Route 53 read waits (%s)", doing, exc,
                        extra={"zone": self.zone})
            return
        if lookup and meaning.kind is Meaning.REFUSED and isinstance(exc, ClientError):
            log.warning("%s failed: %s", doing, exc, extra={"zone": self.zone})
            return  # this request was wrong (a name Route 53 refuses), not the service
        self._failures += 1
        pause = min(self.interval * 2 ** (self._failures - 1), MAX_BACKOFF)
        self._paused_until = self.clock() + pause
        level = logging.ERROR if self._failures == 1 else logging.DEBUG
        log.log(level, "%s failed (%d in a row), serving the last view; next read in %.0f s: "
                "%s", doing, self._failures, pause, exc, extra={"zone": self.zone})

    # --- the view ------------------------------------------------------------------------

    def _build_gap(self) -> float:
        return max(MIN_BUILD_GAP, 3 * self._build_seconds)

    def _build_due(self, now: float) -> bool:
        return (self.copy.complete and self.copy.changes != self._built_changes
                and now - self._last_build >= self._build_gap())

    def _build(self) -> None:
        """Install a view of the copy as it is now (nothing when it did not change)."""
        if not self.copy.complete or self.copy.changes == self._built_changes:
            return
        started = time.perf_counter()
        current = self.responder.view
        view = ZoneView(self.zone, self.copy.records())
        self.responder.view = view
        self._built_changes = self.copy.changes
        self._build_seconds = time.perf_counter() - started
        self._last_build = self.clock()
        log.info("zone view %s: %s, built in %.1f ms",
                 "loaded" if not current.ready else "updated", view.describe(),
                 self._build_seconds * 1000, extra={"zone": self.zone})
        for problem in view.problems:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("%s", problem, extra={"zone": self.zone})

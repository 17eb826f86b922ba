"""Keeps the server's view of the zone fresh: on an interval, and on demand with a cap.

Route 53 allows five API requests per second per account, shared by every agent, Lambda
and tool, so the server must never turn queries into API calls one for one. Three rules:

1. A listing every ``interval`` seconds (one ListResourceRecordSets request per 300
   record sets); after failures the interval doubles, up to a minute, and the last good
   view keeps being served.
2. A query for a name or type missing from the view (a service that registered a moment
   ago) may start one refresh *now*, but only if none started within ``min_interval``
   seconds: a flood of NXDOMAIN queries costs at most one listing per ``min_interval``.
3. The query that started the refresh, and misses arriving while it runs, are answered
   when it ends (from the new view), or after ``max_defer`` seconds from the old one if
   the API is slow; at most ``max_waiters`` are held, later ones are answered at once.

A listing equal to the previous one (the usual case) keeps the current view: nothing is
rebuilt. A changed one builds a new :class:`ZoneView` off the query path and swaps it in by
assigning one reference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.core.model import RecordSet
from ecssd_agent.dns.responder import Responder
from ecssd_agent.dns.view import ZoneView

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
Fetch = Callable[[], Iterable[RecordSet]]
Waiter = Callable[[], None]


class Refresher:
    def __init__(
        self,
        zone: str,
        fetch: Fetch,
        responder: Responder,
        interval: float = 2.0,
        min_interval: float = 1.0,
        max_defer: float = 1.0,
        max_waiters: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.zone = zone
        self.fetch = fetch
        self.responder = responder
        self.interval = interval
        self.min_interval = min_interval
        self.max_defer = max_defer
        self.max_waiters = max_waiters
        self.clock = clock
        self.refreshes: dict[str, int] = {"interval": 0, "demand": 0, "failed": 0}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight = False
        self._demanded = False
        self._last_start = float("-inf")
        self._next_due = clock()
        self._failures = 0
        self._waiters: list[Waiter] = []
        self._timer: threading.Timer | None = None
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
            delay = self._next_due - self.clock()
            if delay > 0:
                self._wake.wait(delay)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.refresh()
            except Exception:  # a bug building one view must not stop every later refresh
                log.exception("building the zone view failed; serving the last one",
                              extra={"zone": self.zone})

    def refresh(self) -> bool:
        """List the zone once and install the result; True when the listing succeeded."""
        with self._lock:
            reason = "demand" if self._demanded else "interval"
            self._in_flight = True
            self._last_start = self.clock()
        started = time.perf_counter()
        ok = False
        try:
            records = tuple(self.fetch())
        except (ClientError, BotoCoreError) as exc:
            self._failures += 1
            self.refreshes["failed"] += 1
            level = logging.ERROR if self._failures == 1 else logging.DEBUG
            log.log(level, "listing the zone failed (%d in a row), serving the last view: %s",
                    self._failures, exc, extra={"zone": self.zone, "reason": reason})
        else:
            ok = True
            self.refreshes[reason] += 1
            if self._failures:
                log.info("listing the zone works again after %d failure(s)", self._failures)
            self._failures = 0
            self._install(records, reason, time.perf_counter() - started)
        finally:
            backoff = min(self.interval * 2 ** self._failures, MAX_BACKOFF)
            with self._lock:
                self._in_flight = False
                self._demanded = False
                self._next_due = self.clock() + (backoff if self._failures else self.interval)
            self._release()
        return ok

    def _install(self, records: tuple[RecordSet, ...], reason: str, seconds: float) -> None:
        current = self.responder.view
        log.debug("listed %d record set(s) in %.1f ms (%s refresh)", len(records),
                  seconds * 1000, reason, extra={"zone": self.zone, "reason": reason})
        if current.ready and current.records == records:
            return
        started = time.perf_counter()
        view = ZoneView(self.zone, records)
        self.responder.view = view
        log.info("zone view %s: %s, built in %.1f ms",
                 "loaded" if not current.ready else "updated", view.describe(),
                 (time.perf_counter() - started) * 1000, extra={"zone": self.zone})
        for problem in view.problems:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("%s", problem, extra={"zone": self.zone})

    # --- on demand -----------------------------------------------------------------------

    def defer(self, waiter: Waiter) -> bool:
        """Ask for a refresh because a query missed; True: ``waiter`` runs after it.

        False means no refresh is allowed now (one started less than ``min_interval`` ago,
        or too many queries wait already): answer from the current view.
        """
        if not self._in_flight and self.clock() - self._last_start < self.min_interval:
            return False  # the usual case in a flood, decided without the lock
        with self._lock:
            if len(self._waiters) >= self.max_waiters:
                return False
            if not self._in_flight:
                if self.clock() - self._last_start < self.min_interval:
                    return False
                self._in_flight = True
                self._demanded = True
                self._wake.set()
            self._waiters.append(waiter)
            if self._timer is None:
                self._timer = threading.Timer(self.max_defer, self._release)
                self._timer.daemon = True
                self._timer.start()
        return True

    def _release(self) -> None:
        """Answer every waiting query from the view as it is now."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        for waiter in waiters:
            try:
                waiter()
            except OSError as exc:  # the client went away; nothing else to do
                log.debug("a deferred answer could not be sent: %s", exc)

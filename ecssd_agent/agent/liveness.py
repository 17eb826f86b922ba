"""Liveness: is the agent's loop alive and making progress? The answer of ``/healthz``.

A container health check that fails makes ECS replace the agent, so ``/healthz`` fails only
for what a new agent process would cure: the reconcile loop stuck (one attempt running past
``Bounds.stuck``, or the loop not waking ``Bounds.late`` after work fell due) or the Docker
event stream lost for longer than ``Bounds.docker``. Start-up (the agent still being built,
retrying AWS) is alive too. A failing reconcile is not: Route 53 throttling, a change Route 53
refused, an AWS outage are retried by this same loop on schedule, and a new agent would only
read the zone again and add to the load. They show in ``/readyz``, ``/metrics`` and the log.

Times come from one monotonic clock (the daemon's), handed in by the callers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    """How long each kind of standstill may last before ``/healthz`` fails (seconds)."""

    #: One reconcile (or one start-up attempt) running longer than this: stuck. Generous:
    #: a start-up listing of a large zone under throttling, with botocore's retries, takes
    #: minutes; a hung call never ends.
    stuck: float = 600.0
    #: The loop not waking this long after its next work fell due: blocked.
    late: float = 60.0
    #: The Docker event stream disconnected this long (an engine restart takes seconds; a
    #: live-restore with many containers, a minute or two).
    docker: float = 300.0


class Liveness:
    """Thread-safe record of the loop's progress; :meth:`check` is the ``/healthz`` verdict."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 bounds: Bounds | None = None) -> None:
        self.clock = clock
        self.bounds = bounds or Bounds()
        self._lock = threading.Lock()
        self._busy_since: float | None = None  # a reconcile or start-up attempt under way
        self._due: float | None = None  # waiting: when the next work falls due
        self._docker_down_since: float | None = None  # None: connected, or not following yet
        self._docker_reason = ""

    # --- from the loop -------------------------------------------------------------------

    def busy(self, since: float) -> None:
        with self._lock:
            self._busy_since, self._due = since, None

    def idle(self) -> None:
        with self._lock:
            self._busy_since = None

    def waiting(self, due: float) -> None:
        with self._lock:
            self._busy_since, self._due = None, due

    def docker_up(self) -> None:
        with self._lock:
            self._docker_down_since, self._docker_reason = None, ""

    def docker_down(self, reason: str) -> None:
        with self._lock:
            if self._docker_down_since is None:
                self._docker_down_since = self.clock()
            self._docker_reason = reason

    # --- the verdict ---------------------------------------------------------------------

    def check(self) -> tuple[bool, str]:
        """(alive, reason): False names the standstill and its bound."""
        now = self.clock()
        b = self.bounds
        with self._lock:
            if self._busy_since is not None and now - self._busy_since > b.stuck:
                return False, (f"stuck: one reconcile has run for {now - self._busy_since:.0f}s "
                               f"(bound {b.stuck:.0f}s)")
            if self._due is not None and now - self._due > b.late:
                return False, (f"stuck: the reconcile loop has not woken up "
                               f"{now - self._due:.0f}s after work was due "
                               f"(bound {b.late:.0f}s)")
            if self._docker_down_since is not None \
                    and now - self._docker_down_since > b.docker:
                return False, (f"docker: {self._docker_reason} for "
                               f"{now - self._docker_down_since:.0f}s (bound {b.docker:.0f}s)")
        return True, "alive"

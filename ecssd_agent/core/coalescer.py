"""When a batch of Docker events becomes a change request: the daemon's batching policy.

Pure (times are passed in), so the daemon, its unit tests and the fleet simulation
(benchmarks/fleet) run the very same policy.
"""

from __future__ import annotations

#: Coalescing. After a lull, a batch of events closes ``coalesce`` seconds after its last
#: event, or at the latest CAP_FACTOR x coalesce after its first: a lone event is applied
#: within ``coalesce``. A batch that opens less than a cap after the last change request
#: means a burst (a deployment, a host boot, a crash loop): then its cap is CAP_GROWTH times
#: the previous one (up to MAX_CAP_FACTOR x coalesce) and it closes early only after a
#: silence of half its cap (a loaded engine starts containers with gaps of a second or
#: more). With the default 0.25 s: a lone event waits 0.25 s;
#: a burst is applied in requests 0.25-1 s, 3 s and 9 s apart, so 50 containers started
#: over ~10 s (what this machine's engine needs for them) take 3 change requests, not 50,
#: and a steady trickle of events costs at most one request per 9 s. Removals are the
#: exception: a batch with a kill, stop or die closes at most CAP_FACTOR x coalesce (1 s)
#: after it, burst or not, because a record of a container that is going away makes clients
#: fail, while a new container that is not yet registered only waits for its traffic. A
#: mass stop therefore costs up to one request per second.
CAP_FACTOR = 4.0
CAP_GROWTH = 3.0
MAX_CAP_FACTOR = 36.0


class Coalescer:
    """Decides when a batch of events is applied: a quiet window, extended while events keep
    coming, capped; both longer during a burst (see CAP_FACTOR). Pure: times are passed in."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self.base_cap = quiet * CAP_FACTOR
        self.max_cap = quiet * MAX_CAP_FACTOR
        self.cap = self.base_cap
        self.window = quiet
        self.first: float | None = None
        self.last = 0.0
        self.first_removal: float | None = None
        self._requested_at = float("-inf")
        self._in_burst = False  # the open batch was opened (or found to be) in a burst
        self._previous_cap = self.cap

    @property
    def busy(self) -> bool:
        return self.cap > self.base_cap

    def add(self, at: float, removal: bool = False) -> None:
        """An event at ``at``; ``removal`` when it may take records away (kill, stop, die)."""
        if removal and self.first_removal is None:
            self.first_removal = at
        if self.first is None:
            self._in_burst = at - self._requested_at < self.cap
            self._previous_cap = self.cap
            if self._in_burst:
                self._grow()
            else:  # after a lull: be quick again
                self.cap, self.window = self.base_cap, self.quiet
            self.first = self.last = at
        self.last = max(self.last, at)

    def _grow(self) -> None:
        """A burst: gather longer, in fewer and fewer requests."""
        self.cap = min(self.cap * CAP_GROWTH, self.max_cap)
        self.window = self.cap / 2

    def due(self) -> float | None:
        """When the open batch is to be applied; None when no batch is open."""
        if self.first is None:
            return None
        due = min(self.last + self.window, self.first + self.cap)
        if self.first_removal is not None:  # removals never wait for a burst to end
            due = min(due, self.first_removal + self.base_cap)
        return due

    def close(self) -> None:
        """The open batch was taken for a reconcile."""
        self.first = self.first_removal = None

    def requested(self, at: float) -> None:
        """A reconcile made a change request: batches opening soon after form a burst.

        Only change requests count: events that change nothing (other containers' comings
        and goings, a container without services) must not slow registration down. A batch
        that opened while this request was being planned and sent is part of the burst too.
        """
        self._requested_at = at
        if self.first is not None and not self._in_burst:
            self._in_burst = True
            self.cap = self._previous_cap
            self._grow()

"""A process's request budget for one AWS service: a token bucket every request waits on.

Why: Route 53 allows an account about 10 requests/s, shared by every host, Lambda and tool,
so a component's budget must hold whatever its callers do: a query flood, a retry storm, a
bug. It is enforced where requests leave the process, not where they are planned: the
bucket is hooked into botocore's ``before-send`` event of every client of the service
(:meth:`~ecssd_agent.aws.clients.Clients.client`), so each HTTP request, botocore's own
retries included, takes one token first and waits for it when there is none. Callers that
have a choice of what to spend the next token on (``ecssd-dns``: a page of its zone listing
or a name someone is waiting for) ask :meth:`TokenBucket.wait_time` before they send.

A throttled answer (``Throttling``) holds the whole bucket: no request of any caller is
sent before the hold ends, 2 s after the first throttle, doubling to a minute while they
go on, and the bucket restarts empty after it. So every path backs off, not only the one
that was throttled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: Error codes by which AWS says "slow down" (Route 53 answers Throttling, HTTP 400).
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException",
                              "RequestLimitExceeded", "SlowDown"})
FIRST_HOLD = 2.0
MAX_HOLD = 60.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; thread-safe.

    Starts full. :meth:`take` blocks until a token is there, so requests in any window of
    ``t`` seconds are at most ``burst + rate * t``.
    """

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, "
                             f"{burst})")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._cond = threading.Condition()
        self._tokens = float(burst)
        self._stamp = clock()
        self._held_until = float("-inf")
        self._throttles = 0
        self.taken = 0
        self.holds = 0

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def _wait_locked(self, now: float) -> float:
        if now < self._held_until:
            return self._held_until - now + max(0.0, 1.0 - self._tokens) / self.rate
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def wait_time(self) -> float:
        """Seconds until a token can be taken (0.0: now)."""
        with self._cond:
            return self._wait_locked(self._clock())

    def try_take(self) -> bool:
        """Take a token if one is there now."""
        with self._cond:
            if self._wait_locked(self._clock()) > 0:
                return False
            self._tokens -= 1.0
            self.taken += 1
            return True

    def take(self, timeout: float | None = None) -> bool:
        """Wait for a token and take it; False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                wait = self._wait_locked(now)
                if wait <= 0:
                    self._tokens -= 1.0
                    self.taken += 1
                    return True
                if deadline is not None:
                    if now >= deadline:
                        return False
                    wait = min(wait, deadline - now)
                self._cond.wait(wait)

    def throttled(self) -> float:
        """AWS said "slow down": hold every request; returns the hold in seconds."""
        with self._cond:
            self._throttles += 1
            self.holds += 1
            hold = min(FIRST_HOLD * 2 ** (self._throttles - 1), MAX_HOLD)
            now = self._clock()
            self._held_until = max(self._held_until, now + hold)
            self._tokens = 0.0
            self._stamp = self._held_until
            self._cond.notify_all()
            return hold

    def succeeded(self) -> None:
        """A request was answered without throttling: the next throttle starts over."""
        with self._cond:
            self._throttles = 0


def throttling_code(parsed: Any) -> str | None:
    """The error code of a parsed botocore response when it says "slow down"."""
    if not isinstance(parsed, dict):
        return None
    code = parsed.get("Error", {}).get("Code")
    return code if code in THROTTLING_CODES else None


def enforce(client: Any, bucket: TokenBucket) -> None:
    """Make every HTTP request of ``client`` wait for a token of ``bucket`` (retries too)."""
    service = client.meta.service_model.service_name

    def before_send(**_: Any) -> None:
        bucket.take()  # returns None: botocore sends the request itself

    def response_received(parsed_response: Any = None, exception: Any = None,
                          **_: Any) -> None:
        if exception is not None:
            return
        if throttling_code(parsed_response):
            bucket.throttled()
        else:
            bucket.succeeded()

    events = client.meta.events
    events.register(f"before-send.{service}", before_send)
    events.register(f"response-received.{service}", response_received)

"""The one way tests wait: poll a check until it is truthy, with a hard deadline.

Fixed sleeps make tests slow when things are fast and flaky when things are slow; an
unbounded loop hangs CI. Every wait in the test suite goes through ``wait_for``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The deadline passed; an AssertionError so pytest reports it as a test failure."""


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    max_interval: float = 0.5,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Return the first truthy result of ``check()``; raise WaitTimeout after ``timeout`` s.

    Exceptions listed in ``ignore`` count as "not yet" (e.g. ConnectionError while a
    server starts); the last one is included in the timeout message. The interval backs
    off from ``interval`` to ``max_interval`` so fast things are seen fast.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = interval
    while True:
        try:
            result = check()
        except ignore as exc:
            last_error = exc
        else:
            if result:
                return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, max_interval)

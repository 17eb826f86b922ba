"""What a Lambda execution environment keeps between invocations: one lazy runtime per handler.

Each handler (the sweep, the task events, the zone writer) holds one :class:`Lazy`: its
settings, clients and caches are built on the first invocation, never at import, then kept
while the execution environment lives (its environment variables cannot change meanwhile).
Tests and tools install their own with :meth:`Lazy.set` or :meth:`Lazy.reset`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ecssd_agent import logs

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value built on first use by ``build``, then kept; thread-safe."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._default = build
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The value, built now if it is not yet (a failed build is tried again next time)."""
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value

    @property
    def current(self) -> T | None:
        """The value if it was built, without building it."""
        return self._value

    def set(self, value: T | None) -> None:
        """Install ``value`` (None: forget it, the next :meth:`get` builds again)."""
        with self._lock:
            self._value = value

    def reset(self, build: Callable[[], T] | None = None) -> None:
        """Forget the value; the next :meth:`get` builds it with ``build`` (None: the
        handler's own builder)."""
        with self._lock:
            self._value = None
            self._build = build or self._default


def in_lambda() -> bool:
    """Whether this process is a Lambda execution environment."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def region() -> str | None:
    """The region the function runs in (Lambda sets ``AWS_REGION``)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def setup_logging(level: str) -> None:
    """In Lambda, JSON log lines at ``level``; elsewhere (tests, tools) logging is left alone."""
    if in_lambda():
        logs.setup("json", level)


def remaining_seconds(context: Any) -> float | None:
    """What the invocation's context says is left of its time, or None when it cannot tell."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        return max(0.0, float(remaining()) / 1000.0)
    except (TypeError, ValueError):
        return None

"""Requests as the moto server answered them: a budget is proven where requests arrive.

The session's moto server runs in this process (tests/support/moto_server.py), so every
request it answers passes through moto's ``BaseResponse.call_action``; :func:`served` counts
them by service and operation while its block runs. Whoever sent them, so the block should
hold only the code under test.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from moto.core.responses import BaseResponse


class Served:
    """Counts of the requests answered: ``(service, operation) -> n``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, service: str, operation: str) -> None:
        with self._lock:
            self.counts[(service, operation)] += 1

    def of(self, service: str) -> dict[str, int]:
        """Operation -> requests, for one service (``route53``, ``ecs``)."""
        with self._lock:
            return {op: n for (svc, op), n in sorted(self.counts.items()) if svc == service}


@contextmanager
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """Count what the moto server answers inside the block."""
    seen = Served()
    call_action = BaseResponse.call_action

    def counted(self: BaseResponse) -> Any:
        seen.add(getattr(self, "service_name", "") or "", self._get_action())
        return call_action(self)

    with monkeypatch.context() as patch:
        patch.setattr(BaseResponse, "call_action", counted)
        yield seen

"""Discrete-event core: a clock, an event heap and generator processes, in virtual time.

A process is a generator that yields instructions (:class:`Sleep` or :class:`Call`) and is
resumed with the outcome: nothing for a sleep, the server's response for a call. Time only
moves when the heap says so, so an hour of a thousand hosts runs in seconds, and two runs
with one seed are identical: ties are broken by insertion order, never by object ids or
hash order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Call:
    """One API request: ``op`` is the Route 53 operation name, ``params`` its input."""

    op: str
    params: dict[str, Any] = field(default_factory=dict)
    caller: str = ""


Instruction = Sleep | Call
#: A process body; its return value is handed to the process's ``on_done``.
Body = Generator[Instruction, Any, Any]
#: Answers a call at the current time: (response, seconds until the caller sees it).
Server = Callable[[float, Call], tuple[Any, float]]


class Scheduler:
    """The clock and the event heap."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events = 0

    def at(self, time: float, action: Callable[..., None], *args: Any) -> None:
        if time < self.now:
            time = self.now
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, action, args))

    def after(self, delay: float, action: Callable[..., None], *args: Any) -> None:
        self.at(self.now + max(0.0, delay), action, *args)

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to ``until`` (or until ``stop()`` is true after an event)."""
        while self._heap and self._heap[0][0] <= until:
            time, _, action, args = heapq.heappop(self._heap)
            self.now = time
            self.events += 1
            action(*args)
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    def spawn(self, body: Body, server: Server,
              on_done: Callable[[Any], None] | None = None) -> None:
        """Start a process now."""
        Process(self, body, server, on_done).step(None)


class Process:
    def __init__(self, scheduler: Scheduler, body: Body, server: Server,
                 on_done: Callable[[Any], None] | None) -> None:
        self._scheduler = scheduler
        self._body = body
        self._server = server
        self._on_done = on_done

    def step(self, value: Any) -> None:
        try:
            instruction = self._body.send(value)
        except StopIteration as finished:
            if self._on_done is not None:
                self._on_done(finished.value)
            return
        if isinstance(instruction, Sleep):
            self._scheduler.after(instruction.seconds, self.step, None)
        else:
            response, latency = self._server(self._scheduler.now, instruction)
            self._scheduler.after(latency, self.step, response)

"""Running blocking code (the real zone writer Lambda handler) as one process of the
discrete-event scheduler, in virtual time.

The handler is ordinary blocking code, so it runs in a thread that hands control back and
forth with the scheduler (:class:`Bridge`): exactly one of the two runs at any moment, so a
run stays deterministic. Its AWS clients reach virtual time through a :class:`Link`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from benchmarks.fleet.engine import Body, Instruction, Sleep

#: the name prefix of every invocation's thread (its log lines are the Lambda's, not ours)
THREAD_PREFIX = "fleet-writer-"


class Cancelled(BaseException):
    """Raised inside the worker thread when its invocation is killed (function timeout) or
    the simulation ends; a BaseException so that neither the writer's nor the handler's
    ``except`` clauses run (nothing runs in a Lambda sandbox that was stopped); ``finally``
    clauses do run, and every request they try raises this again before it is sent."""


_CANCEL = object()
Step = Callable[[], Generator[Instruction, Any, Any]]


class Bridge:
    """Runs ``target`` (blocking code) in a thread as one process of the scheduler.

    The thread asks for virtual-time work with :meth:`run` (a generator of instructions:
    an API call with its retries, a sleep) and blocks; the scheduler side
    (:meth:`process`) drives that generator and hands the result back. Exactly one side runs
    at a time. After :meth:`cancel`, no further instruction is issued and the thread is
    unwound with :class:`Cancelled`.
    """

    def __init__(self, name: str, target: Callable[[], Any]) -> None:
        self.name = name
        self._target = target
        self._to_worker: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._to_scheduler: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.cancelled = False
        self.finished = False
        self.cpu_seconds = 0.0

    # the worker's side

    def run(self, step: Step) -> Any:
        if self.cancelled:
            raise Cancelled
        self._to_scheduler.put(("step", step))
        reply = self._to_worker.get()
        if reply is _CANCEL:
            raise Cancelled
        return reply

    def _main(self) -> None:
        started = time.thread_time()
        try:
            value = self._target()
        except Cancelled:
            self._to_scheduler.put(("cancelled", None))
        except Exception as exc:  # handed to the scheduler side: a function error
            self._to_scheduler.put(("raised", exc))
        else:
            self._to_scheduler.put(("done", value))
        finally:
            self.cpu_seconds = time.thread_time() - started

    # the scheduler's side

    def process(self) -> Body:
        """The scheduler process; returns ``(kind, value)``: ``done`` with the target's
        value, ``raised`` with its exception, or ``cancelled``."""
        self._thread = threading.Thread(target=self._main, name=THREAD_PREFIX + self.name,
                                        daemon=True)
        self._thread.start()
        while True:
            kind, payload = self._to_scheduler.get()
            if kind != "step":
                self._end()
                return kind, payload
            work = payload()
            value: Any = None
            while True:
                if self.cancelled:
                    work.close()
                    return self._unwind()
                try:
                    instruction = work.send(value)
                except StopIteration as stop:
                    result = stop.value
                    break
                value = yield instruction
            if self.cancelled:
                return self._unwind()
            self._to_worker.put(result)

    def cancel(self) -> None:
        """Stop at the next instruction boundary (the request in flight still lands)."""
        self.cancelled = True

    def abandon(self) -> None:
        """Unwind a thread left waiting when the simulation ends."""
        self.cancelled = True
        if self._thread is not None and not self.finished:
            self._unwind()

    def _unwind(self) -> tuple[str, Any]:
        self._to_worker.put(_CANCEL)
        while True:
            kind, _ = self._to_scheduler.get()
            if kind == "step":  # a finally clause tried another request: refused too
                self._to_worker.put(_CANCEL)
                continue
            self._end()
            return "cancelled", None

    def _end(self) -> None:
        self.finished = True
        if self._thread is not None:
            self._thread.join()


def _sleep(seconds: float) -> Generator[Instruction, Any, None]:
    yield Sleep(seconds)


class Link:
    """The invocation an execution environment is running now: its clients' requests and
    sleeps go through this invocation's :class:`Bridge`."""

    def __init__(self) -> None:
        self.bridge: Bridge | None = None

    def run(self, step: Step) -> Any:
        if self.bridge is None:
            raise RuntimeError("an AWS request outside of a writer invocation")
        return self.bridge.run(step)

    def check(self) -> None:
        """Refuse to send a request from an invocation that was killed."""
        if self.bridge is not None and self.bridge.cancelled:
            raise Cancelled

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self.run(lambda: _sleep(seconds))



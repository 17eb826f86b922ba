"""A slow-loris HTTP upstream on 127.0.0.1: it answers one header byte at a time, forever.

Every ``recv`` of a client sees data within ``interval`` seconds, so a timeout applied per
socket operation never fires and only a deadline on the whole request ends it. Used by the
probe and portal tests. Bounded: each connection's thread stops when the client goes
away or the fixture stops the server (``close``), whichever comes first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TrickleServer:
    """``with TrickleServer() as server:`` then connect to ``server.port``."""

    def __init__(self, interval: float = 0.3) -> None:
        self.interval = interval
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, name="trickle-accept",
                                          daemon=True)

    def __enter__(self) -> TrickleServer:
        self._acceptor.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (close alone does not)
        self._listener.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._trickle, args=(conn,), name="trickle",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _trickle(self, conn: socket.socket) -> None:
        """Read the request's first bytes, then send a never-ending header a byte at a time."""
        started = time.monotonic()
        answer = itertools.chain(b"HTTP/1.1 200 OK\r\nX-Slow: ", itertools.repeat(ord("a")))
        with conn:
            conn.settimeout(self.interval)
            with contextlib.suppress(OSError):
                conn.recv(4096)
            for byte in answer:
                if self._stop.wait(self.interval):
                    return
                try:
                    conn.sendall(bytes((byte,)))
                except OSError:  # the client gave up: what the tests want
                    return
                with self._lock:
                    self.bytes_sent += 1
                if time.monotonic() - started > 120:  # a hard bound, should a client never leave
                    return


def bounded(seconds: float, call: Callable[[], T]) -> T:
    """``call()``, failing the test if it takes longer than ``seconds`` (it is abandoned to
    its thread, which ends once the trickling server stops)."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise AssertionError(f"still waiting after {seconds} s") from None
    finally:
        pool.shutdown(wait=False)

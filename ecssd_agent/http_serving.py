"""HTTP servers that idle or slow clients cannot take down: the Prometheus HTTP service
discovery of ``ecssd-dns`` and the agent's status port both serve through this module.

A thread and a descriptor per connection (``ThreadingHTTPServer``) is simple and fast for a
scrape every few seconds, but unbounded: 300 connections that send nothing held 300
threads, and under a descriptor limit of 64 about 60 of them left ``ecssd-dns`` unable to
open the socket its zone refresh needs. The same protections as the DNS TCP port:

- **a connection cap per client and in total** (:class:`~ecssd_agent.connection_slots.
  ConnectionSlots`, sized to the descriptor limit), with **eviction** of the connection
  stalled the longest when a new one finds no room;
- **a per-request deadline**: a connection must start its request within ``idle`` seconds
  of connecting, and the request line and headers must arrive within ``request`` seconds
  of its first byte, however it trickles (one deadline for the whole read, not a timeout
  per ``recv``); the answer must be sent within ``response`` seconds;
- one request per connection (HTTP/1.0, the standard library's default): no idle keep-alive
  connection outlives its answer.

Standard library only, like :mod:`ecssd_agent.http_deadline` (its client-side twin).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ecssd_agent.connection_slots import ANSWERING, READING, ConnectionSlots, Slot, fd_room


@dataclass(frozen=True)
class Limits:
    """How many connections, and how long each may take."""

    total: int = 64
    per_peer: int = 16
    idle: float = 10.0  # from connecting to the request's first byte
    request: float = 5.0  # from the first byte to the end of the headers
    response: float = 30.0  # to send the answer (a large target list to a slow reader)

    def within_fds(self, servers: int = 1) -> Limits:
        """These limits with the total cut to the process's descriptor limit."""
        total = fd_room(self.total, servers)
        return Limits(total, min(self.per_peer, total), self.idle, self.request,
                      self.response)


#: The limits both servers use unless told otherwise (the DNS TCP port's figures).
DEFAULT_LIMITS = Limits()


class LimitedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that admits each connection into a slot first."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of connections waits to be admitted

    def __init__(self, address: tuple[Any, ...], handler: type[LimitedHandler],
                 limits: Limits, family: socket.AddressFamily = socket.AF_INET) -> None:
        self.address_family = family
        self.limits = limits
        self.slots = ConnectionSlots(limits.total, limits.per_peer)
        self._slot_lock = threading.Lock()
        self._slot_of: dict[Any, Slot] = {}
        super().__init__(address, handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """In the accepting thread: a slot, evicting a stalled connection if need be."""
        slot = self.slots.admit(request, str(client_address[0]))
        if slot is None:
            return False  # every slot is answering: closed at once
        with self._slot_lock:
            self._slot_of[request] = slot
        return True

    def slot(self, request: Any) -> Slot:
        with self._slot_lock:
            return self._slot_of[request]

    def shutdown_request(self, request: Any) -> None:
        with self._slot_lock:
            slot = self._slot_of.pop(request, None)
        super().shutdown_request(request)
        if slot is not None:
            self.slots.release(slot)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away, or was evicted: nothing to report


class LimitedHandler(BaseHTTPRequestHandler):
    """The request handler under :class:`LimitedHTTPServer`: the deadlines, and ``_reply``."""

    server: LimitedHTTPServer

    def setup(self) -> None:
        super().setup()
        self._slot = self.server.slot(self.request)
        self.rfile.close()  # the plain reader: reads go through the deadlines instead
        self.rfile = io.BufferedReader(_RequestReader(self))

    def parse_request(self) -> bool:
        ok = super().parse_request()  # the request line and the headers are read now
        if ok:
            self.server.slots.set_state(self._slot, ANSWERING)
            self.connection.settimeout(self.server.limits.response)  # bounds each sendall
        return ok

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _RequestReader(io.RawIOBase):
    """The raw stream under the handler's ``rfile``: ``idle`` seconds for the first byte,
    then one deadline for the rest of the request."""

    def __init__(self, handler: LimitedHandler) -> None:
        super().__init__()
        self._handler = handler
        self._deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self._handler
        limits = handler.server.limits
        sock: socket.socket = handler.connection
        if self._deadline is None:
            sock.settimeout(limits.idle)
            n = sock.recv_into(buffer)
            if n:
                self._deadline = time.monotonic() + limits.request
                handler.server.slots.set_state(handler._slot, READING)
            return n
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        sock.settimeout(left)
        return sock.recv_into(buffer)

"""An HTTP GET bounded by ONE deadline: connect, send, status line, headers and body together.

Why: :mod:`http.client`'s ``timeout`` is a socket timeout, so it bounds each ``recv`` on its
own. An upstream that sends one byte a second never lets a single ``recv`` time out, and
holds the caller for as long as it likes (measured: the probe with a 1 s timeout against a
server sending a header byte every 0.3 s was still waiting after 20 s). The health sweep's
probe and the portal's proxy both promise "at most ``timeout`` seconds per request"; this
module is how they keep it.

How: the connection's socket is wrapped so that before every ``connect``, ``sendall`` and
``recv_into`` the socket timeout is set to the time left until the deadline (and a deadline
already past raises :class:`TimeoutError` at once). No watchdog thread: the probe runs
dozens of checks at once, and a thread per request to close sockets would double them.

Standard library only: the portal's image carries this package without pip.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the server answered within the deadline."""

    status: int
    body: bytes
    content_type: str | None


def get(host: str, port: int, path: str, headers: Mapping[str, str], timeout: float,
        max_body: int | None = None) -> Reply:
    """GET ``path``; the whole exchange takes at most ``timeout`` seconds.

    ``host`` is an address (both callers have one): looking a name up is not bounded.

    Raises :class:`TimeoutError` when the deadline passes (whatever stage it was in),
    ``OSError`` / :class:`http.client.HTTPException` for other failures. ``max_body`` stops
    reading after that many bytes (a health check needs the status, not a large body).
    """
    connection = DeadlineConnection(host, port, deadline=time.monotonic() + timeout)
    try:
        connection.request("GET", path, headers=dict(headers))
        response = connection.getresponse()
        try:
            body = response.read() if max_body is None else response.read(max_body)
        finally:
            response.close()
        return Reply(response.status, body, response.getheader("Content-Type"))
    finally:
        connection.close()


class DeadlineConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` whose every socket operation shares one absolute deadline."""

    def __init__(self, host: str, port: int, *, deadline: float) -> None:
        super().__init__(host, port, timeout=_left(deadline))
        self.deadline = deadline

    def connect(self) -> None:
        self.timeout = _left(self.deadline)  # read by HTTPConnection.connect
        super().connect()
        assert self.sock is not None
        self.sock = _DeadlineSocket(self.sock, self.deadline)


def _left(deadline: float) -> float:
    """Seconds until ``deadline``; raises TimeoutError when none are left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's deadline passed")
    return left


class _DeadlineSocket:
    """The socket as ``http.client`` uses it (sendall, makefile, close), deadline first.

    Like :meth:`socket.socket.makefile`, a reader made from it keeps the descriptor open:
    ``HTTPConnection`` closes its socket as soon as a ``Connection: close`` response's
    headers are read, and the body is read after that.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._readers = 0
        self._closed = False

    def sendall(self, data: Any) -> None:
        self._sock.settimeout(_left(self._deadline))  # since 3.5: a bound on the whole call
        self._sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        self._sock.settimeout(_left(self._deadline))
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *_args: Any, **_kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only 'rb' is supported, not {mode!r}")
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and not self._readers:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if not self._readers:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:  # fileno, setsockopt, ...
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    """The raw stream under the response's buffered reader: each read checks the deadline."""

    def __init__(self, sock: _DeadlineSocket) -> None:
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def close(self) -> None:
        if not self.closed:
            self._sock.reader_closed()
        super().close()

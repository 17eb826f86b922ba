"""DNS over TCP for ``ecssd-dns``: reading one length-prefixed message within a deadline.

Why: a thread serves each connection (its slot, :mod:`ecssd_agent.connection_slots`). With a
timeout per ``recv``, a client trickling one byte every few seconds never times out: 64 such
connections from one machine stopped the server answering TCP at all (truncated answers
with them, since clients retry those over TCP). So a connection may wait idle for its next
query (RFC 7766 keeps connections open for reuse) for ``idle`` seconds, but once the first
byte of a message arrives, the 2-byte length and the whole message must arrive within
``message`` seconds. A real query is one segment; a trickle is closed after ``message``
seconds, and a connection stalled like that is the first to be evicted for a new one.

RFC 7766 lets a server close idle connections whenever it needs to; clients reconnect.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def read_message(conn: socket.socket, idle: float, message: float,
                 started: Callable[[], None]) -> bytes | None:
    """The next length-prefixed message; None when the client closed the connection.

    Waits up to ``idle`` seconds for the first byte, calls ``started()`` when it arrives,
    then gives the rest ``message`` seconds in all. Raises TimeoutError when either runs out
    (and OSError for a reset or an eviction).
    """
    conn.settimeout(idle)
    head = conn.recv(2)
    if not head:
        return None
    started()
    deadline = time.monotonic() + message
    if len(head) < 2:
        rest = _recv_before(conn, 1, deadline)
        if rest is None:
            return None
        head += rest
    return _recv_before(conn, int.from_bytes(head, "big"), deadline)


def _recv_before(conn: socket.socket, n: int, deadline: float) -> bytes | None:
    """Exactly ``n`` bytes before ``deadline`` (TimeoutError after it); None on EOF."""
    chunks = []
    while n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the message did not arrive in time")
        conn.settimeout(left)
        chunk = conn.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)

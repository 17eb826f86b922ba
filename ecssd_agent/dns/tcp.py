"""DNS over TCP for ``ecssd-dns``: connection slots that a slow client cannot hold, and
reading one length-prefixed message within a deadline.

Why: a thread serves each connection, and there are only so many slots. With a timeout per
``recv``, a client trickling one byte every few seconds never times out: 64 such
connections from one machine stopped the server answering TCP at all (truncated answers
with them, since clients retry those over TCP). Three rules keep TCP answering:

- **A deadline per message.** A connection may wait idle for its next query (RFC 7766
  keeps connections open for reuse) for ``idle`` seconds, but once the first byte of a
  message arrives, the 2-byte length and the whole message must arrive within ``message``
  seconds. A real query is one segment; a trickle is closed after ``message`` seconds.
- **A limit per peer** (source address): one client holds at most ``per_peer`` slots.
- **Eviction, not refusal**, when a new connection finds no room (its peer at its limit,
  or every slot taken): the connection that has been stalled the longest is closed to make
  room, stalled meaning idle (since its last answer, or since it connected) or reading a
  message (since its first byte). A real client is never stalled for long: its query is
  one segment, sent as soon as it connects; so the victim is the oldest idle connection,
  or a trickling one, not the client that connected a moment ago and is about to send.
  A connection that is being answered is never evicted; only when all are does a new
  connection get closed at once. When the peer is at its limit only that peer's
  connections are candidates, so one client recycles its own slots.

RFC 7766 lets a server close idle connections whenever it needs to; clients reconnect.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

IDLE = "idle"            # waiting for the first byte of the next message (or of the first)
READING = "reading"      # a message has started arriving and is not complete yet
ANSWERING = "answering"  # a complete message is being answered


@dataclass(eq=False)
class Slot:
    """One admitted connection: its peer, what it is doing and since when."""

    conn: socket.socket
    peer: str
    state: str
    since: float
    evicted: bool = field(default=False)


class TcpSlots:
    """The connections being served; :meth:`admit` makes room by evicting (see module)."""

    def __init__(self, total: int, per_peer: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= per_peer <= total:
            raise ValueError(f"need 1 <= per_peer ({per_peer}) <= total ({total})")
        self.total = total
        self.per_peer = per_peer
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: list[Slot] = []
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)

    def admit(self, conn: socket.socket, peer: str) -> Slot | None:
        """A slot for a new connection (IDLE), evicting one if needed; None: no room at all
        (every candidate is being answered), the caller closes the connection."""
        with self._lock:
            same_peer = [s for s in self._slots if s.peer == peer]
            if len(same_peer) >= self.per_peer:
                candidates: list[Slot] | None = same_peer
            elif len(self._slots) >= self.total:
                candidates = self._slots
            else:
                candidates = None
            if candidates is not None:
                victim = _victim(candidates)
                if victim is None:
                    self.refused += 1
                    return None
                self._evict(victim)
            slot = Slot(conn, peer, IDLE, self._clock())
            self._slots.append(slot)
            return slot

    def set_state(self, slot: Slot, state: str) -> None:
        with self._lock:
            slot.state = state
            slot.since = self._clock()

    def release(self, slot: Slot) -> None:
        """The connection's thread is done with it (closed, evicted or not)."""
        with self._lock:
            if not slot.evicted:
                self._slots.remove(slot)

    def _evict(self, victim: Slot) -> None:
        """Free the slot now; the connection's thread sees its socket shut and ends."""
        victim.evicted = True
        self._slots.remove(victim)
        self.evicted += 1
        with contextlib.suppress(OSError):  # already closed by its peer: as good
            victim.conn.shutdown(socket.SHUT_RDWR)


def _victim(candidates: Iterable[Slot]) -> Slot | None:
    """The connection stalled the longest (idle or reading); None if all are answering."""
    stalled = [s for s in candidates if s.state in (IDLE, READING)]
    return min(stalled, key=lambda s: s.since) if stalled else None


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

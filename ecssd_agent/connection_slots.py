"""Connection slots that idle or slow clients cannot hold: a cap per client and in total,
and eviction of the connection stalled the longest when a new one finds no room.

Shared by every server of the project that gives a thread to each connection: the DNS TCP
port of ``ecssd-dns`` (:mod:`ecssd_agent.dns.tcp`), its Prometheus HTTP service discovery and
the agent's status port (:mod:`ecssd_agent.http_serving`). Why: with a thread and a
descriptor per connection, 300 connections that send nothing hold 300 threads, and under a
descriptor limit of 64 a few dozen leave the process unable to open the socket its own
work needs (a Route 53 read). Three rules:

- **A limit per peer** (source address) and **in total**; the total also fits the process's
  descriptor limit (:func:`fd_room`), whatever the configured figure.
- **Eviction, not refusal**, when a new connection finds no room (its peer at its limit, or
  every slot taken): the connection stalled the longest is closed to make room, stalled
  meaning idle (since it connected, or since its last answer) or reading a request (since its
  first byte). A real client sends its request as soon as it connects, so the victim is the
  oldest idle connection or a trickling one, not the client that connected a moment ago.
  A connection being answered is never evicted; only when all are is a new connection closed
  at once. When the peer is at its limit only that peer's connections are candidates, so one
  client recycles its own slots.
- The deadlines that make a connection "stalled" are the servers' own (a DNS message, an
  HTTP request).
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: Descriptors a server process keeps for its own work whatever its clients do: standard
#: streams, listening sockets, AWS and Docker connections, log files, and connections
#: being closed after an eviction.
RESERVED_FDS = 24


def fd_room(wanted: int, servers: int = 1, limit: int | None = None) -> int:
    """``wanted`` connections, or fewer when the descriptor limit (``RLIMIT_NOFILE``'s soft
    limit, or ``limit``) leaves less room for each of the process's ``servers``."""
    if limit is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return wanted
        limit = int(soft)
    return max(1, min(wanted, (limit - RESERVED_FDS) // max(1, servers)))


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


class ConnectionSlots:
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

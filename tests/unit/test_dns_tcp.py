"""Connection slots (DNS TCP, HTTP) and ecssd-dns's TCP message reads, on real socket
pairs: who is evicted when a new connection finds no room, and a message that trickles in
is cut off at its deadline.

The server-level slowloris test (a real ``ecssd-dns`` under attack, real clients answered)
is in tests/integration/test_dns_server.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ecssd_agent.connection_slots import ANSWERING, IDLE, READING, ConnectionSlots, fd_room
from ecssd_agent.dns.tcp import read_message


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0  # every event strictly later than the one before
        return self.now


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def pair(made: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    """(the server's end, the client's end)"""
    ends = socket.socketpair()
    made.append(ends)
    ends[1].settimeout(2)
    return ends


def closed_by_server(client: socket.socket) -> bool:
    return client.recv(1) == b""


def test_a_peer_at_its_limit_recycles_its_own_oldest_idle_connection(pairs) -> None:
    slots = ConnectionSlots(total=10, per_peer=2, clock=Clock())
    a1, a2, a3, b1 = (pair(pairs) for _ in range(4))
    first = slots.admit(a1[0], "10.0.0.1")
    second = slots.admit(a2[0], "10.0.0.1")
    assert first is not None and second is not None
    slots.set_state(first, READING)  # a1 is slow now; a2 is the idle one
    assert slots.admit(a3[0], "10.0.0.1") is not None
    assert closed_by_server(a2[1]) and slots.evicted == 1 and len(slots) == 2
    assert slots.admit(b1[0], "10.0.0.2") is not None  # another peer: room, no eviction
    assert slots.evicted == 1 and len(slots) == 3
    slots.release(second)  # the evicted connection's thread ends: nothing more to free
    assert len(slots) == 3


def test_full_slots_evict_the_connection_stalled_longest_idle_or_reading_never_answering(
        pairs) -> None:
    slots = ConnectionSlots(total=3, per_peer=3, clock=Clock())
    ends = [pair(pairs) for _ in range(6)]
    admitted = [slots.admit(ends[i][0], f"10.0.0.{i}") for i in range(3)]
    s0, s1, s2 = admitted
    assert s0 is not None and s1 is not None and s2 is not None
    slots.set_state(s0, ANSWERING)
    slots.set_state(s1, READING)    # reading since t5: started before s2's idle time
    slots.set_state(s2, IDLE)       # idle again since t6 (answered a query)
    assert slots.admit(ends[3][0], "10.0.0.3") is not None
    assert closed_by_server(ends[1][1])  # the slow reader, not the more recent idle one
    assert slots.admit(ends[4][0], "10.0.0.4") is not None
    assert closed_by_server(ends[2][1])  # then the oldest idle, not the newer arrival
    assert slots.admit(ends[5][0], "10.0.0.5") is not None
    assert closed_by_server(ends[3][1])  # connected, never sent: idle since it connected
    assert slots.evicted == 3 and len(slots) == 3


def test_when_every_slot_is_answering_the_new_connection_is_refused(pairs) -> None:
    slots = ConnectionSlots(total=2, per_peer=2, clock=Clock())
    ends = [pair(pairs) for _ in range(3)]
    for i in range(2):
        slot = slots.admit(ends[i][0], "10.0.0.1")
        assert slot is not None
        slots.set_state(slot, ANSWERING)
    assert slots.admit(ends[2][0], "10.0.0.2") is None
    assert (slots.refused, slots.evicted, len(slots)) == (1, 0, 2)


def test_per_peer_must_fit_the_total() -> None:
    with pytest.raises(ValueError, match="per_peer"):
        ConnectionSlots(total=4, per_peer=5)


def test_the_total_fits_the_descriptor_limit() -> None:
    assert fd_room(64, servers=2, limit=1024) == 64
    assert fd_room(64, servers=2, limit=64) == 20  # (64 - 24 reserved) / 2
    assert fd_room(64, servers=1, limit=20) == 1


# --- reading one message ------------------------------------------------------------------

def test_a_message_arrives_whole_or_in_pieces(pairs) -> None:
    server, client = pair(pairs)
    started: list[bool] = []
    client.sendall(b"\x00\x05hel")
    client.sendall(b"lo\x00")
    assert read_message(server, 1.0, 1.0, lambda: started.append(True)) == b"hello"
    client.sendall(b"\x03abc")
    assert read_message(server, 1.0, 1.0, lambda: started.append(True)) == b"abc"
    assert started == [True, True]
    client.shutdown(socket.SHUT_WR)
    assert read_message(server, 1.0, 1.0, lambda: None) is None  # closed between messages


def test_an_idle_connection_waits_for_idle_but_a_started_message_only_for_message(
        pairs) -> None:
    server, _client = pair(pairs)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        read_message(server, 0.3, 5.0, lambda: None)
    assert 0.25 < time.monotonic() - started < 2.0


def test_a_trickled_message_is_cut_off_at_its_deadline(pairs) -> None:
    """One byte every 0.1 s: every recv gets data in time, the message never completes."""
    server, client = pair(pairs)
    stop = threading.Event()

    def trickle() -> None:
        client.sendall(b"\x01")  # a 256+ byte message announced, then a byte at a time
        while not stop.wait(0.1):
            try:
                client.sendall(b"x")
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    began = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            read_message(server, 5.0, 0.5, lambda: None)
        assert time.monotonic() - began < 1.5
    finally:
        stop.set()
        thread.join(5)

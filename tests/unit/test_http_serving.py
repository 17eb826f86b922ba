"""The shared HTTP server's limits on a real loopback server: a request trickling in is cut
off at its deadline, and idle connections filling every slot make room for a new client."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from ecssd_agent.http_serving import LimitedHandler, LimitedHTTPServer, Limits
from tests.support.poll import wait_for


class Hello(LimitedHandler):
    def do_GET(self) -> None:
        self._reply(200, b"hello\n", "text/plain")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[LimitedHTTPServer]:
    limits = Limits(total=4, per_peer=3, idle=5.0, request=0.5, response=5.0)
    server = LimitedHTTPServer(("127.0.0.1", 0), Hello, limits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def hello(server: LimitedHTTPServer) -> bytes:
    port = server.server_address[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as response:
        return bytes(response.read())


def test_a_request_that_trickles_in_is_cut_off_at_its_deadline(server) -> None:
    sock = socket.create_connection(server.server_address[:2], timeout=5)
    started = time.monotonic()
    closed = None
    try:
        for byte in b"GET / HTTP/1.0\r\nHost: x\r\n":  # one byte every 0.1 s: never a timeout
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                if sock.recv(1024) == b"":
                    closed = time.monotonic() - started
                    break
            except TimeoutError:
                continue
        if closed is None:
            sock.settimeout(5)
            assert sock.recv(1024) == b""
            closed = time.monotonic() - started
    finally:
        sock.close()
    assert 0.4 <= closed < 2.0, closed  # the request deadline is 0.5 s from the first byte


def test_idle_connections_make_room_for_a_new_client_and_the_cap_holds(server) -> None:
    idle = [socket.create_connection(server.server_address[:2], timeout=5) for _ in range(10)]
    try:
        wait_for(lambda: len(server.slots) <= 4 and server.slots.evicted >= 6, timeout=5,
                 what="the idle connections beyond the cap evicted")
        assert hello(server) == b"hello\n"
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # the oldest idle one was closed
        assert len(server.slots) <= 4
    finally:
        for sock in idle:
            sock.close()

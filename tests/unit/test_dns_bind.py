"""The DNS server's sockets: UDP and TCP on one port, also when the port is the kernel's pick.

A kernel-picked UDP port can be in use for TCP already (a CI run saw "cannot listen on
127.0.0.1 port 0: Address already in use"); the server must pick again, not fail.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest

from ecssd_agent.dns import server as dns_server
from ecssd_agent.dns.server import DnsServer

_REAL_SOCKET = socket.socket


class TakenOnce:
    """``socket.socket`` whose first N TCP binds fail as if another process held the port."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tcp_binds = 0
        outer = self

        class Socket(_REAL_SOCKET):
            def bind(self, address: Any) -> None:
                if self.type == socket.SOCK_STREAM:
                    outer.tcp_binds += 1
                    if outer.tcp_binds <= outer.failures:
                        raise OSError(errno.EADDRINUSE, "Address already in use")
                super().bind(address)

        self.socket = Socket

    def __call__(self, family: int, kind: int) -> socket.socket:
        return self.socket(family, kind)


def server(port: int) -> DnsServer:
    return DnsServer(None, None, "127.0.0.1", port)  # type: ignore[arg-type]  # sockets only


def test_port_zero_picks_again_when_tcp_finds_the_port_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = TakenOnce(failures=2)
    monkeypatch.setattr(dns_server.socket, "socket", fake)
    dns = server(0)
    try:
        address, port = dns.bind()
        assert fake.tcp_binds == 3 and address == "127.0.0.1" and port > 0
        assert dns.udp is not None and dns.udp.getsockname()[1] == port
        assert dns.tcp is not None and dns.tcp.getsockname()[1] == port
    finally:
        dns.close()


def test_a_given_port_in_use_fails_at_once_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = TakenOnce(failures=1)
    monkeypatch.setattr(dns_server.socket, "socket", fake)
    with pytest.raises(OSError, match="in use"):
        server(53535).bind()
    assert fake.tcp_binds == 1  # a port the operator chose is never swapped for another


def test_port_zero_gives_up_after_its_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = TakenOnce(failures=dns_server.BIND_TRIES)
    monkeypatch.setattr(dns_server.socket, "socket", fake)
    with pytest.raises(OSError, match="in use"):
        server(0).bind()
    assert fake.tcp_binds == dns_server.BIND_TRIES

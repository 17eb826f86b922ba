"""``ecssd-dns``: serve the hosted zone over UDP and TCP, answering as Route 53 would.

Threads: the main thread runs the UDP loop (one blocking ``recvfrom``/``sendto`` loop; no
per-packet thread or selector: a Python loop with pre-rendered answers measured above the
20,000 queries/s goal on one core, see benchmarks/bench_dns.py; two such loops in two
processes sharing the port with SO_REUSEPORT measured no better on a 2-core machine, where
the load generator needs the other core); one thread accepts TCP
connections and one thread serves each connection (at most :data:`MAX_TCP_CONNECTIONS`, of
them :data:`MAX_TCP_PER_PEER` from one address, fewer under a low descriptor limit; idle ones
closed after :data:`TCP_IDLE` seconds, RFC 7766; a message must arrive within
:data:`TCP_MESSAGE` seconds of its first byte; a new connection evicts the idle or slow
ones, see :mod:`ecssd_agent.connection_slots` and :mod:`.tcp`, so trickling clients cannot
take TCP down); the HTTP service discovery port has the same limits
(:mod:`ecssd_agent.http_serving`); the refresher reads the zone (:mod:`.refresh`). The threads share
only the responder, whose view is immutable and swapped by one assignment.

A packet can never stop the server: the responder drops or FORMERRs what it cannot parse,
and the loop logs and survives anything else (a bug in answering one query must not take
down name resolution for everyone).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent import logs
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.request_budget import TokenBucket
from ecssd_agent.aws.route53 import Route53Zone, ZoneError, find_zone
from ecssd_agent.config_fields import SettingsError
from ecssd_agent.connection_slots import ANSWERING, IDLE, READING, ConnectionSlots, Slot, fd_room
from ecssd_agent.dns import config
from ecssd_agent.dns.http_sd import PATH as HTTP_SD_PATH
from ecssd_agent.dns.http_sd import HttpSdServer
from ecssd_agent.dns.refresh import Refresher
from ecssd_agent.dns.responder import Responder
from ecssd_agent.dns.tcp import read_message
from ecssd_agent.dns.view import unavailable

log = logging.getLogger("ecssd_agent.dns")

MAX_TCP_CONNECTIONS = 64
MAX_TCP_PER_PEER = 16
TCP_IDLE = 10.0
#: Seconds for a whole TCP message (length and body) from its first byte, and for sending
#: an answer: a query is one segment, so this only ever ends a slow or stalled client.
TCP_MESSAGE = 3.0
UDP_BUFFER = 4 << 20
#: Port 0: how many kernel-picked UDP ports to try before giving up on a TCP twin.
BIND_TRIES = 20
_LOG_EVERY = 10.0  # seconds between repeated logs of one kind of unexpected error


class Stop(BaseException):
    """Raised by the signal handler in the main thread to leave the UDP loop.

    A BaseException so that the loop's guard against unexpected errors does not catch it.
    """


class DnsServer:
    def __init__(self, responder: Responder, refresher: Refresher, listen: str, port: int) -> None:
        self.responder = responder
        self.refresher = refresher
        self.listen = listen
        self.port = port
        self.udp: socket.socket | None = None
        self.tcp: socket.socket | None = None
        total = fd_room(MAX_TCP_CONNECTIONS, servers=2)  # this port and the HTTP one
        self._slots = ConnectionSlots(total, min(MAX_TCP_PER_PEER, total))
        self._closing = False
        self._last_error_log = 0.0
        self._last_slots_log = 0.0

    # --- sockets -------------------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Bind UDP, then TCP on the same port; returns (address, port) actually bound.

        Port 0 lets the kernel pick a free UDP port, which TCP may already use (another
        process's connection): then another UDP port is picked, a few times.
        """
        family, _, _, _, address = socket.getaddrinfo(
            self.listen, self.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]
        tries = BIND_TRIES if self.port == 0 else 1
        for attempt in range(1, tries + 1):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            with contextlib.suppress(OSError):  # a larger buffer absorbs bursts; best effort
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                udp.bind(address)
                port = udp.getsockname()[1]
                tcp.bind((address[0], port, *address[2:]))
                tcp.listen(128)
            except OSError as exc:
                udp.close()
                tcp.close()
                if exc.errno == errno.EADDRINUSE and attempt < tries:
                    continue
                raise
            self.udp, self.tcp, self.port = udp, tcp, port
            return str(address[0]), port
        raise AssertionError("unreachable: the last try returns or raises")

    def close(self) -> None:
        self._closing = True
        for sock in (self.tcp, self.udp):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    # --- UDP -----------------------------------------------------------------------------

    def serve_udp(self) -> None:
        """The hot loop; returns when the socket is closed (or raises Stop from a signal)."""
        assert self.udp is not None
        recv = self.udp.recvfrom
        send = self.udp.sendto
        respond = self.responder.respond
        defer = self.refresher.defer
        while True:
            try:
                data, peer = recv(65535)
            except OSError as exc:
                if self._closing:
                    return
                self._unexpected("receiving", exc)
                continue
            try:
                response, missed = respond(data, True)
                if response is None:
                    continue
                if missed is not None and defer(missed, self._late_udp(data, peer)):
                    continue
                send(response, peer)
            except OSError as exc:  # the peer's buffer, an unreachable address: its problem
                log.debug("UDP send to %s failed: %s", peer, exc)
            except Exception as exc:  # one query must never stop the server
                self._unexpected("answering a UDP query", exc)

    def _late_udp(self, data: bytes, peer: Any) -> Any:
        def answer() -> None:
            response, _ = self.responder.respond(data, True)
            if response is not None and self.udp is not None:
                self.udp.sendto(response, peer)

        return answer

    # --- TCP -----------------------------------------------------------------------------

    def serve_tcp(self) -> None:
        assert self.tcp is not None
        while not self._closing:
            try:
                conn, peer = self.tcp.accept()
            except OSError as exc:
                if self._closing:
                    return
                self._unexpected("accepting a TCP connection", exc)
                time.sleep(0.05)  # e.g. EMFILE: do not spin
                continue
            evicted = self._slots.evicted
            slot = self._slots.admit(conn, str(peer[0]))
            if slot is None or self._slots.evicted != evicted:
                self._slots_full(str(peer[0]))
            if slot is None:
                conn.close()  # every slot is answering: the client retries or gives up
                continue
            threading.Thread(target=self._connection, args=(slot,), name="dns-tcp",
                             daemon=True).start()

    def _slots_full(self, peer: str) -> None:
        """Say (at most every few seconds) that TCP clients are being evicted or refused."""
        now = time.monotonic()
        if now - self._last_slots_log >= _LOG_EVERY:
            self._last_slots_log = now
            log.warning("TCP slots full (%d connections, at most %d per address; latest from "
                        "%s): %d idle or slow connections evicted, %d new ones refused so far",
                        len(self._slots), self._slots.per_peer, peer, self._slots.evicted,
                        self._slots.refused)

    def _connection(self, slot: Slot) -> None:
        """Length-prefixed queries until the client closes, stays idle, is too slow sending
        one (or taking its answer), or is evicted for a new connection (RFC 7766)."""
        conn = slot.conn
        try:
            while True:
                data = read_message(conn, TCP_IDLE, TCP_MESSAGE,
                                    lambda: self._slots.set_state(slot, READING))
                if data is None:
                    return
                self._slots.set_state(slot, ANSWERING)
                response = self._answer_tcp(data)
                if response is None or len(response) > 0xFFFF:
                    return
                conn.settimeout(TCP_MESSAGE)
                conn.sendall(len(response).to_bytes(2, "big") + response)
                self._slots.set_state(slot, IDLE)
        except OSError as exc:  # includes timeouts, resets and evictions
            log.debug("TCP connection from %s ended: %r", slot.peer, exc)
        except Exception as exc:  # nor one connection
            self._unexpected("answering a TCP query", exc)
        finally:
            conn.close()
            self._slots.release(slot)

    def _answer_tcp(self, data: bytes) -> bytes | None:
        response, missed = self.responder.respond(data, False)
        if missed is not None:
            done = threading.Event()
            if self.refresher.defer(missed, done.set):
                done.wait(self.refresher.max_defer + 1.0)
                response, _ = self.responder.respond(data, False)
        return response

    def _unexpected(self, doing: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _LOG_EVERY:
            self._last_error_log = now
            log.error("unexpected error %s (the server goes on): %r", doing, exc,
                      exc_info=not isinstance(exc, OSError))


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signum)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = config.load(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"ecssd-dns: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_format, settings.log_level)
    region = settings.region or os.environ.get("AWS_REGION") or os.environ.get(
        "AWS_DEFAULT_REGION") or "us-east-1"
    budget = TokenBucket(settings.route53_rate, settings.route53_burst)
    clients = Clients(region=region, retry_mode=settings.aws_retry_mode,
                      max_attempts=settings.aws_max_attempts, zone_role=settings.zone_role(),
                      budgets={"route53": budget})
    try:
        route53 = clients.client("route53")
        zone = find_zone(route53, settings.domain, settings.hosted_zone_id or None,
                         settings.vpc_id or None)
    except ZoneError as exc:
        log.error("%s", exc)
        return 1
    except (ClientError, BotoCoreError) as exc:
        log.error("AWS error looking up the zone: %s", exc)
        return 1
    source = Route53Zone(route53, zone)
    responder = Responder(unavailable(zone.name), settings.max_udp_size)
    refresher = Refresher(zone.name, source, responder, budget, interval=settings.refresh,
                          negative_ttl=settings.negative_ttl)
    server = DnsServer(responder, refresher, settings.listen, settings.port)
    try:
        address, port = server.bind()
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", settings.listen, settings.port, exc)
        return 1
    http_sd = None
    if settings.http_port:
        try:
            http_sd = HttpSdServer(lambda: responder.view, settings.listen, settings.http_port)
        except OSError as exc:
            log.error("cannot listen on %s port %d (HTTP): %s", settings.listen,
                      settings.http_port, exc)
            server.close()
            return 1
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    refresher.start()
    threading.Thread(target=server.serve_tcp, name="dns-tcp-accept", daemon=True).start()
    if http_sd is not None:
        http_sd.start()
        log.info("Prometheus HTTP service discovery on http://%s:%d%s", *http_sd.address,
                 HTTP_SD_PATH)
    log.info("serving zone %s (%s) on %s port %d, UDP and TCP", zone.name, zone.id, address,
             port, extra={"zone": zone.name, "hosted_zone_id": zone.id, "port": port})
    try:
        server.serve_udp()
    except Stop as stop:
        log.info("signal %s: stopping", stop.args[0] if stop.args else "?")
    finally:
        refresher.stop()
        if http_sd is not None:
            http_sd.stop()
        server.close()
        log.info("stopped; zone reads: %s; AWS requests %s", refresher.stats,
                 clients.stats.by_operation())
    return 0


if __name__ == "__main__":
    sys.exit(main())

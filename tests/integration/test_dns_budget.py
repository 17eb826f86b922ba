"""``ecssd-dns``'s Route 53 budget, counted where requests arrive: a proxy in front of the moto
server (tests/support/route53_proxy.py) sees every request of the real server process.

The zone: 3,000 record sets as 150 agents write them (10 pages). The server runs with its
defaults: 1 request/s, a burst of 5. Under a flood of queries for names the zone lacks it
stays within ``burst + rate x t`` in every window, never lists the whole zone because of a
query, and still answers a record created in Route 53 (a new name, and a changed one)
within 30 s. A throttled answer holds every path.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from ecssd_agent.aws.route53 import Route53Zone
from ecssd_agent.core.model import Action, Change, RecordSet
from tests.support.dns_zone import ZONE, create_zone, fleet_records, host
from tests.support.poll import wait_for
from tests.support.process import stop
from tests.support.route53_proxy import Route53Proxy

Z = ZONE + "."
RATE, BURST = 1.0, 5  # the server's defaults, not passed: the test checks them
FRESH_WITHIN = 30.0


@dataclass
class World:
    zone: Route53Zone
    proxy: Route53Proxy
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def query(self, name: str, rdtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=self.port,
                             timeout=3)

    def answers(self, name: str, value: str) -> bool:
        try:
            response = self.query(name)
        except dns.exception.Timeout:
            return False
        return any(value in rrset.to_text() for rrset in response.answer)


def free_udp_tcp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def world(moto_server, tmp_path_factory) -> Iterator[World]:
    moto_server.reset()
    zone = create_zone(moto_server.client("route53"), moto_server.client("ec2"), 150, 19)
    proxy = Route53Proxy(moto_server.url)
    port = free_udp_tcp_port()
    log = tmp_path_factory.mktemp("dns-budget") / "ecssd-dns.log"
    env = {**moto_server.env(), "AWS_ENDPOINT_URL_ROUTE_53": proxy.url, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "ecssd_agent.dns.server", "--port",
                                    str(port), "--log-level", "debug", ZONE],
                                   env=env, stdout=sink, stderr=sink)
    world = World(zone, proxy, process, port, log)
    try:
        wait_for(lambda: world.answers(f"{host(0).label}.{Z}", host(0).ip), timeout=60,
                 what="ecssd-dns to answer from its first listing")
        yield world
    finally:
        stop(process)
        proxy.close()


class Flood(threading.Thread):
    """Queries for names the zone lacks, each name new, a few hundred a second (paced, so
    that the moto server in this process keeps its share of the CPU)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sent = 0
        self._done = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)
            while not self._done.is_set():
                self.sent += 1
                query = dns.message.make_query(f"missing-{self.sent}.{Z}", "A")
                sock.sendto(query.to_wire(), ("127.0.0.1", self.port))
                with contextlib.suppress(TimeoutError):
                    sock.recv(4096)
                self._done.wait(0.002)

    def __enter__(self) -> Flood:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self.join(5)


def most_in_window(times: list[float], window: float) -> int:
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


def test_a_flood_of_missing_names_stays_within_the_budget_and_changes_are_still_seen(world):
    changed_host = host(7)
    old = next(r for r in fleet_records(150, 19)
               if r.type == "A" and r.name == f"{changed_host.label}.{Z}")
    with Flood(world.port) as flood:
        started = time.monotonic()
        wait_for(lambda: flood.sent > 50, timeout=10, what="the flood to start")
        world.zone.apply([
            Change(Action.CREATE, RecordSet(f"brand-new.{Z}", "A", ("10.200.0.1",), 60)),
            Change(Action.UPSERT, replace(old, values=("10.200.0.7",))),
        ])
        changed_at = time.monotonic()
        seen = {}
        for name, value in ((f"brand-new.{Z}", "10.200.0.1"),
                            (f"{changed_host.label}.{Z}", "10.200.0.7")):
            wait_for(lambda n=name, v=value: world.answers(n, v),  # type: ignore[misc]
                     timeout=FRESH_WITHIN + 5, what=f"{name} answered")
            seen[name] = time.monotonic() - changed_at
        wait_for(lambda: time.monotonic() - started >= 45, timeout=60, what="45 s of flood")
        ended = time.monotonic()
    assert world.process.poll() is None
    assert flood.sent > 1000, flood.sent  # a few thousand names, each one new
    assert all(s <= FRESH_WITHIN for s in seen.values()), seen

    requests = world.proxy.requests(started, ended, operation=None)
    times = [r.at for r in requests]
    seconds = ended - started
    assert len(requests) <= BURST + RATE * seconds + 1, (len(requests), seconds)
    for window in (1.0, 5.0, 10.0):
        assert most_in_window(times, window) <= BURST + RATE * window + 0.5, window
    # No query started a listing of the whole zone: each one begins at the zone's start at
    # most once per --refresh (10 s), and every lookup lists from a name that was asked.
    listings = [r for r in requests if r.operation == "ListResourceRecordSets"]
    sweeps = [r.at for r in listings if "name" not in r.query]
    assert len(sweeps) <= seconds / 10 + 1, len(sweeps)
    lookups = [r for r in listings if r.query.get("maxitems") == "100"]
    assert all(r.query["name"].startswith(("missing-", "brand-new.", changed_host.label))
               for r in lookups)
    assert len(lookups) <= BURST // 2 + RATE * 0.5 * seconds + 1


def test_a_throttled_answer_holds_every_path(world):
    with Flood(world.port):
        with world.proxy.throttle():
            throttled_from = time.monotonic()
            wait_for(lambda: time.monotonic() - throttled_from >= 12, timeout=20,
                     what="12 s of throttling")
            throttled_to = time.monotonic()
        during = world.proxy.requests(throttled_from, throttled_to, operation=None)
        # Holds of 2, 4 and 8 s after each throttled answer (botocore's retries included):
        # at most 4 requests in 12 s, where a path ignoring the throttle sends 12 or more.
        assert len(during) <= 5, [round(r.at - throttled_from, 1) for r in during]
        gaps = [b.at - a.at for a, b in itertools.pairwise(during)]
        assert during and all(gap >= 2.0 for gap in gaps), gaps  # each throttle held all
        world.zone.apply([Change(Action.CREATE, RecordSet(f"after-throttle.{Z}", "A",
                                                          ("10.201.0.1",), 60))])
        wait_for(lambda: world.answers(f"after-throttle.{Z}", "10.201.0.1"), timeout=60,
                 what="the server to read the zone again after the throttling")
    assert world.process.poll() is None


def test_the_budget_holds_over_the_whole_run(world):
    requests = world.proxy.requests(operation=None)
    times = [r.at for r in requests]
    span = max(times) - min(times)
    assert len(requests) <= BURST + RATE * span + 1, (len(requests), span)
    assert most_in_window(times, 1.0) <= BURST + 1
    assert os.environ.get("ECSSD_ROUTE53_RATE") is None  # the defaults were measured

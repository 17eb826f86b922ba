"""``ecssd-dns`` for real: the server as a subprocess, fed by a moto server over HTTP with
records the agent wrote, asked by real clients (``dig``, dnspython, the client library and
``ecssd-resolve``) over UDP and TCP.

One server serves the whole module (started once, ~2 s). It runs with ``--refresh 30``, so
a record written after its start is only seen through a lookup of its name, which is what
the on-demand tests check.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Action, Change, Container, Host, RecordSet, Routing
from ecssd_agent.core.records import srv_value
from ecssd_agent.dns.client import Instance, NoInstances, ServiceResolver
from tests.support.env import skip_or_fail
from tests.support.poll import wait_for
from tests.support.process import stop

ZONE = "servicediscovery.internal"
Z = ZONE + "."
CALC_HOSTS = [("ip-127-0-0-2", "127.0.0.2"), ("ip-127-0-0-3", "127.0.0.3"),
              ("ip-127-0-0-4", "127.0.0.4")]
STARTUP_TIMEOUT = 30.0


class FakeDocker:
    """Stands in for DockerSource: the agent only asks it for the running containers."""

    def __init__(self, containers: list[Container]) -> None:
        self._containers = containers

    def containers(self) -> list[Container]:
        return self._containers


def container(n: int, service: str, host_port: int) -> Container:
    return Container(id=f"{n:012x}" + "ab" * 26, name=f"c{n}",
                     env={"SERVICE_8081_NAME": service}, labels={},
                     ports={"8081/tcp": (host_port,)})


def sync_host(zone: Route53Zone, label: str, ip: str, containers: list[Container],
              routing: Routing = Routing.WEIGHTED) -> None:
    agent = Agent(DirectSink(zone), FakeDocker(containers), Host(label, ip), routing=routing)  # type: ignore[arg-type]
    agent.sync()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@dataclass
class DnsWorld:
    port: int
    zone: Route53Zone
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, name: str, rdtype: str, tcp: bool = False, **kwargs: object
              ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=5)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5)

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 5
        return resolver

    def dig(self, *args: str) -> str:
        proc = subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "+time=3", "+tries=1",
                               *args], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def write_world(zone: Route53Zone) -> None:
    """Everything the tests ask about, written the way the system writes it."""
    # The agent on three hosts, each running one calc container: a weighted group of 3.
    for i, (label, ip) in enumerate(CALC_HOSTS):
        sync_host(zone, label, ip, [container(i, "_calc._tcp", 32001 + i)])
    # One host with 12 instances of "mv" and one with 5 of "few", multivalue routing.
    sync_host(zone, "ip-127-0-1-1", "127.0.1.1",
              [container(100 + i, "mv", 33000 + i) for i in range(12)], Routing.MULTIVALUE)
    sync_host(zone, "ip-127-0-1-2", "127.0.1.2",
              [container(200 + i, "few", 34000 + i) for i in range(5)], Routing.MULTIVALUE)
    # Unequal weights (1, 1, 2), and a simple record set too large for UDP: written directly.
    extra = [RecordSet(f"_w._tcp.{Z}", "SRV", (srv_value(35000 + i, f"{CALC_HOSTS[i][0]}.{Z}"),),
                       0, set_identifier=f"w{i}", weight=weight)
             for i, weight in enumerate((1, 1, 2))]
    extra.append(RecordSet(f"big.{Z}", "SRV", tuple(
        srv_value(36000 + i, f"{CALC_HOSTS[i % 3][0]}.{Z}") for i in range(60)), 0))
    zone.apply([Change(Action.CREATE, record) for record in extra])


def ecssd_dns() -> list[str]:
    script = shutil.which("ecssd-dns")
    return [script] if script else [sys.executable, "-m", "ecssd_agent.dns.server"]


@pytest.fixture(scope="module")
def world(moto_server, tmp_path_factory) -> Iterator[DnsWorld]:
    if shutil.which("dig") is None:
        skip_or_fail("dig not found (apt-get install dnsutils)")
    moto_server.reset()
    ec2 = moto_server.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    r53 = moto_server.client("route53")
    r53.create_hosted_zone(Name=ZONE, CallerReference="dns-tests",
                           HostedZoneConfig={"PrivateZone": True},
                           VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
    zone = Route53Zone(r53, find_zone(r53, ZONE))
    write_world(zone)
    port = free_port()
    log = tmp_path_factory.mktemp("dns") / "ecssd-dns.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*ecssd_dns(), "--port", str(port), "--refresh", "30", "--negative-ttl", "1",
             "--log-level", "debug", ZONE],
            env={**moto_server.env(), "PYTHONUNBUFFERED": "1"}, stdout=sink, stderr=sink)
    world = DnsWorld(port, zone, process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"ecssd-dns exited {process.returncode}:\n{world.log_text()}")
        return world.query(Z, "SOA").rcode() == dns.rcode.NOERROR

    try:
        wait_for(ready, timeout=STARTUP_TIMEOUT, what="ecssd-dns to answer",
                 ignore=(dns.exception.Timeout, ConnectionError))
        yield world
    finally:
        stop(process)


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# --- real clients, UDP and TCP ---------------------------------------------------------------

def test_dig_over_udp_and_tcp_gets_the_srv_and_the_target_address(world):
    for transport in ("+notcp", "+tcp"):
        out = world.dig(transport, "SRV", f"_calc._tcp.{ZONE}")
        assert "status: NOERROR" in out and "flags: qr aa rd" in out
        assert "ANSWER: 1," in out and "ADDITIONAL: 2" in out  # the A record and the OPT
        answer = world.dig(transport, "+short", "SRV", f"_calc._tcp.{ZONE}").split()
        port, target = int(answer[2]), answer[3]
        label = target.split(".")[0]
        assert (label, port) in {(h, 32001 + i) for i, (h, _) in enumerate(CALC_HOSTS)}
        additional = world.dig(transport, "+noall", "+additional", "SRV", f"_calc._tcp.{ZONE}")
        assert "IN A\t127.0.0." in additional
        assert world.dig(transport, "+short", "A", f"ip-127-0-0-3.{ZONE}").strip() == "127.0.0.3"


def test_dnspython_resolver_over_udp_and_tcp(world):
    resolver = world.resolver()
    for tcp in (False, True):
        answer = resolver.resolve(f"_calc._tcp.{Z}", "SRV", tcp=tcp)
        assert answer.response.flags & dns.flags.AA
        assert len(answer.rrset) == 1 and answer.rrset.ttl == 0
        assert resolver.resolve(f"ip-127-0-0-2.{Z}", "A", tcp=tcp)[0].address == "127.0.0.2"
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve(f"nothing.{Z}", "A", tcp=tcp)


def test_weighted_group_written_by_the_agent_answers_each_instance_a_third_of_the_time(world):
    n = 2000
    seen: Counter[int] = Counter()
    for _ in range(n):
        answer = world.query(f"_calc._tcp.{Z}", "SRV").answer
        assert len(answer) == 1 and len(answer[0]) == 1
        seen[answer[0][0].port] += 1
    assert set(seen) == {32001, 32002, 32003}
    for count in seen.values():
        assert within(count, n, 1 / 3), seen


def test_unequal_weights_are_answered_in_proportion(world):
    n = 2000
    seen = Counter(world.query(f"_w._tcp.{Z}", "SRV").answer[0][0].port for _ in range(n))
    for port, share in ((35000, 0.25), (35001, 0.25), (35002, 0.5)):
        assert within(seen[port], n, share), seen


def test_multivalue_never_more_than_eight_and_all_when_at_most_eight(world):
    many: Counter[int] = Counter()
    for _ in range(200):
        response = world.query(f"mv.{Z}", "SRV", use_edns=0, payload=1232)
        ports = [rd.port for rd in response.answer[0]]
        assert len(ports) == 8 == len(set(ports))
        many.update(ports)
        few = [rd.port for rd in world.query(f"few.{Z}", "SRV").answer[0]]
        assert sorted(few) == list(range(34000, 34005))
    assert set(many) == set(range(33000, 33012))


def test_nxdomain_and_nodata_with_the_soa(world):
    out = world.dig("A", f"no-such-service.{ZONE}")
    assert "status: NXDOMAIN" in out and "flags: qr aa rd" in out
    assert "AUTHORITY: 1" in out
    assert re.search(rf"^{re.escape(Z)}\s+900\s+IN\s+SOA\s", out, re.MULTILINE), out
    nodata = world.dig("SRV", f"ip-127-0-0-2.{ZONE}")
    assert "status: NOERROR" in nodata and "ANSWER: 0," in nodata and "AUTHORITY: 1" in nodata
    ent = world.query(f"_tcp.{Z}", "SRV")  # empty non-terminal of _calc._tcp
    assert ent.rcode() == dns.rcode.NOERROR and ent.authority[0].rdtype == dns.rdatatype.SOA
    assert world.query("example.com.", "A").rcode() == dns.rcode.REFUSED


def test_a_large_srv_set_is_truncated_over_udp_and_clients_fall_back_to_tcp(world):
    raw = world.query(f"big.{Z}", "SRV", use_edns=0, payload=1232)
    assert raw.flags & dns.flags.TC and not raw.answer
    out = world.dig("SRV", f"big.{ZONE}")  # dig's default: UDP, EDNS 1232
    assert "Truncated, retrying in TCP mode" in out
    assert "ANSWER: 60," in out and "(TCP)" in out
    answer = world.resolver().resolve(f"big.{Z}", "SRV")  # UDP first, TCP on TC
    assert len(answer.rrset) == 60
    assert len(world.query(f"big.{Z}", "SRV", tcp=True).answer[0]) == 60


def test_garbage_does_not_stop_the_server(world):
    rng = random.Random(3)
    good = dns.message.make_query(f"_calc._tcp.{Z}", "SRV").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for _ in range(300):
            sock.sendto(rng.randbytes(rng.randrange(0, 600)), ("127.0.0.1", world.port))
        mutated = bytearray(good)
        mutated[12] = 200  # the first label length: neither a label (> 63) nor a pointer
        sock.sendto(b"\xab\xcd" + bytes(mutated[2:]), ("127.0.0.1", world.port))
        while True:  # the answers to the garbage, if any, then ours
            reply = sock.recv(4096)
            if reply[:2] == b"\xab\xcd":
                break
        assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    with socket.create_connection(("127.0.0.1", world.port), timeout=5) as tcp:
        tcp.sendall(b"\x00\x05hello")  # a short message: the server may close, must not die
    assert world.process.poll() is None
    assert world.query(f"_calc._tcp.{Z}", "SRV").answer
    assert world.query(f"_calc._tcp.{Z}", "SRV", tcp=True).answer


# --- refresh: a lookup of a missing name, within the budget -----------------------------------

def test_a_new_service_is_answered_by_its_first_query_long_before_the_next_sweep(world):
    sync_host(world.zone, "ip-127-0-2-1", "127.0.2.1", [container(300, "fresh", 37000)])
    started = time.monotonic()
    answer = world.query(f"fresh.{Z}", "SRV").answer  # waits for the lookup of its name
    assert answer and answer[0][0].port == 37000
    assert time.monotonic() - started < 2  # the next sweep is up to 30 s away
    assert f"looked up fresh.{Z}: 1 record set(s)" in world.log_text()
    # Over TCP too: the connection's thread waits for the lookup it asked for.
    sync_host(world.zone, "ip-127-0-2-2", "127.0.2.2", [container(301, "fresh-tcp", 37001)])
    started = time.monotonic()
    answer = wait_for(lambda: world.query(f"fresh-tcp.{Z}", "SRV", tcp=True).answer,
                      timeout=10, what="the second new record, over TCP")
    assert answer[0][0].port == 37001 and time.monotonic() - started < 5


def test_a_flood_of_misses_looks_names_up_within_the_budget(world):
    def lookups() -> int:
        return world.log_text().count("looked up miss-")

    before = lookups()
    queries = 0
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        while time.monotonic() - started < 3.0:
            q = dns.message.make_query(f"miss-{queries}.{Z}", "A")
            sock.sendto(q.to_wire(), ("127.0.0.1", world.port))
            response = dns.message.from_wire(sock.recv(4096))
            assert response.rcode() == dns.rcode.NXDOMAIN
            queries += 1
    elapsed = time.monotonic() - started
    made = wait_for(lambda: lookups() - before, timeout=5, what="the log")
    assert queries > 100
    # At most the lookups' share (half of 1 request/s) and their burst (2).
    assert made <= 2 + elapsed * 0.5 + 1, (made, queries)


# --- the client library and the CLI against the real server ------------------------------------

def test_client_library_resolves_the_agents_names(world, monkeypatch):
    monkeypatch.setenv("ECSSD_DNS", f"127.0.0.1:{world.port}")
    library = ServiceResolver(ZONE)
    instances = library.resolve("_calc._tcp")
    assert len(instances) == 1
    assert instances[0] in {Instance(f"{h}.{ZONE}", ip, 32001 + i)
                            for i, (h, ip) in enumerate(CALC_HOSTS)}
    few = library.resolve("few")
    assert sorted(i.port for i in few) == list(range(34000, 34005))
    assert {i.ip for i in few} == {"127.0.1.2"}
    assert len(library.resolve("big")) == 60  # over TCP after TC
    with pytest.raises(NoInstances):
        library.resolve("no-such-service")


def test_ecssd_resolve_prints_like_dig_short(world):
    env = {**os.environ, "ECSSD_DNS": f"127.0.0.1:{world.port}", "ECSSD_DOMAIN": ZONE}
    script = shutil.which("ecssd-resolve")
    command = [script] if script else [sys.executable, "-m", "ecssd_agent.dns.resolve_cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], env=env, capture_output=True, text=True,
                              timeout=30, check=False)

    a = run("ip-127-0-0-4", "--type", "A")
    assert a.returncode == 0 and a.stdout == world.dig("+short", "A", f"ip-127-0-0-4.{ZONE}")
    few = run("few")
    assert few.returncode == 0
    assert sorted(few.stdout.splitlines()) == sorted(
        world.dig("+short", "SRV", f"few.{ZONE}").splitlines())
    instances = run("few", "--instances")
    assert len(instances.stdout.splitlines()) == 5
    assert instances.stdout.splitlines()[0].split()[1] == "127.0.1.2"
    missing = run("no-such-service")
    assert missing.returncode == 1 and not missing.stdout and "NXDOMAIN" in missing.stderr


def test_sigterm_stops_the_server_cleanly(world, moto_server, tmp_path):
    port = free_port()
    log = tmp_path / "second.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([*ecssd_dns(), "--port", str(port), ZONE],
                                   env=moto_server.env(), stdout=sink, stderr=sink)
    try:
        wait_for(lambda: dns.query.udp(dns.message.make_query(Z, "SOA"), "127.0.0.1",
                                       port=port, timeout=1).rcode() == dns.rcode.NOERROR,
                 timeout=STARTUP_TIMEOUT, what="a second server",
                 ignore=(dns.exception.Timeout, ConnectionError))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "stopping" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# --- TCP under a slowloris: trickling connections cannot take TCP (or UDP) down ---------------

class Slowloris:
    """A bounded attacker: keeps ``per_source`` connections open from each source address,
    each announcing a 256-byte message and sending one byte of it every ``interval`` s;
    a connection the server closes is replaced at the next tick. Stops after ``duration``.

    ``lifetimes`` holds, per connection, the seconds from its first byte to the moment the
    attacker saw the server close it, or (``open_at_end``) its age when the attack stopped.
    """

    def __init__(self, port: int, sources: list[str], per_source: int, interval: float,
                 duration: float) -> None:
        self.port = port
        self.sources = sources
        self.per_source = per_source
        self.interval = interval
        self.duration = duration
        self.lifetimes: list[float | None] = []
        self.open_at_end: list[float] = []
        self.bytes_sent = 0
        self._open: list[tuple[socket.socket, float, int]] = []  # socket, first byte, index
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(self.duration + 30)
        assert not self._thread.is_alive()

    def _connect(self, source: str) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2,
                                            source_address=(source, 0))
            sock.sendall(b"\x01")  # the first byte of the length: a message has begun
        except OSError:
            return  # refused or reset at once: counted as nothing, retried next tick
        sock.setblocking(False)
        self.lifetimes.append(None)
        self._open.append((sock, time.monotonic(), len(self.lifetimes) - 1))

    def _closed_by_server(self, sock: socket.socket) -> bool:
        try:
            return sock.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _run(self) -> None:
        end = time.monotonic() + self.duration
        pace = threading.Event()
        try:
            while time.monotonic() < end:
                still: list[tuple[socket.socket, float, int]] = []
                for sock, first, index in self._open:
                    if self._closed_by_server(sock):
                        self.lifetimes[index] = time.monotonic() - first
                        sock.close()
                        continue
                    try:
                        sock.send(b"x")
                        self.bytes_sent += 1
                    except OSError:
                        self.lifetimes[index] = time.monotonic() - first
                        sock.close()
                        continue
                    still.append((sock, first, index))
                self._open = still
                for source in self.sources:
                    mine = sum(1 for s, _, _ in self._open if s.getsockname()[0] == source)
                    for _ in range(self.per_source - mine):
                        self._connect(source)
                pace.wait(self.interval)
        finally:
            for sock, first, _ in self._open:
                self.open_at_end.append(time.monotonic() - first)
                sock.close()


def test_a_slowloris_does_not_stop_tcp_or_udp_answers(world):
    """100 trickling connections (more than the 64 slots; 20 from 127.0.0.1, where the real
    clients come from too, beyond its 16 per address) for 6 s: every UDP, dnspython TCP and
    dig +tcp query made meanwhile is answered within a bound, and no trickling connection
    lives longer than the message deadline (3 s) plus slack."""
    sources = ["127.0.0.1"] + [f"127.0.50.{i}" for i in range(1, 6)]
    attacker = Slowloris(world.port, sources, per_source=20, interval=1.0, duration=6.0)
    attacker.start()
    wait_for(lambda: len(attacker.lifetimes) >= 100, timeout=10, what="the attack to start")
    latencies: dict[str, list[float]] = {"udp": [], "tcp": [], "dig": []}
    try:
        while attacker.running:
            for kind in latencies:
                started = time.monotonic()
                if kind == "dig":
                    assert "ANSWER: 1," in world.dig("+tcp", "SRV", f"_calc._tcp.{ZONE}")
                else:
                    assert world.query(f"_calc._tcp.{Z}", "SRV", tcp=kind == "tcp").answer
                latencies[kind].append(time.monotonic() - started)
    finally:
        attacker.join()
    assert world.process.poll() is None
    assert all(len(v) >= 3 for v in latencies.values()), latencies
    assert max(max(v) for v in latencies.values()) < 2.5, latencies
    closed = [t for t in attacker.lifetimes if t is not None]
    assert attacker.bytes_sent > 100 and len(closed) > 50  # it did trickle, and was cut off
    # Cut off by the message deadline (3 s) at the latest, seen at the attacker's next tick.
    assert max(closed + attacker.open_at_end) < 3.0 + 2.0, sorted(closed)[-5:]


def test_idle_connections_filling_every_slot_make_room_for_a_new_client(world):
    """80 connections that send nothing, 16 from each of 5 addresses (within the limit per
    address, beyond the 64 slots): a new client is answered at once, the oldest idle
    connections having been closed for it."""
    idle: list[socket.socket] = []
    try:
        for i in range(80):
            idle.append(socket.create_connection(
                ("127.0.0.1", world.port), timeout=5, source_address=(f"127.0.51.{i % 5 + 1}", 0)))
        for _ in range(3):
            started = time.monotonic()
            assert world.query(f"_calc._tcp.{Z}", "SRV", tcp=True).answer
            assert time.monotonic() - started < 2.0
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # the oldest was evicted (idle for 10 s otherwise)
    finally:
        for sock in idle:
            sock.close()

"""The HTTP servers under 300 idle connections and a descriptor limit of 64: the real
``ecssd-dns`` (its Prometheus HTTP service discovery port) and the agent's real status server,
each in a subprocess that lowers ``RLIMIT_NOFILE`` to 64 before it starts.

What must hold meanwhile: new clients are answered, the process's thread count stays
bounded (one thread per admitted connection, not per connection made), and the process
can still open the sockets its own work needs: ``ecssd-dns`` keeps reading the zone (a
record created in moto is answered), the status server's process connects out.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Action, Change, RecordSet
from tests.support.poll import wait_for
from tests.support.process import stop

ZONE = "servicediscovery.internal"
Z = ZONE + "."
IDLE_CONNECTIONS = 300
FD_LIMIT = 64
MAX_THREADS = 64  # well under one per idle connection
LIMITED = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n})); "


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now (the DNS port is both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@contextmanager
def idle_connections(port: int, n: int = IDLE_CONNECTIONS) -> Iterator[list[socket.socket]]:
    """``n`` connections that never send a byte (some are closed by the server: evicted).

    A server that stops accepting (out of descriptors, its backlog full) makes connecting
    time out: the attempts stop there, and the test goes on to what a new client gets.
    """
    opened: list[socket.socket] = []
    try:
        for _ in range(n):
            try:
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except TimeoutError:
                break
        yield opened
    finally:
        for sock in opened:
            sock.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    assert time.monotonic() - started < 3.0, "a new client waited"
    return status, body


def test_ecssd_dns_answers_http_and_dns_and_reads_the_zone_under_300_idle_http_connections(
        aws, tmp_path) -> None:
    ec2, r53 = aws.client("ec2"), aws.client("route53")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    r53.create_hosted_zone(Name=ZONE, CallerReference="http-limits",
                           HostedZoneConfig={"PrivateZone": True},
                           VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
    zone = Route53Zone(r53, find_zone(r53, ZONE))
    zone.apply([Change(Action.CREATE, RecordSet(f"_calc._tcp.{Z}", "SRV",
                                                ("1 1 8080 ip-127-0-0-2." + Z,), 60)),
                Change(Action.CREATE, RecordSet(f"ip-127-0-0-2.{Z}", "A", ("127.0.0.2",), 60))])
    dns_port, http_port = free_udp_tcp_port(), free_port(socket.SOCK_STREAM)
    log = tmp_path / "ecssd-dns.log"
    code = LIMITED.format(n=FD_LIMIT) + (
        "import sys; from ecssd_agent.dns.server import main; sys.exit(main())")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "--port", str(dns_port), "--http-port",
             str(http_port), "--refresh", "2", "--log-level", "debug", ZONE],
            env={**aws.env(), "PYTHONUNBUFFERED": "1"}, stdout=sink, stderr=sink)

    def query(name: str, rdtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=dns_port,
                             timeout=3)

    try:
        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"ecssd-dns exited {process.returncode}:\n"
                                     f"{log.read_text(errors='replace')}")
            return get(http_port, "/prometheus/targets")[0] == 200

        wait_for(serving, timeout=30, what="ecssd-dns to serve", ignore=(OSError,))
        with idle_connections(http_port):
            for _ in range(3):
                status, body = get(http_port, "/prometheus/targets")
                assert status == 200 and json.loads(body)[0]["targets"] == ["127.0.0.2:8080"]
            assert query(f"_calc._tcp.{Z}", "SRV").answer
            assert threads(process.pid) <= MAX_THREADS
            assert fds(process.pid) <= FD_LIMIT
            # The zone is still read: a new name (its lookup) and a new instance of a
            # known one (the next sweep), both needing a new socket to Route 53.
            zone.apply([Change(Action.CREATE, RecordSet(f"new.{Z}", "A", ("127.0.0.9",), 60)),
                        Change(Action.UPSERT, RecordSet(f"_calc._tcp.{Z}", "SRV", (
                            "1 1 8080 ip-127-0-0-2." + Z, "1 1 8081 ip-127-0-0-2." + Z), 60))])
            wait_for(lambda: query(f"new.{Z}").rcode() == dns.rcode.NOERROR
                     and len(query(f"_calc._tcp.{Z}", "SRV").answer[0]) == 2, timeout=30,
                     what="the new records answered", ignore=(dns.exception.Timeout,))
            assert len(json.loads(get(http_port, "/prometheus/targets")[1])) == 2
        assert process.poll() is None, log.read_text()
    finally:
        stop(process)


STATUS_SERVER = textwrap.dedent("""
    import socket, sys
    from ecssd_agent.agent.status import Status, StatusServer
    server = StatusServer(Status(), "127.0.0.1", 0)
    server.start()
    print(server.port, flush=True)
    for line in sys.stdin:  # "probe PORT": can this process still open a socket?
        try:
            socket.create_connection(("127.0.0.1", int(line.split()[1])), timeout=3).close()
            print("ok", flush=True)
        except OSError as exc:
            print(f"error {exc!r}", flush=True)
""")


def test_the_agents_status_server_answers_and_its_process_connects_out_under_300_idle(
        tmp_path) -> None:
    script = tmp_path / "status.py"
    script.write_text(LIMITED.format(n=FD_LIMIT) + "\n" + STATUS_SERVER)
    process = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdin is not None and process.stdout is not None
    with socket.socket() as target:
        target.bind(("127.0.0.1", 0))
        target.listen(8)
        try:
            port = int(process.stdout.readline())
            with idle_connections(port):
                assert get(port, "/readyz")[0] == 503  # no reconcile yet: answered, honestly
                assert get(port, "/healthz")[0] in (200, 503)  # liveness: answered at all
                status, body = get(port, "/metrics")
                assert status == 200 and b"ecssd_records_owned" in body
                process.stdin.write(f"probe {target.getsockname()[1]}\n")
                process.stdin.flush()
                assert process.stdout.readline().strip() == "ok"
                assert threads(process.pid) <= MAX_THREADS
                assert fds(process.pid) <= FD_LIMIT
        finally:
            stop(process)

"""Benchmark: queries per second and answer latency of ``ecssd-dns`` under ``dnsperf``.

The world: a moto server (in process, over HTTP) holding a zone written the way the system
writes it: three agents' weighted ``_calc._tcp`` SRV group with their hosts' A records, a
host with 12 multivalue instances of ``mv`` (8 answered per query, chosen at random), and
the real ``ecssd-dns`` console script as a subprocess reading it. The query mix, in the
file dnsperf cycles through: 30% weighted SRV, 20% multivalue SRV, 30% A, 20% names that
do not exist (NXDOMAIN; each one may ask for a lookup of its name, which the server's
Route 53 budget turns into at most half a request per second).

Measured, over loopback:
- throughput: ``dnsperf -c 4 -q 200`` (4 client sockets, 200 queries outstanding) for
  ``DURATION`` seconds; the figure is dnsperf's "Queries per second", with the lost count;
- latency p50/p99: dnsperf 2.10 prints only the mean, so a second run with ``-v`` (one
  line per query with its latency) is parsed: once at a fixed offered load of
  ``LATENCY_QPS`` (what a client sees when the server is not the bottleneck), once at
  saturation (where latency is mostly the 200 outstanding queries waiting in line);
- the naive baseline: a dnspython loop that parses every query, builds a response and
  renders it (``dns.message.from_wire``/``make_response``/``to_wire``), under the same
  dnsperf run and the same mix, on this machine;
- the Route 53 requests the server made during all of it (from its exit log line);
- its Route 53 budget and freshness at 3,000 and 21,000 record sets (zones written as 150 x 19
  and 1,000 x 20 agents write them, tests/support/dns_zone.py): the server with its defaults
  (1 request/s, burst 5) behind a proxy that counts every request it sends (the tests'
  tests/support/route53_proxy.py), under a flood of queries for names the zone lacks; host
  A records are changed in Route 53 one after another and each is polled until answered:
  freshness is the time from the change to the first correct answer (p50 and max), and
  requests/s is what the proxy counted over the measurement.

How the goal is reached (see ecssd_agent/dns/responder.py): answers are rendered once per
zone change, per (name, type, routing choice); a query costs a header check, one dict
lookup on bytes sliced at a fixed offset from the packet's end, the weighted pick (a
bisect) and a join of the query's ID and question with the pre-rendered body, in one
blocking UDP loop. The machine is shared (2 cores; dnsperf takes one of them): the load
average is recorded with the figures.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.rows import result_row  # noqa: E402

AREA = "dns"
ZONE = "servicediscovery.internal"
GOAL_QPS = 20_000
DURATION, QUICK_DURATION = 10, 3
LATENCY_QPS = 5_000
MIX = [  # (weight in the file, name, type)
    (3, f"_calc._tcp.{ZONE}", "SRV"),
    (2, f"mv.{ZONE}", "SRV"),
    (3, f"ip-127-0-0-2.{ZONE}", "A"),
    (2, "missing-{n}." + ZONE, "A"),
]


@contextlib.contextmanager
def _environment() -> Iterator[None]:
    """Fake-AWS environment for this run (rule zero), restored afterwards."""
    from tests.support.env import apply_safe_env

    saved = dict(os.environ)
    try:
        apply_safe_env()
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _free_port() -> int:
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


def _write_zone(endpoint: str) -> list[Any]:
    """The zone of the module docstring; returns the record sets (for the baseline)."""
    import boto3

    from ecssd_agent.aws.route53 import Route53Zone, find_zone
    from ecssd_agent.core.model import Action, Change, Host, Routing, ServiceInstance
    from ecssd_agent.core.records import host_records

    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    r53 = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
    r53.create_hosted_zone(Name=ZONE, CallerReference=f"bench-{time.time()}",
                           HostedZoneConfig={"PrivateZone": True},
                           VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
    zone = Route53Zone(r53, find_zone(r53, ZONE))
    records = []
    for h in range(3):
        instance = ServiceInstance("_calc._tcp", "tcp", 8081, 32001 + h, f"{h:012x}")
        found, _ = host_records(Host(f"ip-127-0-0-{h + 2}", f"127.0.0.{h + 2}"), [instance],
                                zone.zone.name, Routing.WEIGHTED, 0)
        records.extend(found)
    many = [ServiceInstance("mv", "tcp", 8081 + i, 33000 + i, f"{100 + i:012x}")
            for i in range(12)]
    found, _ = host_records(Host("ip-127-0-1-1", "127.0.1.1"), many, zone.zone.name,
                            Routing.MULTIVALUE, 0)
    records.extend(found)
    zone.apply([Change(Action.CREATE, r) for r in records])
    return records


def _query_file(directory: Path) -> Path:
    lines: list[str] = []
    for repeat in range(50):
        for weight, name, rtype in MIX:
            lines.extend(f"{name.format(n=repeat * 10 + i)} {rtype}" for i in range(weight))
    path = directory / "queries.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    deadline = time.monotonic() + timeout
    query = dns.message.make_query(f"_calc._tcp.{ZONE}.", "SRV")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                return
        except (dns.exception.Timeout, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not answer in time")


def _dnsperf(port: int, queries: Path, seconds: int, *extra: str) -> str:
    proc = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
         "-c", "4", "-q", "200", *extra],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed: {proc.stderr.strip() or proc.stdout[-500:]}")
    return proc.stdout


def _figure(output: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}:\s+([0-9.]+)", output)
    if match is None:
        raise RuntimeError(f"no {label!r} in dnsperf's output:\n{output[-800:]}")
    return float(match.group(1))


def _latencies(output: str, rcode: str | None = None) -> list[float]:
    """dnsperf -v: ``> NOERROR name type 0.000123`` per query -> latencies in seconds."""
    out = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0] == ">" and rcode in (None, fields[1]):
            out.append(float(fields[4]))
    return out


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


NAIVE_SERVER = textwrap.dedent("""
    import json, random, socket, sys
    import dns.message, dns.rcode, dns.rrset
    port, path = int(sys.argv[1]), sys.argv[2]
    groups = {}
    for name, rtype, ttl, values in json.load(open(path)):
        groups.setdefault((name, rtype), []).append((ttl, values))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            continue
        response = dns.message.make_response(query)
        question = query.question[0]
        key = (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype))
        sets = groups.get(key)
        if sets:
            chosen = random.sample(sets, min(8, len(sets))) if key[0].startswith("mv.") else [
                random.choice(sets)]
            for ttl, values in chosen:
                response.answer.append(dns.rrset.from_text_list(
                    question.name, ttl, "IN", question.rdtype, values))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), peer)
""")


def _naive_baseline(records: list[Any], queries: Path, seconds: int, directory: Path) -> float:
    import json

    table = directory / "records.json"
    table.write_text(json.dumps([[r.name, r.type, r.ttl, list(r.values)] for r in records]))
    script = directory / "naive.py"
    script.write_text(NAIVE_SERVER)
    port = _free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port), str(table)])
    try:
        import dns.message
        import dns.query

        deadline = time.monotonic() + 20
        while True:
            try:
                dns.query.udp(dns.message.make_query(f"mv.{ZONE}.", "SRV"), "127.0.0.1",
                              port=port, timeout=0.5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        return _figure(_dnsperf(port, queries, seconds), "Queries per second")
    finally:
        process.terminate()
        process.wait(timeout=10)


class _Flood:
    """Queries for names the zone lacks, each one new, about ``rate`` a second."""

    def __init__(self, port: int, rate: float = 200.0) -> None:
        import threading

        self.port = port
        self.rate = rate
        self.sent = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import dns.message

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            next_at = time.monotonic()
            while not self._done.is_set():
                self.sent += 1
                query = dns.message.make_query(f"missing-{self.sent}.{ZONE}.", "A")
                sock.sendto(query.to_wire(), ("127.0.0.1", self.port))
                with contextlib.suppress(TimeoutError):
                    sock.recv(4096)
                next_at += 1.0 / self.rate
                self._done.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> _Flood:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(5)


def _reset(endpoint: str) -> None:
    """Empty moto's backends: every in-process moto server shares them, and each run here
    creates its own zone of the same name."""
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()


def _answers(port: int, name: str, value: str) -> bool:
    import dns.exception
    import dns.message
    import dns.query

    try:
        response = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                                 timeout=1)
    except dns.exception.Timeout:
        return False
    return any(value in rrset.to_text() for rrset in response.answer)


def _budget(hosts: int, per_host: int, changes: int, spacing: float) -> dict[str, Any]:
    """The server at ``hosts x per_host`` record sets under a flood; see the docstring."""
    import dataclasses
    import logging

    from moto.server import ThreadedMotoServer

    from ecssd_agent.core.model import Action, Change
    from tests.support import strict_route53
    from tests.support.dns_zone import create_zone, fleet_records, host
    from tests.support.route53_proxy import Route53Proxy

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    strict_route53.install()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host_, moto_port = moto.get_host_and_port()
    endpoint = f"http://{host_}:{moto_port}"
    _reset(endpoint)
    import boto3

    r53 = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
    zone = create_zone(r53, ec2, hosts, per_host, strict_route53.set_zone_record_limit)
    records = {r.name: r for r in fleet_records(hosts, per_host) if r.type == "A"}
    proxy = Route53Proxy(endpoint)
    port = _free_port()
    script = shutil.which("ecssd-dns")
    command = [script] if script else [sys.executable, "-m", "ecssd_agent.dns.server"]
    server = subprocess.Popen([*command, "--port", str(port), ZONE],
                              env={**os.environ, "AWS_ENDPOINT_URL": endpoint,
                                   "AWS_ENDPOINT_URL_ROUTE_53": proxy.url},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        probe = host(0)
        while not _answers(port, f"{probe.label}.{ZONE}.", probe.ip):
            if server.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError("ecssd-dns did not answer from its first listing")
            time.sleep(0.2)
        ready = time.monotonic() - started
        freshness: list[float] = []
        with _Flood(port) as flood:
            measured_from = time.monotonic()
            outstanding: dict[str, tuple[str, float]] = {}
            next_change, made = measured_from, 0
            while made < changes or outstanding:
                now = time.monotonic()
                if made < changes and now >= next_change:
                    target = host(1 + made * (hosts - 1) // changes)
                    name = f"{target.label}.{ZONE}."
                    value = f"10.250.{made}.1"
                    zone.apply([Change(Action.UPSERT, dataclasses.replace(
                        records[name], values=(value,), listed=None))])
                    outstanding[name] = (value, time.monotonic())
                    made += 1
                    next_change = now + spacing
                for name, (value, since) in list(outstanding.items()):
                    if _answers(port, name, value):
                        freshness.append(time.monotonic() - since)
                        del outstanding[name]
                    elif time.monotonic() - since > 600:
                        raise RuntimeError(f"{name} was never answered")
                time.sleep(0.2)
            measured_to = time.monotonic()
            sent = flood.sent
        requests = proxy.requests(measured_from, measured_to, operation=None)
        times = [r.at for r in requests]
        peak = max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
        proxy.close()
        moto.stop()
    seconds = measured_to - measured_from
    return {"record_sets": hosts * (per_host + 1), "ready": ready, "freshness": freshness,
            "requests": len(requests), "seconds": seconds, "peak": peak,
            "flood_qps": sent / seconds, "lookups": sum(1 for r in requests
                                                        if r.query.get("maxitems") == "100")}


def budget_rows(quick: bool = False) -> list[dict[str, Any]]:
    """Freshness and requests/s at 3,000 and 21,000 record sets (see the docstring)."""
    from tests.support.route53_quotas import RECORD_SETS_PER_ZONE

    rows = []
    sizes = [(150, 19, 4 if quick else 8, 4.0)]
    if not quick:
        sizes.append((1000, 20, 4, 15.0))
    for hosts, per_host, changes, spacing in sizes:
        m = _budget(hosts, per_host, changes, spacing)
        size = f"{m['record_sets']:,} record sets"
        fresh = sorted(m["freshness"])
        rate = m["requests"] / m["seconds"]
        how = (f"{len(fresh)} host A records changed {spacing:.0f} s apart under a flood of "
               f"{m['flood_qps']:.0f} queries/s for missing names; first listing done "
               f"{m['ready']:.0f} s after start")
        if m["record_sets"] > RECORD_SETS_PER_ZONE:
            how += (f"; the zone's record-set quota raised to {2 * m['record_sets']:,} (Route "
                    f"53's default is {RECORD_SETS_PER_ZONE:,})")
        goal_fresh = "<= 30 s" if m["record_sets"] <= 3000 else "- (30 s is the goal at 3,000)"
        rows += [
            _row(f"ecssd-dns freshness p50 at {size}, flooded",
                 round(statistics.median(fresh), 1), "s", goal_fresh, how),
            _row(f"ecssd-dns freshness max at {size}, flooded", round(fresh[-1], 1), "s",
                 goal_fresh, how, held=fresh[-1] <= 30.0 if m["record_sets"] <= 3000 else None),
            _row(f"ecssd-dns Route 53 requests/s at {size}, flooded", round(rate, 2), "req/s",
                 "<= 1 (burst 5)",
                 f"{m['requests']} requests in {m['seconds']:.0f} s counted at a proxy in "
                 f"front of moto, {m['lookups']} of them name lookups; at most {m['peak']} in "
                 "any 1 s", held=rate <= 1.0 + 5 / m["seconds"] and m["peak"] <= 6),
        ]
    return rows


def _row(metric: str, value: float | int | str, unit: str, goal: str, note: str,
         held: bool | None = None) -> dict[str, Any]:
    """A result row; ``held`` (did the value meet its goal) makes it a headline figure."""
    return result_row(AREA, metric, value, unit, goal=goal, note=note, held=held)


def run(quick: bool = False) -> list[dict[str, Any]]:
    with _environment():
        budget = budget_rows(quick)
    return [*_throughput_rows(quick), *budget]


def _throughput_rows(quick: bool) -> list[dict[str, Any]]:
    if shutil.which("dnsperf") is None:
        return [_row("queries per second", "not measured", "qps", f">= {GOAL_QPS}",
                     "dnsperf is not installed (apt-get install dnsperf)", held=False)]
    seconds = QUICK_DURATION if quick else DURATION
    with _environment(), tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        import logging

        from moto.server import ThreadedMotoServer

        from tests.support import strict_route53

        strict_route53.install()  # the test world's Route 53 (docs/test-world.md)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
        directory = Path(tmp)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        try:
            host, moto_port = moto.get_host_and_port()
            endpoint = f"http://{host}:{moto_port}"
            _reset(endpoint)
            records = _write_zone(endpoint)
            queries = _query_file(directory)
            port = _free_port()
            script = shutil.which("ecssd-dns")
            command = [script] if script else [sys.executable, "-m", "ecssd_agent.dns.server"]
            log = directory / "server.log"
            with log.open("wb") as sink:
                server = subprocess.Popen([*command, "--port", str(port), ZONE],
                                          env={**os.environ, "AWS_ENDPOINT_URL": endpoint},
                                          stdout=sink, stderr=sink)
            try:
                _wait_ready(port, server)
                load_before = os.getloadavg()[0]
                throughput = _dnsperf(port, queries, seconds)
                verbose = _dnsperf(port, queries, max(2, seconds // 2), "-v", "-Q",
                                   str(LATENCY_QPS))
                fixed, positive = _latencies(verbose), _latencies(verbose, "NOERROR")
                saturated = _latencies(_dnsperf(port, queries, max(2, seconds // 2), "-v"))
            finally:
                server.send_signal(signal.SIGINT)
                server.wait(timeout=15)
            server_log = log.read_text(errors="replace")
            baseline = _naive_baseline(records, queries, seconds, directory)
        finally:
            moto.stop()

    qps = _figure(throughput, "Queries per second")
    lost = _figure(throughput, "Queries lost")
    listings = re.search(r"'ListResourceRecordSets': (\d+)", server_log)
    machine = (f"{os.cpu_count()} cores shared with other work, load average {load_before:.1f} "
               f"before the run")
    how = ("answers pre-rendered per zone change; per query: a header check, one dict lookup, "
           "the routing pick and a bytes join, in one blocking UDP loop")
    return [
        _row("queries per second (dnsperf, mixed SRV/A/weighted/multivalue/NXDOMAIN)",
             round(qps), "qps", f">= {GOAL_QPS}",
             f"dnsperf -c 4 -q 200 -l {seconds}, {int(lost)} lost; {how}; {machine}",
             held=qps >= GOAL_QPS),
        _row("latency p50 at a fixed load", round(statistics.median(fixed) * 1e6), "us",
             "low", f"dnsperf -v -Q {LATENCY_QPS} ({len(fixed)} answers)"),
        _row("latency p99 at a fixed load", round(_percentile(fixed, 99) * 1e6), "us",
             "low", f"dnsperf -v -Q {LATENCY_QPS} ({len(fixed)} answers); an NXDOMAIN whose "
                    "name is being looked up waits for that lookup (by design)"),
        _row("latency p99 at a fixed load, answers only (NOERROR)",
             round(_percentile(positive, 99) * 1e6), "us", "low",
             f"dnsperf -v -Q {LATENCY_QPS} ({len(positive)} NOERROR answers)"),
        _row("latency p50 at saturation", round(statistics.median(saturated) * 1e6), "us",
             "-", f"dnsperf -v, 200 queries outstanding ({len(saturated)} answers): "
                  "mostly queueing"),
        _row("latency p99 at saturation", round(_percentile(saturated, 99) * 1e6), "us",
             "-", f"dnsperf -v, 200 queries outstanding ({len(saturated)} answers)"),
        _row("naive dnspython loop, same mix (baseline)", round(baseline), "qps",
             "(the issue measured ~7,000)", "from_wire, make_response, to_wire per query; "
                                            f"dnsperf -c 4 -q 200 -l {seconds}"),
        _row("Route 53 listings during the runs", int(listings.group(1)) if listings else "?",
             "requests", "<= 1 per second (the server's budget)",
             "ListResourceRecordSets made by the server (pages and name lookups), from its "
             "exit log"),
    ]


def main() -> None:
    quick = "--quick" in sys.argv
    for row in run(quick=quick):
        print(f"{row['metric']}: {row['value']} {row['unit']} (goal {row['goal']}) - {row['note']}")


if __name__ == "__main__":
    main()

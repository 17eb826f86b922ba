"""Reconcile cost: one host's ``--sync`` of 200 containers beside the reference's strategy
(issue 3), and one host's sync against zones of 1k, 5k and 10k record sets (issue 10).

Everything here is measured against a moto server over HTTP on 127.0.0.1
(ThreadedMotoServer; AWS_ENDPOINT_URL points the agent at it) and, for the 200 containers, a
real Docker engine: ECSSD_TEST_DOCKER_HOST if set, else a private dockerd started through
tests/support/dockerd.py. Without any engine the 200-container figure falls back to the
Agent class with 200 fake containers, and the row says so.

- 200 containers: the real ``ecssd-agent --sync`` (a subprocess) registers them; its own
  request counts (botocore event hooks, printed as JSON) and wall time are reported beside
  the reference's strategy (awslabs service-discovery-ecs-dns), re-implemented faithfully
  against the same server: a CREATE for the host's A record at start, then one
  ChangeResourceRecordSets CREATE per container for its SRV record, counted by the same hooks.
- zone size: a zone filled (Route53Zone.apply, big batches) with other hosts' records, then
  this host registers its 20 containers and resyncs, with the Agent as built (one full
  listing per sync) and with the name-scoped read of ecssd_agent/sync/zone_reads.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests

from benchmarks.rows import result_row
from ecssd_agent.agent.docker_source import DockerSource
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Action, Change, Container, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.records import host_records
from ecssd_agent.sync.reconcile import Outcome, converge
from ecssd_agent.sync.zone_reads import owned_records_by_names
from tests.support import strict_route53

AREA = "reconcile"
DOMAIN = "servicediscovery.internal"
REGION = "us-east-1"
IMAGE = "ecssd-busybox:latest"
CONTAINERS = 200
#: Route 53 allows at most 100 weighted record sets per name and type: 4 services of 50.
SERVICES = tuple(f"_bench{n}._tcp" for n in range(4))
ZONE_SIZES = (1000, 5000, 10000)
REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


def row(metric: str, value: Any, unit: str, goal: str, note: str,
        held: bool | None = None) -> dict[str, Any]:
    """A result row; ``held`` (did the value meet its goal) makes it a headline figure."""
    return result_row(AREA, metric, value, unit, goal=goal, note=note, held=held)


# --- moto ---------------------------------------------------------------------------------

@dataclass
class Moto:
    url: str
    vpc: str

    def clients(self) -> Clients:
        return Clients(region=REGION, session=boto3.session.Session(region_name=REGION))

    def new_zone(self, name: str) -> str:
        client = boto3.client("route53", region_name=REGION, endpoint_url=self.url)
        return str(client.create_hosted_zone(
            Name=name, CallerReference=uuid.uuid4().hex, HostedZoneConfig={"PrivateZone": True},
            VPC={"VPCRegion": "us-east-1", "VPCId": self.vpc})["HostedZone"]["Id"])


@contextmanager
def moto_server() -> Iterator[Moto]:
    """A ThreadedMotoServer on 127.0.0.1 with the test world's strict Route 53."""
    from moto.server import ThreadedMotoServer

    strict_route53.install()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        # moto's backends are per process: start from nothing, whatever ran before.
        requests.post(f"{url}/moto-api/reset", timeout=30).raise_for_status()
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
        yield Moto(url, ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"])
    finally:
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous
        server.stop()


# --- Docker -------------------------------------------------------------------------------

@dataclass
class Engine:
    base_url: str
    how: str
    close: Callable[[], None]


def docker_engine() -> tuple[Engine | None, str]:
    """ECSSD_TEST_DOCKER_HOST, else a private dockerd (tests/support); (None, why) if neither."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from tests.support.dockerd import (
            EngineUnavailable,
            connect_external_engine,
            start_private_engine,
        )
        from tests.support.images import ensure_busybox_image
    except ImportError as exc:
        return None, f"tests/support not importable ({exc})"
    external = os.environ.get("ECSSD_TEST_DOCKER_HOST")
    try:
        engine = connect_external_engine(external) if external else start_private_engine()
        ensure_busybox_image(engine)
    except (EngineUnavailable, OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return None, f"no Docker engine ({exc})"
    how = f"ECSSD_TEST_DOCKER_HOST={external}" if external else "a private dockerd"
    return Engine(engine.base_url, how, engine.close), ""


def start_containers(api: Any, count: int, label: str) -> list[str]:
    """``count`` busybox containers sleeping, each with a SERVICE name and a published port."""

    def one(n: int) -> str:
        created = api.create_container(
            IMAGE, ["sleep", "3600"], labels={"ecssd.bench": label}, ports=[8081],
            environment={"SERVICE_8081_NAME": SERVICES[n % len(SERVICES)]},
            host_config=api.create_host_config(port_bindings={8081: ("127.0.0.1",)}))
        api.start(created["Id"])  # create never pulls: a missing image fails fast
        return str(created["Id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def remove_containers(api: Any, label: str) -> None:
    ids = [c["Id"] for c in api.containers(all=True, filters={"label": f"ecssd.bench={label}"})]

    def remove(cid: str) -> None:
        with suppress(Exception):  # best effort: a leftover is removed by label next run
            api.remove_container(cid, force=True, v=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(remove, ids))


def host_port(api: Any, cid: str) -> str:
    ports = api.inspect_container(cid)["NetworkSettings"]["Ports"]["8081/tcp"]
    return str(ports[0]["HostPort"])


# --- the agent's --sync as a subprocess ---------------------------------------------------

def agent_sync(moto: Moto, zone_id: str, docker_url: str, hostname: str) -> tuple[dict[str, Any], float]:
    """Run ``python -m ecssd_agent --sync``; (its JSON summary line, wall seconds)."""
    env = {**os.environ, "AWS_ENDPOINT_URL": moto.url}
    cmd = [sys.executable, "-m", "ecssd_agent", "--sync", "--hostname", hostname, "--host-ip",
           "127.0.0.1", "--docker-host", docker_url, "--hosted-zone-id", zone_id,
           "--log-format", "json", DOMAIN]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    seconds = time.perf_counter() - started
    summary = None
    for line in proc.stderr.splitlines():
        with suppress(ValueError):
            entry = json.loads(line)
            if entry.get("mode") == "sync":
                summary = entry
    if proc.returncode != 0 or summary is None:
        raise RuntimeError(f"ecssd-agent --sync exited {proc.returncode}: {proc.stderr[-800:]}")
    return summary, seconds


def reference_sync(moto: Moto, zone_id: str, hostname: str, ports: Sequence[tuple[str, str, str]]
                   ) -> tuple[int, float]:
    """The reference agent's strategy: one CREATE per record, one request each."""
    clients = moto.clients()
    client = clients.client("route53")
    target = f"{hostname}.{DOMAIN}"
    started = time.perf_counter()
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "CREATE", "ResourceRecordSet": {
            "Name": target, "Type": "A", "TTL": 0, "ResourceRecords": [{"Value": "127.0.0.1"}]}}]})
    for docker_id, service, port in ports:
        client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
            "Comment": "Service Discovery Created Record",
            "Changes": [{"Action": "CREATE", "ResourceRecordSet": {
                "Name": f"{service}.{DOMAIN}", "Type": "SRV", "SetIdentifier": docker_id,
                "Weight": 1, "TTL": 0, "ResourceRecords": [{"Value": f"1 1 {port} {target}"}]}}]})
    return clients.stats.attempts("ChangeResourceRecordSets"), time.perf_counter() - started


def owned_srv(moto: Moto, zone_id: str, hostname: str) -> int:
    client = boto3.client("route53", region_name=REGION, endpoint_url=moto.url)
    count = 0
    for page in client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        count += sum(1 for r in page["ResourceRecordSets"]
                     if r["Type"] == "SRV"
                     and str(r.get("SetIdentifier", "")).startswith(f"ecssd:h:{hostname}:"))
    return count


def two_hundred_containers(moto: Moto) -> list[dict[str, Any]]:
    goal = "<= 2 change requests for 200 containers (the reference: 1 per container)"
    zone_id = moto.new_zone(DOMAIN).rsplit("/", 1)[-1]
    engine, why = docker_engine()
    if engine is None:
        return fake_two_hundred(moto, zone_id, why, goal)
    label = uuid.uuid4().hex[:12]
    import docker

    api = docker.APIClient(base_url=engine.base_url, timeout=120)
    try:
        started = time.perf_counter()
        ids = start_containers(api, CONTAINERS, label)
        boot = time.perf_counter() - started
        first, seconds = agent_sync(moto, zone_id, engine.base_url, "bench-host")
        second, seconds_again = agent_sync(moto, zone_id, engine.base_url, "bench-host")
        registered = owned_srv(moto, zone_id, "bench-host")
        ports = [(cid, SERVICES[n % len(SERVICES)], host_port(api, cid)) for n, cid in enumerate(ids)]
        reference_requests, reference_seconds = reference_sync(moto, zone_id, "reference-host", ports)
    finally:
        remove_containers(api, label)
        api.close()
        engine.close()
    others = registered - CONTAINERS
    shared = (f"; the engine also ran {others} other container(s) with SERVICE_ variables, "
              "registered too") if others else ""
    aws = first["aws_requests"]
    return [
        row("200 containers, one ecssd-agent --sync: change requests", first["change_requests"],
            "requests", goal,
            f"{first['changes']} record changes ({registered} SRV + 1 A registered){shared}; all "
            f"AWS requests {aws}; second --sync: {second['change_requests']} change requests "
            f"({second['changes']} changes); real Docker engine via {engine.how} "
            f"({CONTAINERS} containers started in {boot:.0f} s), moto server over HTTP",
            held=first["change_requests"] <= 2),
        row("200 containers, one ecssd-agent --sync: seconds", round(seconds, 2), "s",
            "(measured)", f"whole process: start, zone lookup, Docker list + inspect of every "
            f"container, one listing, the batch; second --sync {seconds_again:.2f} s"),
        row("200 containers, reference one-call-per-container strategy: change requests",
            reference_requests, "requests", "(baseline)",
            f"{reference_seconds:.2f} s for its requests alone, against the same moto server; "
            f"ecssd: {reference_requests / max(first['change_requests'], 1):.0f}x fewer"),
    ]


def fake_two_hundred(moto: Moto, zone_id: str, why: str, goal: str) -> list[dict[str, Any]]:
    """No engine: the Agent class with 200 fake containers (same planning and batching)."""
    clients = moto.clients()
    client = clients.client("route53")
    agent = Agent(DirectSink(Route53Zone(client, find_zone(client, DOMAIN, zone_id))),
                  FakeDocker(fake_containers(CONTAINERS)), Host("bench-host", "127.0.0.1"))
    started = time.perf_counter()
    outcome = agent.sync()
    seconds = time.perf_counter() - started
    ports = [(c.id, SERVICES[n % len(SERVICES)], str(c.ports["8081/tcp"][0]))
             for n, c in enumerate(fake_containers(CONTAINERS))]
    reference_requests, reference_seconds = reference_sync(moto, zone_id, "reference-host", ports)
    note = f"NO DOCKER ENGINE ({why}): the Agent class with {CONTAINERS} fake containers, not the CLI"
    return [
        row("200 containers, one sync (Agent class, fake containers): change requests",
            outcome.requests, "requests", goal, f"{len(outcome.changes)} changes; {note}",
            held=outcome.requests <= 2),
        row("200 containers, one sync (Agent class, fake containers): seconds", round(seconds, 2),
            "s", "(measured)", note),
        row("200 containers, reference one-call-per-container strategy: change requests",
            reference_requests, "requests", "(baseline)", f"{reference_seconds:.2f} s; {note}"),
    ]


# --- zone size ----------------------------------------------------------------------------

class FakeDocker(DockerSource):
    """Stands in for the engine: the containers of this host, as the adapter returns them."""

    def __init__(self, containers: list[Container]) -> None:
        super().__init__(None)  # never connects: containers() is overridden
        self._containers = containers

    def containers(self) -> list[Container]:
        return list(self._containers)


def fake_containers(count: int, offset: int = 0, services: Sequence[str] = SERVICES) -> list[Container]:
    return [Container(id=f"{offset + n:012x}" + "b" * 52, name=f"c{n}",
                      env={"SERVICE_8081_NAME": services[n % len(services)]}, labels={},
                      ports={"8081/tcp": (32768 + n,)}) for n in range(count)]


def other_hosts(total: int, domain: str, services: Sequence[str]) -> list[RecordSet]:
    """~``total`` record sets of other hosts: an A record and 20 SRV record sets each."""
    records: list[RecordSet] = []
    index = 0
    while len(records) + 21 <= total:
        instances = [ServiceInstance(name=services[(index * 20 + i) % len(services)], protocol="tcp",
                                     container_port=8081, port=30000 + i,
                                     container_id=f"{index * 20 + i:012x}" + "a" * 52)
                     for i in range(20)]
        host = Host(f"ip-10-1-{index // 250}-{index % 250}", f"10.1.{index // 250}.{index % 250}")
        made, _ = host_records(host, instances, domain + ".", Routing.WEIGHTED, 0)
        records += made
        index += 1
    return records


def zone_cost(moto: Moto, total: int) -> list[dict[str, Any]]:
    """One host registering 20 containers, then resyncing, in a zone of ``total`` record sets."""
    domain = f"z{total}.{DOMAIN}"
    zone_id = moto.new_zone(domain).rsplit("/", 1)[-1]
    services = [f"_svc{n:03d}._tcp" for n in range(max(4, total // 50))]  # ~50 instances each
    client = moto.clients().client("route53")
    zone = find_zone(client, domain, zone_id)
    others = other_hosts(total - 23, domain, services)  # + NS, SOA and this host's A record
    fill_started = time.perf_counter()
    fill_requests = Route53Zone(client, zone).apply([Change(Action.CREATE, r) for r in others])
    fill_seconds = time.perf_counter() - fill_started

    rows = []
    for number, strategy in enumerate(("full listing (Agent.sync, as built)", "name-scoped (zone_reads)")):
        # Another host and other containers per strategy: moto 5.2 refuses to CREATE a record
        # set identical to one created and deleted before when any record set sorts after it.
        mine = fake_containers(20, offset=10**6 * (number + 1), services=services[:20])
        clients = moto.clients()
        sink = DirectSink(Route53Zone(clients.client("route53"), zone))
        agent = Agent(sink, FakeDocker(mine), Host(f"bench-host-{number + 1}", "127.0.0.1"))
        names = {r.name for r in agent.desired(mine)}

        def read(agent: Agent = agent, sink: DirectSink = sink,
                 names: set[str] = names) -> list[RecordSet]:
            return owned_records_by_names(sink.zone, names, agent.owns).records

        figures = []
        for _phase in ("register", "resync"):
            before = clients.stats.by_operation()
            started = time.perf_counter()
            if strategy.startswith("full"):
                outcome: Outcome = agent.sync()
            else:
                outcome = converge(sink.zone, agent.desired(mine), agent.owns, read=read)
            seconds = time.perf_counter() - started
            after = clients.stats.by_operation()
            lists = after.get("ListResourceRecordSets", 0) - before.get("ListResourceRecordSets", 0)
            figures.append((lists, outcome.requests, len(outcome.changes), seconds))
        agent.remove()  # the next strategy registers from scratch too
        register, resync = figures
        rows.append(row(
            f"zone of {len(others) + 2} record sets, one host's sync, {strategy}: list requests",
            register[0], "requests", "independent of zone size",
            f"register {len(mine)} containers: {register[0]} list + {register[1]} change requests "
            f"({register[2]} changes), {register[3]:.2f} s; resync: {resync[0]} list + {resync[1]} "
            f"change requests, {resync[3]:.2f} s; other hosts' {len(others)} record sets "
            f"({len(others) // 21} hosts) written in {fill_requests} requests ({fill_seconds:.1f} s)"))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with moto_server() as moto:
        rows += two_hundred_containers(moto)
        for total in ZONE_SIZES[:2] if quick else ZONE_SIZES:
            rows += zone_cost(moto, total)
    return rows


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print(f"{result['metric']}: {result['value']} {result['unit']}  [{result['note']}]")

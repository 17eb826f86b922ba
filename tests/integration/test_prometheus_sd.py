"""``ecssd-dns --http-port`` for real: a real Prometheus discovers every instance through it.

The zone lives in a moto server and holds record sets written by the real code (the
agent's ``host_records`` through ``Route53Zone.apply``, and a task's records as the
task-events Lambda writes them). ``ecssd-dns`` runs as a subprocess; Debian's
``prometheus`` runs as another, with a temporary configuration whose ``http_sd_configs``
points at it, on 127.0.0.1 only. The instances' addresses are 127.0.0.x: Prometheus'
scrapes of them fail fast on loopback, which is fine, the test is about discovery.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Action, Change, Host, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import host_records, routed, srv_value
from ecssd_agent.dns.http_sd import PATH
from tests.support.env import skip_or_fail
from tests.support.poll import wait_for
from tests.support.process import stop

ZONE = "servicediscovery.internal"
Z = ZONE + "."
TASK = "0123456789abcdef0123456789abcdef"
STARTUP_TIMEOUT = 30.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instance(n: int, name: str, port: int) -> ServiceInstance:
    return ServiceInstance(name=name, protocol="tcp", container_port=8081, port=port,
                           container_id=f"{n:012x}" + "ab" * 26, cluster="prod",
                           task_arn=f"arn:aws:ecs:us-east-1:123456789012:task/prod/{n:032x}")


def host_changes(n: int, instances: list[ServiceInstance]) -> list[Change]:
    records, problems = host_records(Host(f"ip-127-0-0-{n}", f"127.0.0.{n}"), instances, Z,
                                     Routing.WEIGHTED, 0)
    assert problems == []
    return [Change(Action.CREATE, r) for r in records]


#: (address, service, cluster, task) of every instance the world below holds.
EXPECTED = {
    ("127.0.0.2:32001", "_calc._tcp", "prod", f"{1:032x}"),
    ("127.0.0.3:32002", "_calc._tcp", "prod", f"{2:032x}"),
    ("127.0.0.4:32003", "_calc._tcp", "prod", f"{3:032x}"),
    ("127.0.0.4:32004", "web", "prod", f"{4:032x}"),
    ("127.0.0.9:8081", "_calc._tcp", "fargate", TASK),
}


def write_world(zone: Route53Zone) -> None:
    changes = (host_changes(2, [instance(1, "_calc._tcp", 32001)])
               + host_changes(3, [instance(2, "_calc._tcp", 32002)])
               + host_changes(4, [instance(3, "_calc._tcp", 32003), instance(4, "web", 32004)]))
    target = f"{TASK}.task.{Z}"
    changes += [Change(Action.CREATE, r) for r in (
        routed(target, "A", ["127.0.0.9"], Owner(kind=Kind.TASK, cluster="fargate", task=TASK),
               Routing.WEIGHTED, 0),
        routed(f"_calc._tcp.{Z}", "SRV", [srv_value(8081, target)],
               Owner(kind=Kind.TASK, cluster="fargate", task=TASK, port="8081/tcp"),
               Routing.WEIGHTED, 0))]
    zone.apply(changes)


def http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@dataclass
class World:
    zone: Route53Zone
    url: str
    log: Path

    def groups(self) -> list[dict[str, Any]]:
        code, content_type, body = http_get(self.url)
        assert (code, content_type) == (200, "application/json"), body
        return json.loads(body.decode("utf-8"))


def discovered(groups: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {(target, g["labels"]["__meta_ecssd_service"], g["labels"]["__meta_ecssd_cluster"],
             g["labels"]["__meta_ecssd_task"]) for g in groups for target in g["targets"]}


@pytest.fixture(scope="module")
def world(moto_server, tmp_path_factory) -> Iterator[World]:
    moto_server.reset()
    r53 = moto_server.client("route53")
    vpc = moto_server.client("ec2").create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    r53.create_hosted_zone(Name=ZONE, CallerReference="http-sd-tests",
                           HostedZoneConfig={"PrivateZone": True},
                           VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
    zone = Route53Zone(r53, find_zone(r53, ZONE))
    write_world(zone)
    http_port = free_port()
    log = tmp_path_factory.mktemp("http-sd") / "ecssd-dns.log"
    script = shutil.which("ecssd-dns")
    command = [script] if script else [sys.executable, "-m", "ecssd_agent.dns.server"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--port", "0", "--http-port", str(http_port), "--refresh", "0.5",
             "--log-level", "debug", ZONE],
            env={**moto_server.env(), "PYTHONUNBUFFERED": "1"}, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{http_port}{PATH}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"ecssd-dns exited {process.returncode}:\n"
                                 f"{log.read_text(errors='replace')}")
        return http_get(url)[0] == 200

    try:
        wait_for(ready, timeout=STARTUP_TIMEOUT, what="ecssd-dns's HTTP SD to answer",
                 ignore=(ConnectionError, urllib.error.URLError))
        yield World(zone, url, log)
    finally:
        stop(process)


def test_the_endpoint_lists_every_instance_with_its_labels(world) -> None:
    groups = world.groups()
    assert discovered(groups) == EXPECTED
    web = next(g for g in groups if g["labels"]["__meta_ecssd_service"] == "web")
    assert web["labels"]["__meta_ecssd_host"] == "ip-127-0-0-4.servicediscovery.internal"
    assert web["labels"]["__meta_ecssd_container_port"] == "8081/tcp"


def test_a_new_instance_appears_after_the_next_listing(world) -> None:
    change = host_changes(5, [instance(5, "web", 32005)])
    world.zone.apply(change)
    try:
        wait_for(lambda: ("127.0.0.5:32005", "web", "prod", f"{5:032x}") in discovered(
            world.groups()), timeout=15, what="the new instance in the targets")
    finally:
        world.zone.apply([Change(Action.DELETE, c.record) for c in change])
    wait_for(lambda: discovered(world.groups()) == EXPECTED, timeout=15,
             what="the deleted instance to leave the targets")


def test_a_real_prometheus_discovers_every_instance(world, tmp_path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("prometheus not found (apt-get install prometheus)")
    web_port = free_port()
    config = tmp_path / "prometheus.yml"
    # JSON is YAML: no YAML library needed to write the configuration.
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "500ms"},
        "scrape_configs": [{
            "job_name": "ecssd",
            "http_sd_configs": [{"url": world.url, "refresh_interval": "1s"}],
            "relabel_configs": [
                {"source_labels": ["__meta_ecssd_service"], "target_label": "service"},
                {"source_labels": ["__meta_ecssd_task"], "target_label": "task"},
                {"source_labels": ["__meta_ecssd_cluster"], "target_label": "cluster"},
            ],
        }],
    }))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{web_port}"],
            stdout=sink, stderr=sink, cwd=tmp_path)
    api = f"http://127.0.0.1:{web_port}/api/v1/targets?state=active"

    def targets() -> list[dict[str, Any]] | None:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited {process.returncode}:\n"
                                 f"{log.read_text(errors='replace')}")
        code, _, body = http_get(api)
        if code != 200:
            return None
        active = json.loads(body)["data"]["activeTargets"]
        return active if len(active) >= len(EXPECTED) else None

    try:
        active = wait_for(targets, timeout=60, what="Prometheus to discover the targets",
                          ignore=(ConnectionError, urllib.error.URLError))
    finally:
        stop(process)
    seen = {(t["discoveredLabels"]["__address__"], t["labels"]["service"],
             t["labels"]["cluster"], t["labels"]["task"]) for t in active}
    assert seen == EXPECTED
    for target in active:
        assert target["discoveredLabels"]["__meta_ecssd_host"].endswith("." + ZONE)
        assert target["labels"]["job"] == "ecssd"

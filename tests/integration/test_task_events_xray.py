"""End to end: an X-Ray-instrumented application finds its daemon through discovery.

The original system this absorbs existed so that applications could say
``AWS_XRAY_DAEMON_ADDRESS=xray.acme.com:2000`` instead of a hard-coded IP. Here, all real
parts: the task-events Lambda writes the fixed record (``xray.sd.internal`` -> the daemon's
host) and the daemon's SRV record (``_xray._udp``, for its bound host port: a fixed 2000
could clash on a shared test machine) into a moto server; the real ``ecssd-dns`` serves
that zone on loopback; an application process using the ``aws-xray-sdk`` package resolves
the address through ``ecssd_agent.dns.client`` and sends a segment to the UDP socket
standing in for the daemon. Then the daemon is replaced by a task on another host and the
application's next segment lands at the new one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_task_events_world import (
    DOMAIN,
    XRAY_GROUP,
    XRAY_NAME,
    World,
    env,
    fixed_lambda,
    task_name,
    world,
)
from tests.support.env import FAKE_AWS_ENV
from tests.support.poll import wait_for

__all__ = ["world"]

REPO = Path(__file__).resolve().parents[2]
DAEMON_HOSTS = ("127.0.0.1", "127.0.0.6")  # the first daemon's host, its replacement's

APP = textwrap.dedent("""
    import json, sys
    from aws_xray_sdk.core import xray_recorder
    from ecssd_agent.dns.client import ServiceResolver

    domain, nameserver, name = sys.argv[1:4]
    resolver = ServiceResolver(domain=domain, nameserver=nameserver)
    ip = resolver.addresses("xray")[0]                 # the fixed record: the daemon's host
    port = resolver.resolve("_xray._udp")[0].port      # its SRV record: the daemon's port
    xray_recorder.configure(daemon_address=f"{ip}:{port}", sampling=False,
                            context_missing="LOG_ERROR", service=name)
    segment = xray_recorder.begin_segment(name)
    segment.put_annotation("found_by", "ecssd")
    xray_recorder.end_segment()
    print(json.dumps({"daemon": f"{ip}:{port}", "trace_id": segment.trace_id}))
""")


@pytest.fixture
def daemons() -> Iterator[dict[str, socket.socket]]:
    """A UDP socket per daemon host, standing in for the X-Ray daemon there."""
    socks: dict[str, socket.socket] = {}
    try:
        for host in DAEMON_HOSTS:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sock.setblocking(False)
            socks[host] = sock
        yield socks
    finally:
        for sock in socks.values():
            sock.close()


def aws_env(world: World) -> dict[str, str]:
    return {**os.environ, **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": world.aws.url,
            "PYTHONPATH": str(REPO)}


@pytest.fixture
def dns_server(world: World) -> Iterator[str]:
    """The real ``ecssd-dns`` for the world's zone on a free loopback port: "127.0.0.1:PORT"."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecssd_agent.dns.server", "--hosted-zone-id", world.zone_id,
         "--listen", "127.0.0.1", "--port", "0", "--refresh", "0.2", "--route53-rate", "20",
         "--route53-burst", "20",
         "--log-format", "json", DOMAIN],
        env=aws_env(world), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def port() -> int | None:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"ecssd-dns exited ({proc.poll()}): {''.join(lines)}")
        lines.append(line)
        try:
            record: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            return None
        return int(record["port"]) if "serving zone" in record.get("message", "") else None

    try:
        yield f"127.0.0.1:{wait_for(port, timeout=30, what='ecssd-dns to listen')}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run_app(world: World, nameserver: str, name: str) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-c", APP, DOMAIN, nameserver, name],
                            env=aws_env(world), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    out: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def segment_at(sock: socket.socket) -> dict[str, Any]:
    """The segment document of the first datagram the stand-in daemon receives."""

    def receive() -> bytes | None:
        try:
            return sock.recv(65536)
        except BlockingIOError:
            return None

    data = wait_for(receive, timeout=15, what="a segment at the stand-in X-Ray daemon")
    header, _, body = data.decode().partition("\n")
    assert json.loads(header) == {"format": "json", "version": 1}
    document: dict[str, Any] = json.loads(body)
    return document


def start_daemon(world: World, host: str, port: int) -> dict[str, Any]:
    task = world.start_on(host, "xray-daemon", group=XRAY_GROUP)
    bindings = {"xray-daemon": [{"bindIP": "0.0.0.0", "containerPort": 2000, "hostPort": port,
                                 "protocol": "udp"}]}
    return {"task": task, "event": world.event(task["taskArn"], bindings)}


def test_application_finds_the_xray_daemon_through_discovery(
        world: World, daemons: dict[str, socket.socket], dns_server: str) -> None:
    handler = fixed_lambda(world)
    for host in DAEMON_HOSTS:
        world.container_instance(host)
    world.task_definition("xray-daemon", [{
        "name": "xray-daemon", "image": "public.ecr.aws/xray/aws-xray-daemon", "memory": 256,
        "portMappings": [{"containerPort": 2000, "hostPort": 0, "protocol": "udp"}],
        "environment": env(SERVICE_2000_NAME="_xray._udp"),
    }], mode="bridge")
    first_host, second_host = DAEMON_HOSTS
    first_port, second_port = (daemons[h].getsockname()[1] for h in DAEMON_HOSTS)

    first = start_daemon(world, first_host, first_port)
    handler(first["event"])
    assert world.answers(XRAY_NAME, "A") == {first_host}

    app = run_app(world, dns_server, "e2e-app")

    assert app["daemon"] == f"{first_host}:{first_port}"
    segment = segment_at(daemons[first_host])
    assert segment["name"] == "e2e-app" and segment["trace_id"] == app["trace_id"]
    assert segment["annotations"] == {"found_by": "ecssd"}

    # The daemon is replaced: a new task on another host, then the old one stops.
    second = start_daemon(world, second_host, second_port)
    handler(second["event"])
    world.stop(first["task"]["taskArn"])
    handler(world.event(first["task"]["taskArn"]))
    assert world.answers(XRAY_NAME, "A") == {second_host}
    assert world.answers("_xray._udp.sd.internal.", "SRV") == {
        f"1 1 {second_port} {task_name(second['task'])}"}

    def follows() -> dict[str, str] | None:  # ecssd-dns refreshes its view on an interval
        again = run_app(world, dns_server, "e2e-app-2")
        return again if again["daemon"] == f"{second_host}:{second_port}" else None

    again = wait_for(follows, timeout=30, what="the application to find the new daemon")
    segment = segment_at(daemons[second_host])
    assert segment["name"] == "e2e-app-2" and segment["trace_id"] == again["trace_id"]

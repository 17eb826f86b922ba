"""The agent daemon as an operator runs it: the real ``ecssd-agent`` process, watched from outside.

A test (or benchmark) starts the daemon as a subprocess against a moto server and a real
Docker engine, and observes it only through what an operator has: the zone (listed over
HTTP), the process (signals, exit code, /proc), the log, and ``/healthz`` + ``/metrics``.
The number of Route 53 change requests is read from the agent's own ``/metrics``
(``ecssd_aws_requests_total``, counted by botocore event hooks on every HTTP attempt), so
it is the number of requests the agent really sent.

Used by tests/integration/test_daemon*.py and benchmarks/bench_daemon.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import docker.errors
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agent_cli import agent_command
from tests.support.images import HEALTH_PORT, HTTPD_CMD
from tests.support.poll import wait_for

ZONE = "servicediscovery.internal"
REGION = "us-east-1"
HOST, HOST_IP = "ip-127-0-0-1", "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Zone:
    """A private hosted zone in the moto server, read the way any client would."""

    def __init__(self, client: Any, zone_id: str) -> None:
        self.client = client
        self.id = zone_id

    @classmethod
    def create(cls, moto: Any, name: str = ZONE) -> Zone:
        r53 = moto.client("route53")
        zone_id = r53.create_hosted_zone(
            Name=name, CallerReference=f"daemon-{time.monotonic_ns()}",
            HostedZoneConfig={"PrivateZone": True},
            VPC={"VPCRegion": REGION, "VPCId": "vpc-0123456789abcdef0"},
        )["HostedZone"]["Id"].rsplit("/", 1)[-1]
        return cls(r53, zone_id)

    def listing(self) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=self.id)
        return [r for page in pages for r in page["ResourceRecordSets"]
                if r["Type"] not in ("NS", "SOA")]

    def owned(self, host: str) -> dict[str, dict[str, Any]]:
        """SetIdentifier -> record set, for every record set ``host`` owns."""
        prefix = f"ecssd:h:{host}"
        return {r["SetIdentifier"]: r for r in self.listing()
                if r.get("SetIdentifier", "") == prefix
                or r.get("SetIdentifier", "").startswith(prefix + ":")}

    def srv(self, host: str) -> dict[str, str]:
        """container id (12) -> SRV value, for ``host``'s service records."""
        return {ident.split(":")[3]: r["ResourceRecords"][0]["Value"]
                for ident, r in self.owned(host).items() if r["Type"] == "SRV"}

    def create_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.client.change_resource_record_sets(HostedZoneId=self.id, ChangeBatch={
            "Changes": [{"Action": "CREATE", "ResourceRecordSet": dict(r)} for r in records]})

    def delete_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.client.change_resource_record_sets(HostedZoneId=self.id, ChangeBatch={
            "Changes": [{"Action": "DELETE", "ResourceRecordSet": dict(r)} for r in records]})


class AgentProcess:
    """One ``ecssd-agent`` daemon process; its log goes to a file (a pipe could fill up)."""

    def __init__(self, env: Mapping[str, str], docker_url: str, host: str, host_ip: str,
                 *args: str, zone: str = ZONE) -> None:
        self.host = host
        self.status_port = free_port()
        self._logfile = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by close()
            prefix="ecssd-agent-", suffix=".log", delete=False)
        self.log_path = Path(self._logfile.name)
        env = {k: v for k, v in env.items() if not k.startswith("ECSSD_")}
        cmd = [*agent_command(), "--log-format", "json", "--hostname", host, "--host-ip", host_ip,
               "--docker-host", docker_url, "--status-port", str(self.status_port), *args, zone]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._logfile, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthz(self, path: str = "/healthz") -> tuple[int, str]:
        """(status code, body) of /healthz (liveness); (0, error) when the server does not
        answer."""
        try:
            response = requests.get(f"{self.base}{path}", timeout=3)
        except requests.RequestException as exc:
            return 0, str(exc)
        return response.status_code, response.text.strip()

    def readyz(self) -> tuple[int, str]:
        """(status code, body) of /readyz: 200 once Docker is followed and the last reconcile
        succeeded."""
        return self.healthz("/readyz")

    def healthy(self) -> bool:
        if not self.alive():
            raise AssertionError(f"the agent exited with {self.proc.returncode}:\n{self.log()}")
        return self.healthz()[0] == 200

    def ready(self) -> bool:
        if not self.alive():
            raise AssertionError(f"the agent exited with {self.proc.returncode}:\n{self.log()}")
        return self.readyz()[0] == 200

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = requests.get(f"{self.base}/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def requests_sent(self, operation: str) -> int:
        """HTTP requests the agent sent for one AWS operation, retries included."""
        key = ("ecssd_aws_requests_total", (("operation", operation), ("outcome", "attempt"),
                                            ("service", "route53")))
        return int(self.metrics().get(key, 0))

    def change_requests(self) -> int:
        return self.requests_sent("ChangeResourceRecordSets")

    def peak_rss_kb(self) -> int:
        """VmHWM of the agent process: its peak resident set, in kB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise LookupError("no VmHWM")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Kill the process if it still runs (by its pid) and remove the log."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._logfile.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            print(f"--- agent log ({self.host}) ---\n{self.log()[-6000:]}")
        self.close()


def service_env(name: str) -> dict[str, str]:
    return {f"SERVICE_{HEALTH_PORT}_NAME": name}


#: A health check a test steers from outside: healthy while /tmp/state says "ok" (shell
#: built-ins only: the busybox image has no ``test`` or ``rm`` applet). Checked every second;
#: "starting" until the first success (failures in the start period do not count), then
#: one failure makes the container unhealthy.
HEALTH_ARGS = ("--health-cmd", 'test "$(cat /tmp/state 2>/dev/null)" = ok',
               "--health-interval", "1s", "--health-timeout", "2s", "--health-retries", "1",
               "--health-start-period", "60s")


def healthy_after(seconds: float) -> list[str]:
    """A web server whose health check passes ``seconds`` after it starts."""
    return ["sh", "-c", f"sleep {seconds}; echo ok > /tmp/state; exec httpd -f -p 8081 -h /www"]


def create_containers(api: Any, image: str, count: int, label: str,
                      env: Mapping[str, str] | None = None,
                      command: Sequence[str] = HTTPD_CMD, workers: int = 8) -> list[str]:
    """Create ``count`` containers publishing 8081 on 127.0.0.1 (not started)."""
    def create(i: int) -> str:
        host_config = api.create_host_config(port_bindings={HEALTH_PORT: ("127.0.0.1",)})
        created = api.create_container(
            image, list(command), labels={"ecssd.test": label},
            environment=dict(env or service_env(f"burst{i}")), ports=[HEALTH_PORT],
            host_config=host_config)
        return str(created["Id"])

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(create, range(count)))


def start_containers(api: Any, ids: Sequence[str], workers: int = 16) -> None:
    """Start the containers together: a burst, as a deployment or a host reboot makes."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(api.start, ids))


def remove_containers(api: Any, ids: Sequence[str], workers: int = 8) -> None:
    def remove(cid: str) -> None:
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            api.remove_container(cid, force=True, v=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(remove, ids))


def remove_labelled(api: Any, label: str) -> None:
    ids = [c["Id"] for c in api.containers(all=True, filters={"label": f"ecssd.test={label}"})]
    remove_containers(api, ids)


def start_agent(agents: list[AgentProcess], moto: Any, engine: Any, *args: str,
                host: str = HOST, host_ip: str = HOST_IP, timeout: float = 30,
                env: Mapping[str, str] | None = None) -> AgentProcess:
    """Start a daemon and wait until /readyz says 200 (its startup reconcile is done).
    ``env``: the process environment (default: the moto server's)."""
    agent = AgentProcess(moto.env() if env is None else env, engine.base_url, host, host_ip,
                         *args)
    agents.append(agent)
    try:
        wait_for(agent.ready, timeout=timeout, what="the agent's /readyz to answer 200")
    except AssertionError:
        print(agent.log())
        raise
    return agent


AMI = "ami-12c6146b"  # any id: moto accepts it


def register_container_instance(aws: Any, cluster: str) -> str:
    """A container instance of ``cluster`` in the moto server; its ARN."""
    instance = aws.client("ec2").run_instances(ImageId=AMI, MinCount=1, MaxCount=1)
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName=cluster)
    identity = json.dumps({"instanceId": instance["Instances"][0]["InstanceId"]})
    return str(ecs.register_container_instance(
        cluster=cluster, instanceIdentityDocument=identity)["containerInstance"][
        "containerInstanceArn"])


def ecs_task_labels(aws: Any, cluster: str, service: str = "") -> dict[str, str]:
    """Run a task in ``cluster`` (moto) and return the labels the ECS agent puts on its
    containers. ``service``: started as ECS's service scheduler starts a service's tasks
    (group ``service:<name>``, startedBy ``ecs-svc/<id>``); else a standalone RunTask (group
    ``family:<name>``)."""
    ecs = aws.client("ecs")
    family = f"task-{time.monotonic_ns()}"
    ecs.register_task_definition(family=family, containerDefinitions=[
        {"name": "web", "image": "busybox", "memory": 64}])
    marks = {"group": f"service:{service}", "startedBy": "ecs-svc/1234567890123456789"} \
        if service else {}
    task = ecs.run_task(cluster=cluster, taskDefinition=family, count=1, **marks)["tasks"][0]
    return {"com.amazonaws.ecs.task-arn": task["taskArn"], "com.amazonaws.ecs.cluster": cluster,
            "com.amazonaws.ecs.container-name": "web"}


class Switch:
    """On or off, flipped by a test while the patch that reads it is active."""

    def __init__(self, on: bool = False) -> None:
        self.on = on


#: The Route 53 operations an agent makes (find the zone, read it, write it).
ROUTE53_OPERATIONS = ("get_hosted_zone", "list_hosted_zones", "list_hosted_zones_by_name",
                      "list_resource_record_sets", "change_resource_record_sets")


@contextlib.contextmanager
def route53_throttled(on: bool = False) -> Iterator[Switch]:
    """While the yielded switch is on, every Route 53 request gets Route 53's answer to an
    account over its budget: ``Throttling`` ("Rate exceeded", HTTP 400). The test's own
    Route 53 reads are throttled too: read the zone with the switch off."""
    from moto.route53 import models
    from moto.route53.exceptions import Route53ClientError

    switch = Switch(on)
    originals = {name: getattr(models.Route53Backend, name) for name in ROUTE53_OPERATIONS}

    def throttling(original: Any) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if switch.on:
                raise Route53ClientError("Throttling", "Rate exceeded")
            return original(self, *args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(models.Route53Backend, name, throttling(original))
    try:
        yield switch
    finally:
        for name, original in originals.items():
            setattr(models.Route53Backend, name, original)


@contextlib.contextmanager
def ecs_keeps_deregistered_instances() -> Iterator[None]:
    """Make moto keep a deregistered container instance as ECS does: described, INACTIVE
    (moto 5.2 forgets it, so DescribeContainerInstances reports it MISSING). ECS's
    ListContainerInstances leaves INACTIVE instances out unless asked for them; moto's
    lists every instance it keeps, so it is filtered the same way."""
    from moto.ecs import models

    original_list = models.EC2ContainerServiceBackend.list_container_instances

    def deregister_container_instance(self: Any, cluster_str: str,
                                      container_instance_str: str, force: bool) -> Any:
        cluster = self._get_cluster(cluster_str)
        instance = self.container_instances[cluster.name][container_instance_str.split("/")[-1]]
        instance.status = "INACTIVE"
        return instance

    def list_container_instances(self: Any, cluster_str: str) -> list[str]:
        kept = self.container_instances.get(cluster_str.split("/")[-1], {}).values()
        inactive = {ci.container_instance_arn for ci in kept if ci.status == "INACTIVE"}
        return [arn for arn in original_list(self, cluster_str) if arn not in inactive]

    original_deregister = models.EC2ContainerServiceBackend.deregister_container_instance
    models.EC2ContainerServiceBackend.deregister_container_instance = (  # type: ignore[method-assign]
        deregister_container_instance)
    models.EC2ContainerServiceBackend.list_container_instances = (  # type: ignore[method-assign]
        list_container_instances)
    try:
        yield
    finally:
        models.EC2ContainerServiceBackend.deregister_container_instance = (  # type: ignore[method-assign]
            original_deregister)
        models.EC2ContainerServiceBackend.list_container_instances = (  # type: ignore[method-assign]
            original_list)


class FakeEcsAgent:
    """The ECS agent's introspection API on 127.0.0.1: every container belongs to a task, and
    ``/v1/metadata`` names ``cluster`` and ``container_instance_arn`` once a test sets them
    (until then it answers as an agent that has not registered the instance yet)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.cluster = ""
        self.container_instance_arn = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/v1/metadata":
                    body = json.dumps({"Cluster": outer.cluster, "Version": "Agent/1.80.0",
                                       "ContainerInstanceArn": outer.container_instance_arn
                                       or None}).encode()
                    self._send(200, body)
                    return
                docker_id = parse_qs(url.query).get("dockerid", [""])[0]
                outer.asked.append(docker_id)
                body = json.dumps({"Arn": FakeEcsAgent.arn(docker_id), "KnownStatus": "RUNNING",
                                   "Containers": [{"DockerId": docker_id}]}).encode()
                self._send(200 if url.path == "/v1/tasks" and docker_id else 400, body)

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def arn(docker_id: str) -> str:
        return f"arn:aws:ecs:us-east-1:123456789012:task/prod/{docker_id[:32]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- fixtures (imported by the test modules) ------------------------------------------------

@pytest.fixture
def ecs_agent() -> Iterator[FakeEcsAgent]:
    fake = FakeEcsAgent()
    yield fake
    fake.close()


@pytest.fixture
def zone(aws: Any) -> Zone:
    return Zone.create(aws)


@pytest.fixture
def agents(aws: Any, docker_engine: Any) -> Iterator[list[AgentProcess]]:
    """Agents started with ``start_agent(agents, ...)``; each killed (by pid) after the test."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        # pytest shows captured output for failed tests only
        print(f"--- agent {agent.host} (pid {agent.pid}) log tail ---\n{agent.log()[-8000:]}")
        agent.close()

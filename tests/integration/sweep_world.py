"""A world for the health sweep, on one machine: moto (ECS, EC2, Route 53) + real HTTP servers.

Loopback plays the VPC: the VPC is 127.0.0.0/16, each "host" is an EC2 instance with its own
private IP 127.0.x.y (private DNS ``ip-127-0-x-y.ec2.internal``), registered as a container
instance of a cluster; each task started on it gets a real HTTP server bound to that host's
address (answering 200, 500, in a protocol other than HTTP, hanging, with no server at all:
refused, or silent: the host drops the connection attempt). The records are
written by the agent's own code (:class:`ecssd_agent.agent.host_agent.Agent`, from containers carrying
the ECS labels the ECS agent sets), one agent per host, exactly as in production.

moto's DescribeTasks reports no ``networkBindings`` (real ECS does, from what the ECS
container agent submits), and the sweep probes only a port ECS confirms. So the world plays
the ECS container agent's part for the tasks it started: :meth:`SweepWorld.report_bindings`
is an ``after-call.ecs.DescribeTasks`` hook that adds each task's binding (container port
8080 -> the host port its server listens on, and its sidecar's 9100 when it has one) to
moto's answer, in the real response's shape. Without it the sweep sees what moto shows: no
bindings, nothing confirmed, nothing judged. moto 5.2 also lists only a task definition's
first container among a task's containers (real ECS lists each): the hook adds the sidecar's.

Used by tests/integration/test_health_lambda*.py and benchmarks/bench_sweep.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.metadata import ECS_CLUSTER, ECS_CONTAINER_NAME, ECS_TASK_ARN
from ecssd_agent.core.model import Container, Host, RecordSet, Routing
from ecssd_agent.core.naming import task_id

AMI = "ami-12c6146b"  # any id: moto accepts it
OK, ERROR, HANG, REFUSE = "ok", "error", "hang", "refuse"
REDIS = "redis"  # answers every line with a Redis error: alive, speaking something else
SILENT = "silent"  # the host never completes the connection: a dropped path, seen from here


# --- HTTP servers ------------------------------------------------------------------------

class HttpFleet:
    """Many tiny HTTP servers on one asyncio loop (one thread, whatever their number).

    ``ok`` answers 200 on its health path and 404 elsewhere; ``error`` answers 500;
    ``redis`` answers ``-ERR unknown command`` to every line, as Redis does to ``GET /health``;
    ``hang`` accepts and never answers; ``refuse`` reserves a port with nothing listening
    (the host resets the connection); ``silent`` listens with a full accept queue, so the
    kernel drops every further connection attempt and the caller's connect times out, as
    behind a security group that drops it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="http-fleet")
        self._thread.start()
        self._servers: list[asyncio.AbstractServer] = []
        self._hung: list[asyncio.StreamWriter] = []
        self._silent: list[socket.socket] = []
        self.requests: list[tuple[str, int, str]] = []  # (ip, port, path) of every GET

    def add(self, ip: str, behaviour: str, path: str = "/health") -> int:
        """Start a server on ``ip`` (port chosen by the kernel); returns the port."""
        if behaviour == REFUSE:
            with socket.socket() as sock:
                sock.bind((ip, 0))
                return int(sock.getsockname()[1])
        if behaviour == SILENT:
            listener = socket.socket()
            listener.bind((ip, 0))
            listener.listen(0)  # a queue of one, never accepted from
            filler = socket.create_connection(listener.getsockname()[:2], timeout=10)
            self._silent += [listener, filler]
            return int(listener.getsockname()[1])
        future: Future[int] = asyncio.run_coroutine_threadsafe(
            self._start(ip, behaviour, path), self.loop)
        return future.result(timeout=10)

    async def _start(self, ip: str, behaviour: str, path: str) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            except ConnectionError:
                writer.close()
                return
            parts = line.decode(errors="replace").split()
            got = parts[1] if len(parts) > 1 else ""
            self.requests.append((ip, port, got))
            if behaviour == HANG:
                self._hung.append(writer)  # keep it open, say nothing
                return
            if behaviour == REDIS:
                writer.write(b"-ERR unknown command 'GET'\r\n")
                try:
                    await writer.drain()
                finally:
                    writer.close()
                return
            status = "500 Internal Server Error" if behaviour == ERROR else (
                "200 OK" if got == path else "404 Not Found")
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
                         "ok".encode())
            try:
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(handle, ip, 0, backlog=128)
        port = int(server.sockets[0].getsockname()[1])
        self._servers.append(server)
        return port

    def close(self) -> None:
        async def stop() -> None:
            for writer in self._hung:
                writer.close()
            for server in self._servers:
                server.close()

        for sock in self._silent:
            sock.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


# --- ECS, EC2 and the agents -------------------------------------------------------------

@dataclass
class WorldHost:
    cluster: str
    ip: str
    instance_id: str
    container_instance_arn: str
    label: str
    containers: list[Container] = field(default_factory=list)


@dataclass
class WorldTask:
    cluster: str
    arn: str
    host: WorldHost
    port: int  # the host port its SRV record carries
    behaviour: str
    container_id: str
    bound: bool = True  # report_bindings adds its networkBinding
    sidecar_port: int = 0  # the host port of its "metrics" container's 9100 (0: none)

    @property
    def id(self) -> str:
        return task_id(self.arn)


class _FakeDocker:
    """What the agent asks Docker for: this host's running containers."""

    def __init__(self, host: WorldHost) -> None:
        self.host = host

    def containers(self) -> list[Container]:
        return list(self.host.containers)


class SweepWorld:
    def __init__(self, clients: Any, fleet: HttpFleet, domain: str = "sd.internal") -> None:
        """``clients(service)`` -> a boto3 client talking to the moto server."""
        self.ec2, self.ecs, self.route53 = clients("ec2"), clients("ecs"), clients("route53")
        self.fleet = fleet
        vpc = self.ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
        self.ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        self.subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/20")["Subnet"][
            "SubnetId"]
        created = self.route53.create_hosted_zone(
            Name=domain, CallerReference=f"sweep-{vpc}",
            HostedZoneConfig={"PrivateZone": True, "Comment": "sweep tests"},
            VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        self.zone_id = created["HostedZone"]["Id"].rsplit("/", 1)[-1]
        self.zone = Route53Zone(self.route53, find_zone(self.route53, domain, self.zone_id))
        self.hosts: list[WorldHost] = []
        self.tasks: list[WorldTask] = []
        self._definitions: dict[tuple[str, str, bool, tuple[tuple[str, str], ...], bool],
                                str] = {}
        self._next_ip = 2
        self._clusters: set[str] = set()

    # -- building --

    def cluster(self, name: str) -> str:
        if name not in self._clusters:
            self.ecs.create_cluster(clusterName=name)
            self._clusters.add(name)
        return name

    def host(self, cluster: str) -> WorldHost:
        self.cluster(cluster)
        n = self._next_ip
        self._next_ip += 1
        ip = f"127.0.{n // 250}.{n % 250 + 2}"
        instance = self.ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                                          SubnetId=self.subnet, PrivateIpAddress=ip)
        instance_id = instance["Instances"][0]["InstanceId"]
        dns = instance["Instances"][0]["PrivateDnsName"]
        ci = self.ecs.register_container_instance(
            cluster=cluster, instanceIdentityDocument=json.dumps({"instanceId": instance_id}))
        host = WorldHost(cluster, ip, instance_id, ci["containerInstance"]["containerInstanceArn"],
                         dns.split(".", 1)[0])
        self.hosts.append(host)
        return host

    def _definition(self, cluster: str, check_http: str, health_check: bool = False,
                    env: Mapping[str, str] | None = None, sidecar: bool = False) -> str:
        extra = tuple(sorted((env or {}).items()))
        key = (cluster, check_http, health_check, extra, sidecar)
        if key not in self._definitions:
            variables = {"SERVICE_8080_NAME": "web",
                         **({"SERVICE_8080_CHECK_HTTP": check_http} if check_http else {}),
                         **dict(extra)}
            family = f"web-{cluster}-{len(self._definitions)}"
            container: dict[str, Any] = {
                "name": "web", "image": "web", "memory": 16,
                "environment": [{"name": k, "value": v} for k, v in variables.items()],
                "portMappings": [{"containerPort": 8080, "hostPort": 0}],
            }
            if health_check:  # ECS runs it; moto reports every container HEALTHY
                container["healthCheck"] = {"command": ["CMD-SHELL", "true"], "startPeriod": 0}
            containers = [container]
            if sidecar:  # a metrics exporter: a bound port, no SERVICE_9100_NAME
                containers.append({"name": "metrics", "image": "metrics", "memory": 16,
                                   "portMappings": [{"containerPort": 9100, "hostPort": 0}]})
            self.ecs.register_task_definition(family=family, containerDefinitions=containers)
            self._definitions[key] = family
        return self._definitions[key]

    def task(self, host: WorldHost, behaviour: str = OK, check_http: str = "",
             service: str = "web", health_check: bool = False,
             env: Mapping[str, str] | None = None, sidecar: bool = False) -> WorldTask:
        """Start a task on ``host`` (StartTask), its HTTP server, and its container.
        ``health_check``: its definition has an ECS healthCheck (which moto reports HEALTHY);
        ``env``: more variables of its "web" container definition (SERVICE_8080_CHECK=tcp);
        ``sidecar``: a second container, "metrics", binds 9100 (answering 404 at /health)
        and declares no service."""
        family = self._definition(host.cluster, check_http, health_check, env, sidecar)
        started = self.ecs.start_task(cluster=host.cluster, taskDefinition=family,
                                      containerInstances=[host.container_instance_arn])
        arn = started["tasks"][0]["taskArn"]
        port = self.fleet.add(host.ip, behaviour, check_http or "/health")
        cid = f"{len(self.tasks):012x}" + "ab" * 26
        host.containers.append(Container(
            id=cid, name=f"ecs-web-{len(self.tasks)}",
            env={"SERVICE_8080_NAME": service},
            labels={ECS_TASK_ARN: arn, ECS_CLUSTER: host.cluster, ECS_CONTAINER_NAME: "web"},
            ports={"8080/tcp": (port,)},
        ))
        world_task = WorldTask(host.cluster, arn, host, port, behaviour, cid,
                               sidecar_port=self.fleet.add(host.ip, OK, "/metrics")
                               if sidecar else 0)
        self.tasks.append(world_task)
        return world_task

    def sync(self, hosts: Iterable[WorldHost] | None = None) -> None:
        """Each host's agent writes its records (one converge per host)."""
        for host in hosts if hosts is not None else self.hosts:
            agent = Agent(DirectSink(self.zone), _FakeDocker(host),  # type: ignore[arg-type]
                          Host(host.label, host.ip), Routing.WEIGHTED, ttl=0)
            agent.sync()

    def report_bindings(self, parsed: dict[str, Any], **_: Any) -> None:
        """after-call.ecs.DescribeTasks: add the networkBindings the ECS agent would have
        reported for the world's tasks (moto reports none)."""
        by_arn = {t.arn: t for t in self.tasks if t.bound}
        for raw in parsed.get("tasks", []):
            world_task = by_arn.get(raw.get("taskArn", ""))
            if world_task is None:
                continue
            containers = raw.setdefault("containers", [])
            if world_task.sidecar_port and not any(c.get("name") == "metrics"
                                                   for c in containers):
                containers.append({"name": "metrics", "lastStatus": "RUNNING",
                                   "taskArn": world_task.arn, "networkInterfaces": []})
            for container in containers:
                if container.get("name") == "web":
                    container["networkBindings"] = [{
                        "bindIP": "0.0.0.0", "containerPort": 8080,
                        "hostPort": world_task.port, "protocol": "tcp"}]
                if container.get("name") == "metrics" and world_task.sidecar_port:
                    container["networkBindings"] = [{
                        "bindIP": "0.0.0.0", "containerPort": 9100,
                        "hostPort": world_task.sidecar_port, "protocol": "tcp"}]

    def bindings_hook(self) -> tuple[str, Any]:
        """(botocore event, handler) for a sweep's clients: see :meth:`report_bindings`."""
        return ("after-call.ecs.DescribeTasks", self.report_bindings)

    # -- events --

    def kill_host(self, host: WorldHost) -> None:
        """The instance is terminated and ECS forgets it; its agent can clean nothing up."""
        self.ec2.terminate_instances(InstanceIds=[host.instance_id])
        self.ecs.deregister_container_instance(cluster=host.cluster,
                                               containerInstance=host.container_instance_arn,
                                               force=True)

    def stop_task(self, world_task: WorldTask) -> None:
        """ECS stops the task; the agent's record stays (say the agent missed the event)."""
        self.ecs.stop_task(cluster=world_task.cluster, task=world_task.arn, reason="scale-in")

    # -- reading --

    def records(self) -> list[RecordSet]:
        return list(self.zone.records())

    def owned_by(self, host: WorldHost) -> set[tuple[str, str, str | None]]:
        return {r.key for r in self.records()
                if (r.set_identifier or "").startswith(f"ecssd:h:{host.label}")
                and (r.set_identifier or "")[len(f"ecssd:h:{host.label}"):][:1] in ("", ":")}

    def srv_key(self, world_task: WorldTask) -> tuple[str, str, str | None]:
        return next(r.key for r in self.records()
                    if r.type == "SRV" and (r.set_identifier or "").endswith(":" + world_task.id))

    def task_state(self, world_task: WorldTask) -> dict[str, Any]:
        found = self.ecs.describe_tasks(cluster=world_task.cluster, tasks=[world_task.arn],
                                        include=["TAGS"])
        return dict(next(t for t in found["tasks"] if t["taskArn"] == world_task.arn))

    def task_tags(self, world_task: WorldTask) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.task_state(world_task).get("tags", [])}


def keys(records: Sequence[RecordSet]) -> set[tuple[str, str, str | None]]:
    return {r.key for r in records}

"""The daemon in queued mode, driven step by step (fake engine and clock; DynamoDB, SQS and
Route 53 from moto in-process behind the real adapters): it publishes whole host states when
they change, always on resync, never talks to Route 53, and the writer turns what it
published into the right records."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto import mock_aws

from ecssd_agent.agent.daemon import Daemon
from ecssd_agent.agent.docker_events import ContainerEvent
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.status import Status
from ecssd_agent.aws.change_queue import ChangeQueue
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Container
from ecssd_agent.writer.publish import Publisher
from ecssd_agent.writer.zone_writer import ZoneWriter
from tests.support.queued import create_hint_queue, create_host_table
from tests.unit.test_daemon_loop import HOST, ZONE, Clock, FakeDocker, FakeStream, cid, settle

TABLE = "hosts"


@dataclass
class QueuedWorld:
    clients: Clients
    docker: FakeDocker
    clock: Clock
    daemon: Daemon
    queue: ChangeQueue
    writer: ZoneWriter

    @property
    def stream(self) -> FakeStream:
        return self.daemon._stream  # type: ignore[return-value]

    def settle(self) -> list[str]:
        return settle(self.daemon, self.clock)

    def hints(self) -> list[dict[str, Any]]:
        """Drain the queue: the hints the agent sent since the last call."""
        found = []
        while batch := self.queue.receive(wait=0):
            found.extend(json.loads(m.body) for m in batch)
            self.queue.delete(batch)
        return found

    def route53_requests(self) -> int:
        return sum(n for (svc, _op, outcome), n in self.clients.stats.snapshot().items()
                   if svc == "route53" and outcome == "attempt")

    def write(self) -> dict[str, str]:
        """Run the writer for this host (as its hint would); the zone's record sets of HOST."""
        self.writer.write([HOST.label])
        return {f"{r.type} {r.name}": r.values[0] for r in self.writer.zone.records()
                if (r.set_identifier or "").startswith(f"ecssd:h:{HOST.label}")}


@pytest.fixture
def world() -> Iterator[QueuedWorld]:
    with mock_aws():
        clients = Clients(region="us-east-1")  # the agent's: must stay free of Route 53
        ddb, sqs = clients.client("dynamodb"), clients.client("sqs")
        create_host_table(ddb, TABLE)
        url = create_hint_queue(sqs)
        publisher = Publisher(HostStore(ddb, TABLE), ChangeQueue(sqs, url), HOST.label,
                              ZONE + ".")
        docker = FakeDocker()
        clock = Clock()
        agent = Agent(None, docker, HOST, publisher=publisher)  # type: ignore[arg-type]
        daemon = Daemon(agent, coalesce=0.25, resync=300.0, status=Status(clients.stats),
                        stream_factory=FakeStream, clock=clock, rng=random.Random(7),
                        deregister_on_exit=True)
        writer_clients = Clients(region="us-east-1")
        r53 = writer_clients.client("route53")
        r53.create_hosted_zone(Name=ZONE, CallerReference="t",
                               HostedZoneConfig={"PrivateZone": True},
                               VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-0123456789abcdef0"})
        writer = ZoneWriter(Route53Zone(r53, find_zone(r53, ZONE)),
                            HostStore(writer_clients.client("dynamodb"), TABLE))
        yield QueuedWorld(clients, docker, clock, daemon, ChangeQueue(sqs, url), writer)


def test_publishes_on_change_and_resync_and_never_calls_route53(world: QueuedWorld) -> None:
    world.docker.run(cid(1), "web", 32001)
    world.stream.on_connect()
    assert world.settle() == ["startup"]
    assert [h["host"] for h in world.hints()] == [HOST.label]
    assert world.write() == {f"A {HOST.label}.{ZONE}.": "10.0.0.12",
                             f"SRV web.{ZONE}.": f"1 1 32001 {HOST.label}.{ZONE}."}

    world.clock.advance(10.0)
    world.docker.run(cid(2), "api", 32002)
    world.stream.on_event(_event(2, "start"))
    assert world.settle() == ["event"]
    assert len(world.hints()) == 1

    # a container without records changes nothing: no publication, no hint
    world.clock.advance(10.0)
    world.docker.by_id[cid(3)] = Container(id=cid(3), name="plain", env={}, labels={}, ports={})
    world.stream.on_event(_event(3, "start"))
    assert world.settle() == ["event"]
    assert world.hints() == []

    world.clock.advance(400.0)  # past the resync: published again though nothing changed
    assert world.settle() == ["resync"]
    assert len(world.hints()) == 1
    assert world.route53_requests() == 0


def test_writer_applies_what_the_daemon_published_and_deregistration(world: QueuedWorld) -> None:
    world.docker.run(cid(1), "web", 32001)
    world.stream.on_connect()
    world.settle()
    world.clock.advance(10.0)
    world.docker.stop(cid(1))
    world.stream.on_event(_event(1, "die"))
    world.settle()
    assert world.write() == {f"A {HOST.label}.{ZONE}.": "10.0.0.12"}
    world.daemon.stop()
    world.daemon._run_loop()  # returns at once (stopping) and deregisters
    assert world.daemon._deregistered is True
    assert world.write() == {}
    assert world.route53_requests() == 0


def test_a_failed_publication_is_retried_with_the_same_state(world: QueuedWorld) -> None:
    world.docker.run(cid(1), "web", 32001)
    world.stream.on_connect()
    world.settle()
    world.hints()
    ddb = world.clients.client("dynamodb")
    item = ddb.get_item(TableName=TABLE, Key={"host": {"S": HOST.label}, "kind": {"S": "desired"}})
    ddb.delete_table(TableName=TABLE)  # PutItem fails: ResourceNotFoundException
    world.clock.advance(10.0)
    world.docker.run(cid(2), "api", 32002)
    world.stream.on_event(_event(2, "start"))
    world.clock.advance(0.5)
    assert world.daemon.poll() is not None  # the event's reconcile: its PutItem fails
    assert world.daemon._retry_at is not None, "the failed publication must be retried"
    assert world.hints() == []
    create_host_table(ddb, TABLE)
    assert "retry" in world.settle()
    assert len(world.hints()) == 1
    stored = ddb.get_item(TableName=TABLE, Key={"host": {"S": HOST.label}, "kind": {"S": "desired"}})
    assert len(json.loads(stored["Item"]["records"]["S"])) == 3  # A + web + api
    assert int(stored["Item"]["seq"]["N"]) > int(item["Item"]["seq"]["N"])


def _event(n: int, action: str) -> ContainerEvent:
    return ContainerEvent(cid(n), action, {})

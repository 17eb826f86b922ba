"""Per-instance weight and priority in the records, on Route 53's wire and in the plan.

The weight is written twice (the Route 53 Weight and the SRV weight field), the priority
once (the SRV priority field); a changed weight is one UPSERT, and planning again after it
changes nothing. The Route 53 parts run against moto in process.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.aws.route53 import Route53Zone, find_zone, from_wire, to_wire
from ecssd_agent.core.model import Action, Container, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Owner
from ecssd_agent.core.records import host_records, parse_srv, routed, srv_value

ZONE = "servicediscovery.internal."
HOST = Host("ip-10-0-0-12", "10.0.0.12")
TARGET = f"ip-10-0-0-12.{ZONE}"


def instance(weight: int = 1, priority: int = 1) -> ServiceInstance:
    return ServiceInstance("calc", "tcp", 8081, 32768, "ab" * 32, weight=weight, priority=priority)


def srv_of(records: list[RecordSet]) -> RecordSet:
    (srv,) = [r for r in records if r.type == "SRV"]
    return srv


def test_weight_is_the_route53_weight_and_the_srv_weight_priority_the_srv_priority() -> None:
    records, problems = host_records(HOST, [instance(10, 2)], ZONE, Routing.WEIGHTED, 0)
    assert problems == []
    srv = srv_of(records)
    assert srv.weight == 10 and srv.values == (f"2 10 32768 {TARGET}",)
    assert parse_srv(srv.values[0]).weight == 10
    host_a = next(r for r in records if r.type == "A")
    assert host_a.weight == 1  # the host's A record is alone at its name

    records, _ = host_records(HOST, [instance(10, 2)], ZONE, Routing.MULTIVALUE, 0)
    srv = srv_of(records)
    assert srv.weight is None and srv.multivalue  # no Route 53 weight with multivalue ...
    assert srv.values == (f"2 10 32768 {TARGET}",)  # ... the SRV fields carry it to clients


def test_defaults_write_exactly_what_the_reference_wrote() -> None:
    srv = srv_of(host_records(HOST, [instance()], ZONE, Routing.WEIGHTED, 0)[0])
    assert srv.weight == 1 and srv.values == (f"1 1 32768 {TARGET}",)


@pytest.mark.parametrize("weight", [0, 10, 255])
def test_wire_round_trip_keeps_the_weight_even_zero(weight: int) -> None:
    srv = srv_of(host_records(HOST, [instance(weight, 3)], ZONE, Routing.WEIGHTED, 0)[0])
    wire = to_wire(srv)
    assert wire["Weight"] == weight
    assert wire["ResourceRecords"] == [{"Value": f"3 {weight} 32768 {TARGET}"}]
    assert from_wire(wire) == srv


def test_out_of_range_values_are_refused_where_records_are_built() -> None:
    with pytest.raises(ValueError, match="weight 256"):
        routed(f"calc.{ZONE}", "SRV", ["1 1 1 t."], Owner(host="ip-1", container="c", port="1/tcp"),
               Routing.WEIGHTED, 0, 256)
    with pytest.raises(ValueError, match="out of range"):
        srv_value(80, TARGET, priority=65536)
    with pytest.raises(ValueError, match="out of range"):
        srv_value(80, TARGET, weight=-1)


class _Docker:
    def __init__(self) -> None:
        self.weight: str | None = None

    def containers(self) -> list[Container]:
        env = {"SERVICE_8081_NAME": "calc"}
        if self.weight is not None:
            env["SERVICE_8081_WEIGHT"] = self.weight
        return [Container(id="ab" * 32, name="calc", env=env, labels={},
                          ports={"8081/tcp": (32768,)})]


@pytest.fixture
def zone() -> Iterator[Route53Zone]:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        client = boto3.client("route53", region_name="us-east-1")
        client.create_hosted_zone(Name=ZONE, CallerReference="weights",
                                  HostedZoneConfig={"PrivateZone": True},
                                  VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        yield Route53Zone(client, find_zone(client, ZONE))


def test_a_changed_weight_is_one_upsert_and_the_next_sync_changes_nothing(zone: Route53Zone) -> None:
    docker = _Docker()
    agent = Agent(DirectSink(zone), docker, HOST)  # type: ignore[arg-type]
    assert len(agent.sync().changes) == 2  # the host's A record and the SRV, weight 1
    docker.weight = "10"  # e.g. the agent upgraded under a container that already declared it
    changes = agent.sync().changes
    assert [(c.action, c.record.type) for c in changes] == [(Action.UPSERT, "SRV")]
    listed = srv_of([r for r in zone.records() if r.set_identifier])
    assert listed.weight == 10 and listed.values == (f"1 10 32768 {TARGET}",)
    assert agent.sync().requests == 0  # idempotent: the listing equals the desired record

    docker.weight = "0"  # drained: Route 53 answers it only when every weight is 0
    assert [c.action for c in agent.sync().changes] == [Action.UPSERT]
    assert srv_of([r for r in zone.records() if r.set_identifier]).weight == 0
    assert agent.sync().requests == 0

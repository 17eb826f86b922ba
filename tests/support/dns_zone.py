"""A large zone for ``ecssd-dns``'s budget tests and benchmark, written as the agents write it.

``hosts`` hosts, each with its A record and ``per_host`` SRV record sets (weighted, one per
container); services are shared by about 50 hosts each (Route 53 allows 100 weighted record
sets per name and type), so a listing's page boundaries fall inside weighted groups, as in a
real fleet. 150 x 19 is 3,000 record sets (10 pages); 1,000 x 20 is 21,000 (70 pages), over
Route 53's default quota of 10,000 record sets a zone: such a zone is created with the quota
its operator would have asked for (twice what it holds), through ``set_record_limit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Action, Change, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.records import host_records
from tests.support.route53_quotas import RECORD_SETS_PER_ZONE

ZONE = "servicediscovery.internal"
INSTANCES_PER_SERVICE = 50


def host(n: int) -> Host:
    return Host(f"ip-10-{n // 62500}-{n // 250 % 250}-{n % 250}",
                f"10.{n // 62500}.{n // 250 % 250}.{n % 250}")


def fleet_records(hosts: int, per_host: int, zone: str = ZONE + ".") -> list[RecordSet]:
    services = max(1, hosts * per_host // INSTANCES_PER_SERVICE)
    records: list[RecordSet] = []
    for n in range(hosts):
        instances = [ServiceInstance(f"_svc{(n * per_host + c) % services}._tcp", "tcp", 8080,
                                     30000 + c, f"{n:06x}{c:06x}")
                     for c in range(per_host)]
        found, problems = host_records(host(n), instances, zone, Routing.WEIGHTED, 60)
        assert not problems, problems
        records.extend(found)
    return records


def create_zone(r53: Any, ec2: Any, hosts: int, per_host: int,
                set_record_limit: Callable[[str, int], None] | None = None) -> Route53Zone:
    """A private zone named ZONE holding ``fleet_records(hosts, per_host)`` (few requests);
    ``set_record_limit(zone_id, n)`` raises its quota first when it holds more than 10,000."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    r53.create_hosted_zone(Name=ZONE, CallerReference=f"dns-budget-{hosts}-{per_host}",
                           HostedZoneConfig={"PrivateZone": True},
                           VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
    zone = Route53Zone(r53, find_zone(r53, ZONE))
    records = fleet_records(hosts, per_host, zone.zone.name)
    if len(records) > RECORD_SETS_PER_ZONE:
        if set_record_limit is None:
            raise ValueError(f"{len(records)} record sets exceed the zone's quota of "
                             f"{RECORD_SETS_PER_ZONE}: pass set_record_limit")
        set_record_limit(zone.zone.id, 2 * len(records))
    zone.apply([Change(Action.CREATE, r) for r in records])
    return zone

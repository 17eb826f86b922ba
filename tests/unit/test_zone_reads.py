"""Name-scoped zone reads and the fleet read budget, against in-process moto."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import Route53Zone, Zone, find_zone, to_wire
from ecssd_agent.core.model import Action, Change, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import owned_by_host
from ecssd_agent.core.records import host_records
from ecssd_agent.sync.zone_reads import (
    NameRead,
    NameScan,
    ReadSchedule,
    owned_records_by_names,
    read_interval,
    records_at,
    records_under,
    route53_order,
    zone_record_count,
)

ZONE = "sd.internal"
ME = Host("ip-10-0-0-1", "10.0.0.1")


def instance(name: str, n: int) -> ServiceInstance:
    return ServiceInstance(name=name, protocol="tcp", container_port=8081, port=30000 + n,
                           container_id=f"{n:012x}" + "0" * 52)


def records_of(host: Host, *instances: ServiceInstance) -> list[RecordSet]:
    records, problems = host_records(host, instances, ZONE + ".", Routing.WEIGHTED, 0)
    assert problems == []
    return records


@pytest.fixture
def zone():
    with mock_aws():
        clients = Clients(region="us-east-1")
        vpc = boto3.client("ec2", region_name="us-east-1").create_vpc(
            CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        client = clients.client("route53")
        client.create_hosted_zone(Name=ZONE, CallerReference="1",
                                  HostedZoneConfig={"PrivateZone": True},
                                  VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        yield Route53Zone(client, find_zone(client, ZONE)), clients


def populate(zone: Route53Zone, records: list[RecordSet]) -> None:
    zone.apply([Change(Action.CREATE, r) for r in records])


def test_reads_exactly_this_hosts_records_under_shared_names(zone):
    r53, clients = zone
    mine = records_of(ME, instance("_calc._tcp", 1), instance("time", 2))
    others = [r for h in range(2, 40) for r in records_of(
        Host(f"ip-10-0-0-{h}", f"10.0.0.{h}"), instance("_calc._tcp", 100 + h),
        instance("portal", 200 + h))]
    foreign = [RecordSet(f"www.{ZONE}.", "A", ("1.2.3.4",), 300)]
    populate(r53, mine + others + foreign)
    names = {r.name for r in mine}
    before = clients.stats.attempts("ListResourceRecordSets")

    read = owned_records_by_names(r53, names, owned_by_host(ME.label))

    assert sorted(read.records, key=lambda r: r.key) == sorted(mine, key=lambda r: r.key)
    assert read.complete == frozenset(names)
    assert read.requests == clients.stats.attempts("ListResourceRecordSets") - before
    # 3 names, one page each at most; the whole zone (~120 record sets) would be 1 page of
    # 300 too, so compare with a zone-sized page: far fewer records travel.
    assert read.requests <= len(names)


def test_a_name_longer_than_a_page_is_read_across_pages(zone):
    r53, _clients = zone
    hosts = [Host(f"ip-10-0-1-{h}", f"10.0.1.{h}") for h in range(23)]
    everyone = [r for i, h in enumerate(hosts) for r in records_of(h, instance("_web._tcp", i))]
    populate(r53, everyone)
    target = hosts[17]
    name = f"_web._tcp.{ZONE}."

    read = owned_records_by_names(r53, [name], owned_by_host(target.label), max_items=5)

    assert [r.set_identifier for r in read.records] == [
        r.set_identifier for r in everyone if r.name == name and owned_by_host(target.label)(r)]
    assert name in read.complete
    assert read.requests == 5  # 23 record sets of the name at 5 per page


def test_a_name_without_records_is_complete_and_empty(zone):
    r53, _ = zone
    populate(r53, records_of(ME, instance("_calc._tcp", 1)))
    read = owned_records_by_names(r53, [f"nothing-here.{ZONE}"], owned_by_host(ME.label))
    assert read.records == [] and read.complete == frozenset({f"nothing-here.{ZONE}."})
    assert read.requests == 1


def test_names_sharing_a_page_cost_one_request(zone):
    r53, _ = zone
    mine = records_of(ME, *(instance(f"svc{n:02d}", n) for n in range(12)))
    populate(r53, mine)
    read = owned_records_by_names(r53, {r.name for r in mine}, owned_by_host(ME.label))
    assert len(read.complete) == 13 and len(read.records) == 13
    assert read.requests == 1


def test_an_owned_record_seen_in_passing_is_returned_for_planning(zone):
    r53, _ = zone
    stale = records_of(ME, instance("aaa-gone", 9))[1]  # sorts right after the names we read
    current = records_of(ME, instance("aaa", 1))
    populate(r53, [*current, stale])
    read = owned_records_by_names(r53, {r.name for r in current}, owned_by_host(ME.label))
    assert stale in read.records
    assert stale.name not in read.complete


def test_without_owner_every_record_of_the_wanted_names(zone):
    r53, _ = zone
    other = records_of(Host("ip-9", "10.9.9.9"), instance("_calc._tcp", 1))
    populate(r53, other + records_of(ME, instance("_calc._tcp", 2)))
    read = owned_records_by_names(r53, [f"_calc._tcp.{ZONE}."])
    assert len(read.records) == 2 and {r.type for r in read.records} == {"SRV"}


def a_records(names: list[str]) -> list[RecordSet]:
    return [RecordSet(f"{n}.{ZONE}.", "A", (f"10.1.{i // 250}.{i % 250 + 1}",), 60)
            for i, n in enumerate(names)]


def test_a_subtree_is_read_from_its_top_to_the_first_name_outside_it(zone):
    """``task.<zone>``'s names sort together, right after it: a page per 300 of them, and
    none of the names before or after."""
    r53, clients = zone
    inside = [f"t{i:03d}.task" for i in range(350)]
    populate(r53, a_records(["a", "tas", "task-x", *inside, "tb", "zz"]))
    before = clients.stats.attempts("ListResourceRecordSets")

    read = records_under(r53, f"task.{ZONE}")

    assert sorted(r.name for r in read.records) == sorted(f"{n}.{ZONE}." for n in inside)
    assert read.requests == 2 == clients.stats.attempts("ListResourceRecordSets") - before


def test_an_empty_subtree_costs_one_request(zone):
    r53, _ = zone
    populate(r53, a_records(["a", "task-x", "tb", *(f"z{i:03d}" for i in range(400))]))
    read = records_under(r53, f"task.{ZONE}")
    assert read.records == [] and read.requests == 1


def test_records_at_reads_the_whole_zone_only_when_that_is_fewer_pages(zone):
    r53, _ = zone
    populate(r53, a_records([f"n{i:03d}" for i in range(400)]))
    wanted = [f"n{i:03d}.{ZONE}." for i in range(0, 400, 40)]  # 10 names, far apart
    count = zone_record_count(r53)  # 402 with the SOA and NS: two pages

    whole = records_at(r53, wanted, count)
    assert whole.requests == 2 and sorted(r.name for r in whole.records) == sorted(wanted)
    assert whole.complete == set(wanted)
    by_name = records_at(r53, wanted, count, estimate=2)  # two requests by name: equal, by name
    assert sorted(r.name for r in by_name.records) == sorted(wanted)
    assert records_at(r53, wanted[:1], count).requests == 1  # one name: one request


def test_zone_record_count_is_one_request(zone):
    r53, clients = zone
    populate(r53, records_of(ME, instance("a", 1)))
    assert zone_record_count(r53) == 4  # NS, SOA, A, SRV
    assert clients.stats.attempts("GetHostedZone") == 1  # find_zone lists zones by name


def test_api_errors_propagate_never_read_as_empty():
    client = boto3.client("route53", region_name="us-east-1")
    r53 = Route53Zone(client, Zone("Z1", ZONE + ".", True))
    with Stubber(client) as stub:
        stub.add_client_error("list_resource_record_sets", service_error_code="Throttling",
                              http_status_code=400)
        with pytest.raises(ClientError):
            owned_records_by_names(r53, [f"a.{ZONE}"])


def page(records: list[RecordSet], next_name: str | None = None) -> dict:
    out: dict = {"ResourceRecordSets": [to_wire(r) for r in records],
                 "IsTruncated": next_name is not None}
    if next_name:
        out["NextRecordName"] = next_name
    return out


def test_scan_proof_rules_without_any_server():
    a = records_of(ME, instance("a", 1))[1]
    b = records_of(ME, instance("b", 2))[1]
    c = records_of(ME, instance("c", 3))[1]
    scan = NameScan([a.name, c.name], owned_by_host(ME.label))
    assert scan.next_start() == a.name
    # Page ends inside b's run: a is complete (followed by b), the scan need not go on for b.
    assert scan.feed(page([a, b], next_name=b.name)) is False
    assert scan.next_start() == c.name
    # Page ends exactly at c's end: NextRecordName names another record, so c is complete.
    assert scan.feed(page([c], next_name="zzz." + ZONE + ".")) is False
    assert scan.next_start() is None
    result = scan.result()
    assert result.complete == frozenset({a.name, c.name}) and result.requests == 2
    assert {r.name for r in result.records} == {a.name, b.name, c.name}
    with pytest.raises(RuntimeError):
        scan.feed(page([]))


def test_scan_continues_only_for_a_wanted_name_cut_by_the_page_end():
    a1, a2 = (records_of(ME, instance("a", n))[1] for n in (1, 2))
    scan = NameScan([a1.name], owned_by_host(ME.label))
    scan.next_start()
    assert scan.feed(page([a1], next_name=a1.name)) is True
    assert scan.feed(page([a2])) is False
    assert scan.next_start() is None and len(scan.result().records) == 2


def test_merged_into_replaces_complete_names_and_keeps_the_rest():
    a, b = records_of(ME, instance("a", 1))[1], records_of(ME, instance("b", 2))[1]
    a_new = records_of(ME, instance("a", 3))[1]
    read = NameRead([a_new], frozenset({a.name}), 1)
    assert read.merged_into([a, b]) == [a_new, b]


@pytest.mark.parametrize(("zone_records", "own", "cost", "expected"), [
    (42, 21, 3, 300.0),  # 2 hosts: read on every resync
    (21_000, 21, 20, 40_000.0),  # 1,000 hosts x 20 requests at 0.5 req/s
    (2_100_000, 21, 20, 86_400.0),  # capped: drift repair stays within a day
    (10, 0, 0, 300.0),  # nothing owned, nothing read yet
])
def test_read_interval_keeps_the_fleet_within_the_budget(zone_records, own, cost, expected):
    assert read_interval(zone_records, own, cost, floor=300.0, budget=0.5) == expected


def test_read_interval_rejects_a_zero_budget():
    with pytest.raises(ValueError):
        read_interval(1, 1, 1, floor=1, budget=0)


def test_route53_order_reverses_labels():
    assert route53_order("_calc._tcp.sd.internal.") == "internal.sd._tcp._calc"
    names = ["b.sd.internal.", "a.b.sd.internal.", "a.sd.internal."]
    assert sorted(names, key=route53_order) == ["a.sd.internal.", "b.sd.internal.",
                                                "a.b.sd.internal."]


def test_read_schedule_spreads_reads_within_the_interval():
    import random

    schedule = ReadSchedule(floor=300.0, budget=0.5, rng=random.Random(3))
    assert schedule.due(0.0)  # never read: due at once
    schedule.start(100.0, zone_records=21_000, own_records=21, names=20)
    assert schedule.interval == 21_000 / 21 * 21 / 0.5
    assert 100.0 <= schedule.next_at <= 100.0 + schedule.interval
    assert not schedule.due(schedule.next_at - 1) and schedule.due(schedule.next_at)
    schedule.done(1000.0, zone_records=42, own_records=21, cost=3)
    assert schedule.interval == 300.0  # a small fleet reads on every resync
    assert 1000.0 + 225.0 <= schedule.next_at <= 1000.0 + 375.0

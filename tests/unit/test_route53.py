"""The Route 53 adapter: wire format, batching within the limits, paging, zone lookup."""

from __future__ import annotations

import boto3
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError
from botocore.stub import Stubber
from moto import mock_aws

from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import (
    MAX_RECORDS_PER_REQUEST,
    BatchRejected,
    Meaning,
    Route53Zone,
    ZoneError,
    batches,
    change_cost,
    code_meaning,
    error_meaning,
    find_zone,
    from_wire,
    pack,
    to_wire,
)
from ecssd_agent.core.model import Action, Change, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Owner, owned_by_host
from ecssd_agent.core.records import host_records, parse_srv, routed, srv_value
from ecssd_agent.sync.reconcile import NotConverged, converge

ZONE_NAME = "servicediscovery.internal"


def srv(n: int, host: str = "ip-10-0-0-12") -> RecordSet:
    return routed(f"s{n}.{ZONE_NAME}.", "SRV", [srv_value(1000 + n % 60000, f"{host}.{ZONE_NAME}.")],
                  Owner(host=host, container=f"{n:012x}", port="80/tcp"), Routing.WEIGHTED, 0)


def test_wire_round_trip_and_srv_value_is_valid_dns():
    record = srv(7)
    wire = to_wire(record)
    assert wire["SetIdentifier"].startswith("ecssd:h:ip-10-0-0-12:")
    assert wire["Weight"] == 1 and wire["TTL"] == 0
    assert from_wire(wire) == record
    value = record.values[0]
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV, value)
    assert (rdata.priority, rdata.weight, rdata.port, str(rdata.target)) == (
        1, 1, 1007, f"ip-10-0-0-12.{ZONE_NAME}.")
    assert parse_srv(value).port == 1007


def test_multivalue_wire():
    record = routed(f"a.{ZONE_NAME}.", "A", ["10.0.0.1"], Owner(host="h1"), Routing.MULTIVALUE, 5)
    wire = to_wire(record)
    assert wire["MultiValueAnswer"] is True and "Weight" not in wire
    assert from_wire(wire) == record


def test_listed_names_are_unescaped_and_deletes_send_the_listing():
    listed = {"Name": "\\052.Example.COM.", "Type": "A", "TTL": 60, "SetIdentifier": "x",
              "Weight": 3, "ResourceRecords": [{"Value": "1.1.1.1"}], "HealthCheckId": "hc"}
    record = from_wire(listed)
    assert record.name == "*.example.com."
    assert to_wire(record) == listed


@pytest.mark.parametrize("bad", ["1 1 x t.", "1 1 70000 t.", "1 1 80", "garbage"])
def test_parse_srv_rejects(bad):
    with pytest.raises(ValueError):
        parse_srv(bad)


def a_record(n: int) -> RecordSet:
    return routed(f"a{n}.{ZONE_NAME}.", "A", ["10.0.0.1"], Owner(host=f"h{n}"), Routing.WEIGHTED, 0)


def test_batches_respect_record_count_and_upsert_counts_twice():
    creates = [Change(Action.CREATE, a_record(n)) for n in range(2500)]
    assert [len(b) for b in batches(creates)] == [1000, 1000, 500]
    upserts = [Change(Action.UPSERT, a_record(n)) for n in range(1000)]
    assert [len(b) for b in batches(upserts)] == [500, 500]
    assert change_cost(upserts[0])[0] == 2


def test_batches_respect_value_characters():
    long_values = [Change(Action.CREATE, RecordSet(f"t{n}.z.", "TXT", ('"' + "x" * 998 + '"',), 0,
                                                   f"ecssd:h:h{n}", 1)) for n in range(70)]
    sizes = [len(b) for b in batches(long_values)]
    assert sizes == [32, 32, 6]
    for batch in batches(long_values):
        assert sum(change_cost(c)[1] for c in batch) <= 32000


def test_batches_keep_order():
    changes = [Change(Action.DELETE, srv(1)), Change(Action.UPSERT, srv(2)), Change(Action.CREATE, srv(3))]
    assert batches(changes, max_records=2) == [[changes[0]], [changes[1]], [changes[2]]]
    assert MAX_RECORDS_PER_REQUEST == 1000


# --- pack: whole hosts per request -------------------------------------------------------

def creates(count: int, host: str = "h", values: int = 1) -> list[Change]:
    """``count`` CREATEs of one host, each a record set of ``values`` values."""
    return [Change(Action.CREATE, RecordSet(f"{host}-{n}.{ZONE_NAME}.", "A",
                                            tuple(f"10.0.{v // 250}.{v % 250}"
                                                  for v in range(values)), 0, f"ecssd:h:{host}"))
            for n in range(count)]


def test_pack_puts_whole_groups_in_order_into_few_requests() -> None:
    groups = [creates(400, "a"), creates(400, "b"), creates(400, "c"), creates(150, "d"),
              creates(50, "e")]
    # c would half fit after a and b: a group is never split to fill a request.
    assert pack(groups) == [[0, 1], [2, 3, 4]]
    assert pack([]) == []


def test_pack_fills_a_request_exactly_to_the_record_limit() -> None:
    assert pack([creates(600), creates(400), creates(1)]) == [[0, 1], [2]]
    assert pack([creates(600), creates(401)]) == [[0], [1]]


def test_pack_counts_every_value_and_an_upsert_twice() -> None:
    upserts = [Change(Action.UPSERT, c.record) for c in creates(300)]
    assert pack([upserts, upserts]) == [[0], [1]]  # 600 + 600 records
    assert pack([creates(300), creates(300)]) == [[0, 1]]
    assert pack([creates(101, values=5), creates(100, values=5)]) == [[0], [1]]  # 505 + 500
    assert pack([creates(100, values=5), creates(100, values=5), creates(1)]) == [[0, 1], [2]]
    deletes = [Change(Action.DELETE, c.record) for c in creates(500)]
    assert pack([deletes, creates(500)]) == [[0, 1]]  # a DELETE counts once


def test_pack_respects_the_value_characters() -> None:
    def txt(host: str, count: int) -> list[Change]:
        return [Change(Action.CREATE, RecordSet(f"t{n}.{host}.z.", "TXT", ('"' + "x" * 998 + '"',),
                                                0, f"ecssd:h:{host}")) for n in range(count)]

    # 1,000 characters each: 32 fit in 32,000 characters, while far below 1,000 records.
    assert pack([txt("a", 20), txt("b", 12), txt("c", 1)]) == [[0, 1], [2]]
    assert pack([txt("a", 20), txt("b", 13)]) == [[0], [1]]


def test_a_group_too_big_for_one_request_goes_alone() -> None:
    small, big = creates(10, "s"), creates(1500, "big")
    assert pack([small, big, small]) == [[0], [1], [2]]
    assert pack([small, small, big, big, small]) == [[0, 1], [2], [3], [4]]
    assert len(batches(big)) == 2  # apply() then splits it into requests within the limits
    # Empty groups cost nothing and still keep their place.
    assert pack([[], small, []]) == [[0, 1, 2]]


def test_pack_is_greedy_order_preserving_and_within_the_limits() -> None:
    import random

    rng = random.Random(7)
    groups = [creates(rng.choice([0, 1, 5, 40, 200, 333, 999, 1200]), f"h{i}",
                      values=rng.choice([1, 2, 3])) for i in range(60)]
    groups = [[Change(rng.choice(list(Action)), c.record) for c in g] for g in groups]
    packed = pack(groups)
    assert [i for p in packed for i in p] == list(range(len(groups)))  # each once, in order

    def cost(indexes: list[int]) -> tuple[int, int]:
        costs = [change_cost(c) for i in indexes for c in groups[i]]
        return sum(n for n, _ in costs), sum(c for _, c in costs)

    for n, request in enumerate(packed):
        records, chars = cost(request)
        assert len(request) == 1 or (records <= MAX_RECORDS_PER_REQUEST and chars <= 32000)
        if n + 1 < len(packed):  # the next group did not fit: no request is left half empty
            more = cost(request + packed[n + 1][:1])
            assert more[0] > MAX_RECORDS_PER_REQUEST or more[1] > 32000


@pytest.fixture
def r53():
    with mock_aws():
        clients = Clients(region="us-east-1")
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        client = clients.client("route53")
        client.create_hosted_zone(Name=ZONE_NAME, CallerReference="1",
                                  HostedZoneConfig={"PrivateZone": True},
                                  VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        yield clients, client, vpc


def test_apply_batches_and_lists_every_page(r53):
    clients, client, _ = r53
    zone = Route53Zone(client, find_zone(client, ZONE_NAME))
    records = [srv(n) for n in range(1200)]
    requests = zone.apply([Change(Action.CREATE, r) for r in records])
    assert requests == 2
    assert clients.stats.attempts("ChangeResourceRecordSets") == 2
    listed = [r for r in zone.records() if r.set_identifier]
    assert sorted(listed, key=lambda r: r.name) == sorted(records, key=lambda r: r.name)
    # 1200 + NS + SOA record sets at moto's page size of 300 -> 5 pages, all read. SRV values
    # of ~48 characters hit the 32,000-character limit at 666 per request: 2 requests.
    assert clients.stats.attempts("ListResourceRecordSets") >= 4


def test_rejected_batch_raises_and_converge_replans(r53):
    _, client, _ = r53
    zone = Route53Zone(client, find_zone(client, ZONE_NAME))
    owns = owned_by_host("ip-10-0-0-12")
    zone.apply([Change(Action.CREATE, srv(1))])
    with pytest.raises(BatchRejected):  # a duplicate CREATE: the zone is not as planned
        zone.apply([Change(Action.CREATE, srv(1))])

    reads = []

    def stale_then_fresh():
        reads.append(1)
        return [] if len(reads) == 1 else list(zone.records())  # first read misses srv(1)

    outcome = converge(zone, [srv(1), srv(2)], owns, read=stale_then_fresh)
    assert outcome.attempts == 2
    assert [c.record.name for c in outcome.changes] == [srv(2).name]
    assert converge(zone, [srv(1), srv(2)], owns).requests == 0


def test_converge_gives_up_when_always_rejected(r53):
    _, client, _ = r53
    zone = Route53Zone(client, find_zone(client, ZONE_NAME))
    zone.apply([Change(Action.CREATE, srv(1))])
    with pytest.raises(NotConverged):
        converge(zone, [srv(1)], owned_by_host("ip-10-0-0-12"), read=lambda: [], attempts=2)


def test_dry_run_changes_nothing(r53):
    clients, client, _ = r53
    zone = Route53Zone(client, find_zone(client, ZONE_NAME))
    assert zone.apply([Change(Action.CREATE, srv(1))], dry_run=True) == 0
    assert clients.stats.attempts("ChangeResourceRecordSets") == 0


def test_find_zone_by_name_id_and_vpc(r53):
    _, client, vpc = r53
    zone = find_zone(client, ZONE_NAME)
    assert zone.name == ZONE_NAME + "." and zone.private
    assert find_zone(client, "ignored", zone_id=zone.id) == zone
    with pytest.raises(ZoneError, match=r"no private hosted zone named nothere\.internal\."):
        find_zone(client, "nothere.internal")

    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc2 = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    client.create_hosted_zone(Name=ZONE_NAME, CallerReference="2", HostedZoneConfig={"PrivateZone": True},
                              VPC={"VPCRegion": "us-east-1", "VPCId": vpc2})
    with pytest.raises(ZoneError) as err:
        find_zone(client, ZONE_NAME)
    message = str(err.value)
    assert "2 private hosted zones" in message and vpc in message and vpc2 in message
    assert "--hosted-zone-id" in message
    assert find_zone(client, ZONE_NAME, vpc_id=vpc2).id != zone.id
    assert find_zone(client, ZONE_NAME, vpc_id=vpc).id == zone.id


def test_cloud_map_zone_is_refused_clearly():
    client = boto3.client("route53", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response("list_hosted_zones_by_name", {
        "HostedZones": [{"Id": "/hostedzone/Z1", "Name": "sd.internal.", "CallerReference": "c",
                         "Config": {"PrivateZone": True},
                         "LinkedService": {"ServicePrincipal": "servicediscovery.amazonaws.com"}}],
        "IsTruncated": False, "MaxItems": "100"})
    with stub, pytest.raises(ZoneError, match="Cloud Map"):
        find_zone(client, "sd.internal")


def test_host_records_skip_names_too_long_for_the_zone():
    long_name = ".".join(["a" * 60] * 3) + "." + "b" * 50  # 233 chars: valid alone, not in the zone
    good = ServiceInstance("calc", "tcp", 80, 1000, "a" * 64)
    bad = ServiceInstance(long_name, "tcp", 81, 1001, "a" * 64, container_name="web")
    records, problems = host_records(Host("ip-1", "10.0.0.1"), [good, bad], ZONE_NAME + ".",
                                     Routing.WEIGHTED, 0)
    assert [r.type for r in records] == ["A", "SRV"]
    assert len(problems) == 1 and "SERVICE_81_NAME" in str(problems[0])


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ChangeResourceRecordSets")


@pytest.mark.parametrize("exc,kind,code", [
    (client_error("Throttling"), Meaning.THROTTLED, "Throttling"),
    (client_error("ThrottlingException"), Meaning.THROTTLED, "ThrottlingException"),
    (client_error("PriorRequestNotComplete"), Meaning.RETRY, "PriorRequestNotComplete"),
    (client_error("InvalidChangeBatch"), Meaning.REFUSED, "InvalidChangeBatch"),
    (client_error("AccessDenied", 403), Meaning.REFUSED, "AccessDenied"),
    (client_error("ServiceUnavailable", 503), Meaning.UNKNOWN, "ServiceUnavailable"),
    (client_error("InternalError", 500), Meaning.UNKNOWN, "InternalError"),
    (client_error("", 502), Meaning.UNKNOWN, "HTTP 502"),
    (ReadTimeoutError(endpoint_url="https://route53"), Meaning.UNKNOWN, "ReadTimeoutError"),
    (EndpointConnectionError(endpoint_url="https://route53"), Meaning.UNKNOWN,
     "EndpointConnectionError"),
    (NoCredentialsError(), Meaning.REFUSED, "NoCredentialsError"),
])
def test_what_a_route53_error_means(exc, kind, code):
    """One reading of an error for every writer: the daemon (definite: keep the known state,
    retry soon; throttled: back pressure), the zone writer (retryable), the fleet model."""
    meaning = error_meaning(exc)
    assert (meaning.kind, meaning.code) == (kind, code)
    assert meaning.retryable == (kind is not Meaning.REFUSED)
    assert meaning.not_applied == (kind is not Meaning.UNKNOWN)
    assert meaning.definite == (kind in (Meaning.THROTTLED, Meaning.RETRY))
    if isinstance(exc, ClientError):  # the daemon's throttling watch sees the bare code
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        assert code_meaning(exc.response["Error"]["Code"], status) == meaning

"""The test world's Route 53 itself: boto3 over HTTP to the session's moto server.

Each quota refused with Route 53's code and words, one short of it accepted; a refused batch
changes nothing; a record set re-created after its delete; a DELETE removing exactly the
record set it names; GetHostedZoneLimit; weighted alias record sets round-tripping; pages
continuing inside one name's record sets. (The wording and its sources:
tests/support/route53_quotas.py.)
"""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tests.support import strict_route53
from tests.support.moto_server import MotoServer

ZONE = "sd.internal."


class Zone:
    def __init__(self, aws: MotoServer) -> None:
        self.r53 = aws.client("route53")
        self.aws = aws
        self.id = self.r53.create_hosted_zone(
            Name=ZONE, CallerReference=uuid.uuid4().hex,
            HostedZoneConfig={"PrivateZone": True},
            VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-1"})["HostedZone"]["Id"].split("/")[-1]

    def change(self, *changes: tuple[str, dict[str, Any]]) -> None:
        self.r53.change_resource_record_sets(HostedZoneId=self.id, ChangeBatch={"Changes": [
            {"Action": action, "ResourceRecordSet": rrset} for action, rrset in changes]})

    def refused(self, *changes: tuple[str, dict[str, Any]]) -> tuple[str, str]:
        """(code, message) of the refusal; the zone must be as it was."""
        before = self.listed()
        with pytest.raises(ClientError) as refusal:
            self.change(*changes)
        assert self.listed() == before
        error = refusal.value.response["Error"]
        return error["Code"], error["Message"]

    def listed(self, **kwargs: Any) -> list[dict[str, Any]]:
        pages = self.r53.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=self.id, **kwargs)
        return [rrset for page in pages for rrset in page["ResourceRecordSets"]]

    def names(self) -> list[tuple[str, str, str | None]]:
        return [(r["Name"], r["Type"], r.get("SetIdentifier")) for r in self.listed()
                if r["Type"] not in ("NS", "SOA")]

    def limit(self) -> tuple[int, int]:
        answer = self.r53.get_hosted_zone_limit(Type="MAX_RRSETS_BY_ZONE", HostedZoneId=self.id)
        assert answer["Limit"]["Type"] == "MAX_RRSETS_BY_ZONE"
        return answer["Limit"]["Value"], answer["Count"]


@pytest.fixture
def zone(aws: MotoServer) -> Zone:
    return Zone(aws)


def srv(name: str, ident: str, port: int = 80, weight: int = 1) -> dict[str, Any]:
    return {"Name": f"{name}.{ZONE}", "Type": "SRV", "TTL": 0, "SetIdentifier": ident,
            "Weight": weight, "ResourceRecords": [{"Value": f"1 1 {port} h.{ZONE}"}]}


def a(name: str, ident: str | None = None, *ips: str, **routing: Any) -> dict[str, Any]:
    rrset: dict[str, Any] = {"Name": f"{name}.{ZONE}", "Type": "A", "TTL": 60,
                             "ResourceRecords": [{"Value": ip} for ip in ips or ("10.0.0.1",)]}
    if ident is not None:
        rrset["SetIdentifier"] = ident
    return {**rrset, **routing}


def txt(name: str, *values: str) -> dict[str, Any]:
    return {"Name": f"{name}.{ZONE}", "Type": "TXT", "TTL": 60,
            "ResourceRecords": [{"Value": v} for v in values]}


def alias(name: str, ident: str, target: str, zone: Zone, rtype: str = "SRV",
          weight: int = 1) -> dict[str, Any]:
    return {"Name": f"{name}.{ZONE}", "Type": rtype, "SetIdentifier": ident, "Weight": weight,
            "AliasTarget": {"HostedZoneId": zone.id, "DNSName": f"{target}.{ZONE}",
                            "EvaluateTargetHealth": False}}


# --- per name and type: 100 routed record sets, 400 values ---------------------------------

def test_the_100th_weighted_record_set_is_accepted_and_the_101st_refused(zone: Zone) -> None:
    zone.change(*[("CREATE", srv("big", f"h{n}", 1000 + n)) for n in range(99)])
    zone.change(("CREATE", srv("big", "h99", 1099)))  # the 100th
    code, message = zone.refused(("CREATE", srv("big", "h100", 1100)))
    assert (code, message) == ("InvalidChangeBatch", "[Exceeded limit on number of weighted "
                                                     f"RRSets for big.{ZONE}, type SRV in this zone.]")
    # the quota is per name and type: the same name's A record sets and another name are free
    zone.change(("CREATE", a("big", "x", Weight=1)), ("CREATE", srv("other", "h100")))
    # one out, one in, in one batch: still 100
    zone.change(("DELETE", srv("big", "h0", 1000)), ("CREATE", srv("big", "h100", 1100)))


def test_the_101st_multivalue_record_set_is_refused(zone: Zone) -> None:
    zone.change(*[("CREATE", a("mv", f"h{n}", f"10.0.{n // 250}.{n % 250}", MultiValueAnswer=True))
                  for n in range(100)])
    code, message = zone.refused(("CREATE", a("mv", "h100", "10.1.0.1", MultiValueAnswer=True)))
    assert code == "InvalidChangeBatch"
    assert message == (f"[Exceeded limit on number of multivalue answer RRSets for mv.{ZONE}, "
                       "type A in this zone.]")


def test_a_batch_over_the_quota_is_refused_whole(zone: Zone) -> None:
    code, message = zone.refused(*[("CREATE", srv("big", f"h{n}", 1000 + n)) for n in range(101)])
    assert code == "InvalidChangeBatch"
    assert message == f"[Exceeded limit on number of weighted RRSets for big.{ZONE}, type SRV in this zone.]"
    assert zone.names() == []


def test_400_values_in_a_record_set_are_accepted_and_401_refused(zone: Zone) -> None:
    ips = [f"10.0.{n // 200}.{n % 200}" for n in range(401)]
    zone.change(("CREATE", a("many", None, *ips[:400])))
    code, message = zone.refused(("UPSERT", a("many", None, *ips)))
    assert (code, message) == ("InvalidChangeBatch", "[Cannot have more than 400 records in a RRSet.]")


# --- per request: 1,000 ResourceRecord elements, 32,000 characters, an UPSERT twice --------

def ips(prefix: int, count: int) -> list[str]:
    return [f"10.{prefix}.{n // 250}.{n % 250}" for n in range(count)]


def test_1000_resource_records_per_request_and_an_upsert_counts_twice(zone: Zone) -> None:
    four = [("CREATE", a(f"n{i}", None, *ips(i, 250))) for i in range(4)]
    code, message = zone.refused(*four, ("CREATE", a("n4", None, "10.9.9.9")))
    assert (code, message) == ("InvalidChangeBatch", "[Number of records limit of 1000 exceeded.]")
    zone.change(*four)  # exactly 1,000
    two = [("UPSERT", a(f"n{i}", None, *ips(i + 10, 250))) for i in range(2)]
    code, message = zone.refused(*two, ("UPSERT", a("n2", None, "10.9.9.9")))  # 1,002
    assert message == "[Number of records limit of 1000 exceeded.]"
    zone.change(*two)  # 500 values, counted 1,000


def test_an_alias_counts_as_one_resource_record(zone: Zone) -> None:
    zone.change(("CREATE", srv("target", "t")))
    four = [("CREATE", a(f"n{i}", None, *ips(i, 250 if i < 3 else 249))) for i in range(4)]
    tail = ("CREATE", alias("top", "x", "target", zone))
    assert zone.refused(*four, tail, ("CREATE", a("n9", None, "10.9.9.9")))[1] == (
        "[Number of records limit of 1000 exceeded.]")
    zone.change(*four, tail)  # 999 values and one alias


def test_32000_characters_of_values_per_request_and_an_upsert_counts_twice(zone: Zone) -> None:
    value = '"' + "x" * 248 + '"'  # 250 characters
    full = [value] * 128  # 32,000 characters
    code, message = zone.refused(("CREATE", txt("t", *full)), ("CREATE", txt("u", '"y"')))
    assert (code, message) == ("InvalidChangeBatch", "[RDATA character limit of 32000 exceeded.]")
    zone.change(("CREATE", txt("t", *full)))
    assert zone.refused(("UPSERT", txt("t", *full[:64], '"y"')))[1] == (
        "[RDATA character limit of 32000 exceeded.]")
    zone.change(("UPSERT", txt("t", *full[:64])))  # 16,000 characters, counted 32,000


# --- the zone's record-set quota and GetHostedZoneLimit ------------------------------------

def test_the_zone_quota_is_read_with_get_hosted_zone_limit_and_enforced(zone: Zone, aws: MotoServer) -> None:
    assert zone.limit() == (10_000, 2)  # the default quota; NS and SOA count
    aws.set_zone_record_limit(zone.id, 5)
    assert zone.limit() == (5, 2)
    zone.change(*[("CREATE", srv("s", f"h{n}")) for n in range(3)])
    assert zone.limit() == (5, 5)
    code, message = zone.refused(("CREATE", srv("s", "h3")))
    assert (code, message) == ("InvalidChangeBatch",
                               f"[Exceeded limit MAX_RRSETS_BY_ZONE for zone: {zone.id}]")
    zone.change(("DELETE", srv("s", "h0")), ("CREATE", srv("s", "h3")))  # no more than before
    aws.set_zone_record_limit(zone.id, None)
    assert zone.limit() == (10_000, 5)


def test_get_hosted_zone_limit_of_a_missing_zone_and_of_vpcs(zone: Zone) -> None:
    answer = zone.r53.get_hosted_zone_limit(Type="MAX_VPCS_ASSOCIATED_BY_ZONE", HostedZoneId=zone.id)
    assert (answer["Limit"]["Value"], answer["Count"]) == (300, 1)
    with pytest.raises(ClientError) as missing:
        zone.r53.get_hosted_zone_limit(Type="MAX_RRSETS_BY_ZONE", HostedZoneId="ZNOSUCHZONE")
    assert missing.value.response["Error"]["Code"] == "NoSuchHostedZone"


# --- identity: create, delete exactly -------------------------------------------------------

def test_a_deleted_record_set_can_be_created_again(zone: Zone) -> None:
    """moto 5.2 refuses this ("already exists") when any record set sorts after it."""
    zone.change(("CREATE", srv("a", "h1")), ("CREATE", srv("z", "h2")))
    zone.change(("DELETE", srv("a", "h1")))
    zone.change(("CREATE", srv("a", "h1")))
    assert zone.names() == [(f"a.{ZONE}", "SRV", "h1"), (f"z.{ZONE}", "SRV", "h2")]
    code, message = zone.refused(("CREATE", srv("a", "h1")))
    assert (code, message) == ("InvalidChangeBatch", "[Tried to create resource record set "
                               f"[name='a.{ZONE}', type='SRV', set-identifier='h1'] but it already exists]")


def test_a_delete_removes_only_the_record_set_it_names(zone: Zone) -> None:
    """An awsvpc service's SRV record set and its task's A record set share a SetIdentifier;
    moto 5.2 deletes both when one is deleted."""
    shared = "ecssd:t:task-1"
    zone.change(("CREATE", srv("_calc._tcp", shared)), ("CREATE", a("task-1", shared, Weight=1)))
    zone.change(("DELETE", srv("_calc._tcp", shared)))
    assert zone.names() == [(f"task-1.{ZONE}", "A", shared)]


def test_a_delete_must_name_an_existing_record_set_with_its_values(zone: Zone) -> None:
    zone.change(("CREATE", srv("a", "h1", 80)))
    code, message = zone.refused(("CREATE", srv("b", "h1")), ("DELETE", srv("a", "h1", 81)),
                                 ("DELETE", srv("c", "h1")))
    assert code == "InvalidChangeBatch"
    assert message == (
        f"[Tried to delete resource record set [name='a.{ZONE}', type='SRV', set-identifier='h1'] "
        "but the values provided do not match the current values, "
        f"Tried to delete resource record set [name='c.{ZONE}', type='SRV', set-identifier='h1'] "
        "but it was not found]")
    zone.change(("DELETE", srv("a", "h1", 80)), ("CREATE", srv("a", "h1", 81)))  # a swap
    assert zone.refused(("DELETE", srv("a", "h1", 81)), ("DELETE", srv("a", "h1", 81)))[1] == (
        f"[Tried to delete resource record set [name='a.{ZONE}', type='SRV', set-identifier='h1'] "
        "but it was not found]")


def test_values_are_compared_in_any_order_and_names_in_any_case(zone: Zone) -> None:
    zone.change(("CREATE", a("multi", None, "10.0.0.1", "10.0.0.2")))
    zone.change(("DELETE", {**a("multi", None, "10.0.0.2", "10.0.0.1"), "Name": f"MULTI.{ZONE}"}))
    assert zone.names() == []


# --- routing policies, CNAMEs ---------------------------------------------------------------

def test_a_simple_and_routed_record_sets_of_one_name_and_type_do_not_mix(zone: Zone) -> None:
    zone.change(("CREATE", a("plain", None)))
    code, message = zone.refused(("CREATE", a("plain", "h1", Weight=1)))
    assert (code, message) == ("InvalidChangeBatch", f"[RRSet with DNS name plain.{ZONE}, type A, "
                               "SetIdentifier h1 cannot be created as a non-weighted set exists "
                               "with the same name and type.]")
    zone.change(("CREATE", a("routed", "h1", Weight=1)))
    assert zone.refused(("CREATE", a("routed", None)))[1] == (
        f"[RRSet with DNS name routed.{ZONE}, type A cannot be created as weighted sets exist "
        "with the same name and type.]")
    assert zone.refused(("CREATE", a("routed", "h2", MultiValueAnswer=True)))[1] == (
        f"[RRSet with DNS name routed.{ZONE}, type A, SetIdentifier h2 cannot be created as "
        "weighted sets exist with the same name and type.]")
    zone.change(("UPSERT", a("routed", "h1", "10.0.0.9", Weight=2)))  # replacing itself is fine


def test_a_cname_does_not_share_its_name(zone: Zone) -> None:
    zone.change(("CREATE", a("host", None)))
    cname = {"Name": f"host.{ZONE}", "Type": "CNAME", "TTL": 60,
             "ResourceRecords": [{"Value": "elsewhere.example."}]}
    assert zone.refused(("CREATE", cname))[1] == (
        f"[RRSet of type CNAME with DNS name host.{ZONE} is not permitted as it conflicts with "
        f"other records with the same DNS name in zone {ZONE}]")


def test_a_weight_over_255_is_invalid_input(zone: Zone) -> None:
    code, message = zone.refused(("CREATE", srv("a", "h1", weight=256)))
    assert code == "InvalidInput" and "maxInclusive '255'" in message
    zone.change(("CREATE", srv("a", "h1", weight=255)))


# --- weighted alias record sets (Route 53's "Managing over 100 weighted records") ----------

def test_weighted_alias_record_sets_round_trip(zone: Zone) -> None:
    zone.change(*[("CREATE", srv(f"calc-{part}", f"h{n}", 1000 + n))
                  for part in "ab" for n in range(3)],
                ("CREATE", a("calc-a", "a", Weight=1)))
    zone.change(("CREATE", alias("calc", "part-a", "calc-a", zone, weight=200)),
                ("CREATE", alias("calc", "part-b", "calc-b", zone, weight=55)),
                ("CREATE", alias("calc", "part-a", "calc-a", zone, rtype="A")))
    top = [r for r in zone.listed(StartRecordName=f"calc.{ZONE}") if r["Name"] == f"calc.{ZONE}"]
    assert [(r["Type"], r["SetIdentifier"], r["Weight"], r["AliasTarget"]["DNSName"]) for r in top] == [
        ("A", "part-a", 1, f"calc-a.{ZONE}"),
        ("SRV", "part-a", 200, f"calc-a.{ZONE}"), ("SRV", "part-b", 55, f"calc-b.{ZONE}")]
    assert all("TTL" not in r and "ResourceRecords" not in r for r in top)
    assert all(r["AliasTarget"]["HostedZoneId"] == zone.id for r in top)
    zone.change(("DELETE", top[2]))  # exactly as listed
    assert [(n, t, i) for n, t, i in zone.names() if n == f"calc.{ZONE}"] == [
        (f"calc.{ZONE}", "A", "part-a"), (f"calc.{ZONE}", "SRV", "part-a")]
    assert len([n for n, t, i in zone.names() if n == f"calc-b.{ZONE}"]) == 3  # its targets stay
    changed = {**top[1], "Weight": 9}
    assert "do not match" in zone.refused(("DELETE", changed))[1]


def test_an_alias_to_a_missing_target_is_refused(zone: Zone) -> None:
    zone.change(("CREATE", srv("there", "h1")))
    code, message = zone.refused(("CREATE", alias("calc", "p", "nowhere", zone)))
    assert (code, message) == ("InvalidChangeBatch", "[Tried to create an alias that targets "
                               f"nowhere.{ZONE}, type SRV in zone {zone.id}, but that target was not found]")
    assert "not found" in zone.refused(("CREATE", alias("calc", "p", "there", zone, rtype="A")))[1]
    outside = alias("calc", "p", "there", zone)
    outside["AliasTarget"]["DNSName"] = "there.example.com."
    assert "does not lie within the target zone" in zone.refused(("CREATE", outside))[1]
    # the target first, then the alias, in one batch
    zone.change(("CREATE", srv("later", "h1")), ("CREATE", alias("calc", "p", "later", zone)))


# --- listing ------------------------------------------------------------------------------------

def test_pages_continue_inside_one_names_record_sets(zone: Zone) -> None:
    zone.change(*[("CREATE", srv("big", f"h{n:03d}", 1000 + n)) for n in range(100)],
                *[("CREATE", srv("big2", f"h{n:03d}", 1000 + n)) for n in range(100)])
    listed = zone.listed(PaginationConfig={"PageSize": 30})
    keys = [(r["Name"], r["SetIdentifier"]) for r in listed if r["Type"] == "SRV"]
    assert len(keys) == len(set(keys)) == 200


# --- in-process moto (mock_aws) is the same Route 53 -------------------------------------------

def test_in_process_moto_is_strict_too() -> None:
    with mock_aws():
        r53 = boto3.client("route53", region_name="us-east-1")
        zone_id = r53.create_hosted_zone(Name=ZONE, CallerReference="1")["HostedZone"]["Id"]
        strict_route53.set_zone_record_limit(zone_id, 3)
        assert r53.get_hosted_zone_limit(Type="MAX_RRSETS_BY_ZONE", HostedZoneId=zone_id)[
            "Limit"]["Value"] == 3
        with pytest.raises(ClientError) as refusal:
            r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
                {"Action": "CREATE", "ResourceRecordSet": srv("s", f"h{n}")} for n in range(2)]})
        assert refusal.value.response["Error"]["Message"].startswith(
            "[Exceeded limit MAX_RRSETS_BY_ZONE for zone: ")

"""The ownership scheme: SetIdentifiers round-trip exactly, and nothing else parses as ours."""

from __future__ import annotations

import pytest

from ecssd_agent.core import naming
from ecssd_agent.core.model import Owner

OWNERS = [
    Owner(host="ip-10-0-0-12"),
    Owner(host="ip-10-0-0-12", container="abcdef012345", port="8081/tcp"),
    Owner(host="ip-10-0-0-12", container="abcdef012345", port="53/udp", cluster="prod",
          task="0123456789abcdef0123456789abcdef"),
    Owner(host="h", container="abcdef012345", port="1/tcp", cluster="a_b-c", task="t"),
    Owner(kind="t", cluster="prod", task="0123456789abcdef0123456789abcdef", port="8080/tcp"),
]


@pytest.mark.parametrize("owner", OWNERS, ids=str)
def test_round_trip(owner):
    ident = naming.set_identifier(owner)
    assert len(ident) <= 128
    assert naming.parse_set_identifier(ident) == owner


def test_long_cluster_is_carried_as_a_digest():
    cluster = "c" * 255
    owner = Owner(host="i-" + "1" * 38, container="abcdef012345", port="65535/udp",
                  cluster=cluster, task="0123456789abcdef0123456789abcdef")
    ident = naming.set_identifier(owner)
    assert len(ident) <= 128
    parsed = naming.parse_set_identifier(ident)
    assert parsed is not None and parsed.host == owner.host and parsed.task == owner.task
    assert naming.cluster_matches(parsed.cluster, cluster)
    assert not naming.cluster_matches(parsed.cluster, "other")


@pytest.mark.parametrize("ident", [
    None, "", "i-0123", "ecssd", "ecssd:", "ecssd:h", "ecssd:h:", "ecssd:x:host",
    "ecssd:h:ip-1:abc",  # wrong field count
    "ecssd:h:ip-1::8081/tcp::",  # no container
    "ecssd:h:ip-1:abcdef012345:8081:c:t",  # port without protocol
    "ecssd:h:ip-1:abcdef012345:8081/sctp:c:t",
    "ecssd:h:IP-1",  # we never write uppercase hosts
    "ecssd:h:-bad",
    "ecssd:t::task:80/tcp",  # task record without cluster
    "ecssd:h:ip-1 ",  # trailing space
    "myecssd:h:ip-1",
    "ecssd:h:ip-1:abcdef012345:8081/tcp:c:t:extra",
    "ecssd:h:" + "a" * 130,
])
def test_foreign_identifiers_are_not_ours(ident):
    assert naming.parse_set_identifier(ident) is None


def test_absurd_identity_is_a_clear_error():
    owner = Owner(host="h" * 63, container="abcdef012345", port="65535/udp", cluster="c" * 255,
                  task="0123456789abcdef0123456789abcdef")
    with pytest.raises(naming.InvalidName, match="longer than 128"):
        naming.set_identifier(owner)


def test_prefix_of_another_host_is_not_this_host():
    # The reference matched owners by hostname prefix, so host "ip-1" owned "ip-10"'s records.
    assert naming.parse_set_identifier("ecssd:h:ip-10") == Owner(host="ip-10")
    assert naming.parse_set_identifier("ecssd:h:ip-10") != Owner(host="ip-1")


@pytest.mark.parametrize("relative,zone,expected", [
    ("calc", "servicediscovery.internal.", "calc.servicediscovery.internal."),
    ("_calc._tcp", "servicediscovery.internal.", "_calc._tcp.servicediscovery.internal."),
    ("CALC", "sd.internal.", "calc.sd.internal."),
    ("calc.sd.internal", "sd.internal.", "calc.sd.internal."),
    ("calc.sd.internal.", "sd.internal.", "calc.sd.internal."),
])
def test_record_name(relative, zone, expected):
    assert naming.record_name(relative, zone) == expected


@pytest.mark.parametrize("relative,zone,fragment", [
    ("calc.other.", "sd.internal.", "not in the zone"),
    ("sd.internal", "sd.internal.", "apex"),
    ("a" * 64, "sd.internal.", "invalid label"),
    ("a..b", "sd.internal.", "invalid label"),
    ("-a", "sd.internal.", "invalid label"),
    (".".join(["a" * 60] * 4), "sd.internal.", "longer than 253"),
])
def test_record_name_rejects(relative, zone, fragment):
    with pytest.raises(naming.InvalidName, match=fragment):
        naming.record_name(relative, zone)


def test_host_label_and_ids():
    assert naming.host_label("ip-10-0-0-12.ec2.internal") == "ip-10-0-0-12"
    assert naming.host_label("MyHost") == "myhost"
    with pytest.raises(naming.InvalidName):
        naming.host_label("_bad.example")
    assert naming.task_id("arn:aws:ecs:us-east-1:1:task/prod/abc") == "abc"
    assert naming.task_id("arn:aws:ecs:us-east-1:1:task/abc") == "abc"
    assert naming.cluster_name("arn:aws:ecs:us-east-1:1:cluster/prod") == "prod"
    assert naming.cluster_name("prod") == "prod"

"""Ownership: SetIdentifiers round-trip exactly, nothing else parses as ours, and each
writer's ownership test accepts exactly its own record sets."""

from __future__ import annotations

import pytest

from ecssd_agent.core import naming, ownership
from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Kind, Owner

OWNERS = [
    Owner(host="ip-10-0-0-12"),
    Owner(host="ip-10-0-0-12", container="abcdef012345", port="8081/tcp"),
    Owner(host="ip-10-0-0-12", container="abcdef012345", port="53/udp", cluster="prod",
          task="0123456789abcdef0123456789abcdef"),
    Owner(host="h", container="abcdef012345", port="1/tcp", cluster="a_b-c", task="t"),
    Owner(kind=Kind.TASK, cluster="prod", task="0123456789abcdef0123456789abcdef", port="8080/tcp"),
]


@pytest.mark.parametrize("owner", OWNERS, ids=str)
def test_round_trip(owner):
    ident = ownership.set_identifier(owner)
    assert len(ident) <= 128
    assert ownership.parse_set_identifier(ident) == owner


def test_long_cluster_is_carried_as_a_digest():
    cluster = "c" * 255
    owner = Owner(host="i-" + "1" * 38, container="abcdef012345", port="65535/udp",
                  cluster=cluster, task="0123456789abcdef0123456789abcdef")
    ident = ownership.set_identifier(owner)
    assert len(ident) <= 128
    parsed = ownership.parse_set_identifier(ident)
    assert parsed is not None and parsed.host == owner.host and parsed.task == owner.task
    assert ownership.cluster_matches(parsed.cluster, cluster)
    assert not ownership.cluster_matches(parsed.cluster, "other")


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
    assert ownership.parse_set_identifier(ident) is None


def test_absurd_identity_is_a_clear_error():
    owner = Owner(host="h" * 63, container="abcdef012345", port="65535/udp", cluster="c" * 255,
                  task="0123456789abcdef0123456789abcdef")
    with pytest.raises(naming.InvalidName, match="longer than 128"):
        ownership.set_identifier(owner)


def test_prefix_of_another_host_is_not_this_host():
    # The reference matched owners by hostname prefix, so host "ip-1" owned "ip-10"'s records.
    assert ownership.parse_set_identifier("ecssd:h:ip-10") == Owner(host="ip-10")
    assert ownership.parse_set_identifier("ecssd:h:ip-10") != Owner(host="ip-1")


def record(owner: Owner | None, name: str = "x.sd.internal.", rtype: str = "A") -> RecordSet:
    ident = ownership.set_identifier(owner) if owner is not None else None
    return RecordSet(name, rtype, ("10.0.0.1",), 0, ident, 1)


HOST_A = Owner(host="ip-10-0-0-1")
SERVICE_A = Owner(host="ip-10-0-0-1", container="abcdef012345", port="80/tcp")
HOST_B = Owner(host="ip-10-0-0-2")
TASK = Owner(kind=Kind.TASK, cluster="prod", task="abc", port="80/tcp")
TASK_A = Owner(kind=Kind.TASK, cluster="prod", task="abc")
OTHER_TASK = Owner(kind=Kind.TASK, cluster="prod", task="def")


@pytest.mark.parametrize("owns,accepted", [
    (ownership.owned_by_host("ip-10-0-0-1"), {HOST_A, SERVICE_A}),
    (ownership.owned_by_hosts(["ip-10-0-0-1", "ip-10-0-0-2"]), {HOST_A, SERVICE_A, HOST_B}),
    (ownership.owned_by_task("prod", "abc"), {TASK, TASK_A}),
    (ownership.owned_by_tasks(), {TASK, TASK_A, OTHER_TASK}),
    (ownership.either(ownership.owned_by_host("ip-10-0-0-2"), ownership.owned_by_task("prod", "def")),
     {HOST_B, OTHER_TASK}),
])
def test_each_writer_owns_exactly_its_record_sets(owns, accepted):
    everyone = [HOST_A, SERVICE_A, HOST_B, TASK, TASK_A, OTHER_TASK]
    assert {o for o in everyone if owns(record(o))} == accepted
    assert not owns(record(None))  # a record set without a SetIdentifier is never ours


def test_the_fixed_record_is_owned_by_whichever_task_holds_it():
    owns = ownership.owned_fixed_record("xray.sd.internal.")
    assert owns(record(TASK_A, "xray.sd.internal."))
    assert owns(record(OTHER_TASK, "xray.sd.internal."))
    assert not owns(record(TASK_A, "other.sd.internal."))  # another name
    assert not owns(record(TASK, "xray.sd.internal."))  # a service's port record
    assert not owns(record(HOST_A, "xray.sd.internal."))  # an agent's
    assert not owns(record(TASK_A, "xray.sd.internal.", "SRV"))


def test_the_kind_is_the_set_identifiers_second_field():
    assert ownership.set_identifier(HOST_A).split(":")[1] == Kind.HOST.value == "h"
    assert ownership.set_identifier(TASK).split(":")[1] == Kind.TASK.value == "t"
    assert ownership.parse_set_identifier("ecssd:t:prod:abc:80/tcp") == TASK
    assert ownership.owner_of(record(TASK)) == TASK

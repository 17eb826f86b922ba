"""The queued mode's state: the pure rules of ``host_state`` and the DynamoDB ``HostStore``.

The pure rules decide when the zone writer may trust its own knowledge instead of reading
Route 53 (``needs_read``) and guard invariant 1 (``plan_host``, ``split_by_host``); the store
must give back exactly what was put in (a DELETE needs the listed form) at DynamoDB's batch
limits, retrying its partial answers and never reading "unprocessed" as "absent".
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import (
    EXPIRE_AFTER,
    MAX_ROUNDS,
    HostStore,
    StoreError,
    _records_out,
)
from ecssd_agent.aws.route53 import from_wire, to_wire
from ecssd_agent.core import ownership
from ecssd_agent.core.host_state import (
    Applied,
    Published,
    after,
    latest,
    names_to_read,
    needs_read,
    plan_host,
    split_by_host,
)
from ecssd_agent.core.model import Action, Change, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.plan import ForeignRecord
from ecssd_agent.core.records import host_records
from tests.support.queued import FixedClock as Clock
from tests.support.queued import create_host_table

ZONE = "sd.internal."
TABLE = "hosts"
A = Host("ip-10-0-0-1", "10.0.0.1")
B = Host("ip-10-0-0-2", "10.0.0.2")
DAY = 86400.0


def instance(name: str, n: int, cluster: str = "", task: str = "") -> ServiceInstance:
    return ServiceInstance(name=name, protocol="tcp", container_port=8081, port=30000 + n,
                           container_id=f"{n:012x}" + "0" * 52, cluster=cluster,
                           task_arn=f"arn:aws:ecs:us-east-1:1:task/{cluster}/{task}" if task else "")


def records_of(host: Host, *instances: ServiceInstance,
               routing: Routing = Routing.MULTIVALUE) -> list[RecordSet]:
    records, problems = host_records(host, instances, ZONE, routing, 0)
    assert problems == []
    return records


def task_record(name: str) -> RecordSet:
    owner = Owner(kind=Kind.TASK, cluster="c", task="abc123", port="8081/tcp")
    return RecordSet(name, "SRV", ("1 1 8081 10-0-9-9.sd.internal.",), 0,
                     ownership.set_identifier(owner), multivalue=True)


def hand_made(name: str) -> RecordSet:
    return RecordSet(name, "A", ("192.0.2.1",), 300)


def pub(host: Host, seq: int, records: list[RecordSet], verify: bool = False) -> Published:
    return Published(host.label, ZONE, seq, tuple(records), verify)


# --- needs_read ----------------------------------------------------------------------------

def test_a_host_never_written_is_read() -> None:
    assert needs_read(pub(A, 1, []), None, now=1000.0, verify_after=DAY)


def test_fresh_knowledge_is_trusted_without_verify() -> None:
    applied = Applied(A.label, 1, (), verified=1000.0)
    assert not needs_read(pub(A, 2, records_of(A)), applied, now=1000.0 + DAY - 1, verify_after=DAY)


def test_verify_asks_for_a_read_only_until_that_publication_is_applied() -> None:
    verify = pub(A, 5, records_of(A), verify=True)
    now = 1000.0
    assert needs_read(verify, Applied(A.label, 4, (), now), now, DAY)
    assert not needs_read(verify, Applied(A.label, 5, (), now), now, DAY)  # applied: done
    # a newer seq applied than published: the agent's clock went back; verify anyway
    assert needs_read(verify, Applied(A.label, 6, (), now), now, DAY)
    assert not needs_read(pub(A, 5, [], verify=False), Applied(A.label, 4, (), now), now, DAY)


def test_knowledge_older_than_verify_after_is_read_again() -> None:
    applied = Applied(A.label, 3, (), verified=1000.0)
    publication = pub(A, 3, records_of(A))
    assert not needs_read(publication, applied, now=1000.0 + 99.9, verify_after=100.0)
    assert needs_read(publication, applied, now=1000.0 + 100.0, verify_after=100.0)
    # verified=0 is how the writer marks "unknown whether my last write landed".
    assert needs_read(publication, Applied(A.label, 3, (), 0.0), now=1.7e9, verify_after=DAY)


def test_names_to_read_covers_wanted_and_formerly_owned_names() -> None:
    old = records_of(A, instance("gone", 1))
    new = records_of(A, instance("calc", 2))
    names = names_to_read(pub(A, 2, new), Applied(A.label, 1, tuple(old), 0.0))
    assert names == {f"{A.label}.{ZONE}", f"gone.{ZONE}", f"calc.{ZONE}"}
    assert names_to_read(pub(A, 2, new), None) == {f"{A.label}.{ZONE}", f"calc.{ZONE}"}


# --- plan_host -----------------------------------------------------------------------------

def test_plan_host_creates_for_a_new_host_and_is_stable_after() -> None:
    wanted = records_of(A, instance("calc", 1), instance("time", 2))
    changes = plan_host(pub(A, 1, wanted), [])
    assert [c.action for c in changes] == [Action.CREATE] * 3
    assert plan_host(pub(A, 1, wanted), after([], changes)) == []


def test_plan_host_ignores_every_record_set_it_does_not_own() -> None:
    wanted = records_of(A, instance("calc", 1))
    zone = [*records_of(B, instance("calc", 2)), task_record(f"calc.{ZONE}"),
            hand_made(f"calc.{ZONE}"), *wanted]
    assert plan_host(pub(A, 1, wanted), zone) == []
    removal = plan_host(pub(A, 2, []), zone)
    assert {c.record.key for c in removal} == {r.key for r in wanted}
    assert all(c.action is Action.DELETE for c in removal)


@pytest.mark.parametrize("foreign", [
    records_of(B)[0],  # another host's A record
    records_of(B, instance("calc", 2))[1],  # another host's SRV record
    task_record(f"calc.{ZONE}"),  # a task record of the task-events Lambda
    hand_made(f"www.{ZONE}"),  # no SetIdentifier: nobody's, never ours
    RecordSet(f"x.{ZONE}", "A", ("10.0.0.1",), 0, "ecssd:h:ip-10-0-0-1:bogus", multivalue=True),
], ids=["other-host-a", "other-host-srv", "task", "hand-made", "malformed-identifier"])
def test_plan_host_refuses_to_publish_a_record_set_of_another_owner(foreign: RecordSet) -> None:
    with pytest.raises(ForeignRecord):
        plan_host(pub(A, 1, [*records_of(A), foreign]), [])


def test_plan_host_updates_values_and_recreates_on_routing_change() -> None:
    old = records_of(A, instance("calc", 1))
    moved = records_of(Host(A.label, "10.0.0.99"), instance("calc", 1))
    changes = plan_host(pub(A, 2, moved), old)
    assert [(c.action, c.record.type) for c in changes] == [(Action.UPSERT, "A")]
    weighted = records_of(A, instance("calc", 1), routing=Routing.WEIGHTED)
    changes = plan_host(pub(A, 3, weighted), old)
    assert sorted(c.action for c in changes) == [Action.CREATE] * 2 + [Action.DELETE] * 2


# --- split_by_host, after, latest ------------------------------------------------------------

def test_split_by_host_keeps_only_the_asked_hosts_own_record_sets() -> None:
    a = records_of(A, instance("calc", 1))
    b = records_of(B, instance("calc", 2))
    c = records_of(Host("ip-10-0-0-3", "10.0.0.3"), instance("calc", 3))
    zone = [*a, *b, *c, task_record(f"calc.{ZONE}"), hand_made(f"calc.{ZONE}"),
            RecordSet(f"calc.{ZONE}", "SRV", ("1 1 1 x.",), 0, "ecssd:h:ip-10-0-0-1:x:y:z:w:v")]
    split = split_by_host(zone, [A.label, B.label, "ip-10-0-0-4"])
    assert split == {A.label: a, B.label: b, "ip-10-0-0-4": []}


def test_after_applies_deletes_upserts_and_creates() -> None:
    a_record, calc = records_of(A, instance("calc", 1))
    time_ = records_of(A, instance("time", 2))[1]
    moved = records_of(Host(A.label, "10.0.0.7"))[0]
    result = after([a_record, calc], [Change(Action.DELETE, calc), Change(Action.UPSERT, moved),
                                      Change(Action.CREATE, time_)])
    assert result == (moved, time_)
    # Deleting what is not known is harmless: the result is what Route 53 then holds.
    assert after([], [Change(Action.DELETE, calc)]) == ()


def test_latest_keeps_the_newest_publication_of_each_host_in_any_order() -> None:
    pubs = [pub(A, 3, []), pub(B, 1, []), pub(A, 7, records_of(A)), pub(A, 5, []), pub(B, 2, [])]
    for order in (pubs, list(reversed(pubs))):
        newest = latest(order)
        assert newest[A.label].seq == 7 and newest[A.label].records == tuple(records_of(A))
        assert newest[B.label].seq == 2
    assert latest([]) == {}


# --- HostStore against moto ------------------------------------------------------------------

@pytest.fixture
def store():
    with mock_aws():
        clients = Clients(region="us-east-1")
        ddb = clients.client("dynamodb")
        create_host_table(ddb, TABLE)
        yield HostStore(ddb, TABLE, clock=Clock(1_700_000_000.0), sleep=lambda _s: None), clients


def test_publish_and_load_round_trip_every_routing_and_the_listed_form(store) -> None:
    hosts, _ = store
    weighted = records_of(A, instance("calc", 1, cluster="prod", task="t1"),
                          routing=Routing.WEIGHTED)
    multivalue = records_of(B, instance("_time._tcp", 2))
    listed_wire = {"Name": "\\052.sd.internal.", "Type": "SRV", "SetIdentifier":
                   ownership.set_identifier(Owner(host=A.label, container="0" * 12, port="1/udp")),
                   "Weight": 3, "TTL": 60, "HealthCheckId": "hc-1",
                   "ResourceRecords": [{"Value": "1 1 9 b.sd.internal."},
                                       {"Value": "1 1 8 a.sd.internal."}]}
    listed = from_wire(listed_wire)
    a_pub = Published(A.label, ZONE, 1_700_000_000_123_456_789, (*weighted, listed), verify=True)
    b_pub = Published(B.label, ZONE, 2, tuple(multivalue), verify=False)
    hosts.publish(a_pub)
    hosts.publish(b_pub)

    published, applied = hosts.load([A.label, B.label, "ip-never-published"])

    assert published == {A.label: a_pub, B.label: b_pub}
    assert applied == {}
    got = {r.key: r for r in published[A.label].records}
    assert got[listed.key].name == "*.sd.internal."
    assert got[listed.key].listed == listed_wire  # a DELETE must send exactly this
    assert got[listed.key].weight == 3 and got[listed.key].health_check_id == "hc-1"
    # Records built by the agent come back equal, and their wire form is what the agent built.
    for record in (*weighted, *multivalue):
        again = next(r for p in published.values() for r in p.records if r.key == record.key)
        assert again == record and to_wire(again) == to_wire(record)
    assert {r.weight for r in weighted} == {1} and all(r.multivalue for r in multivalue)


def test_a_newer_publication_replaces_the_older_one(store) -> None:
    hosts, _ = store
    hosts.publish(Published(A.label, ZONE, 1, tuple(records_of(A, instance("a", 1))), True))
    hosts.publish(Published(A.label, ZONE, 2, tuple(records_of(A)), False))
    published, _ = hosts.load([A.label])
    assert published[A.label] == Published(A.label, ZONE, 2, tuple(records_of(A)), False)


def test_items_expire_a_week_after_their_last_write(store) -> None:
    hosts, _ = store
    hosts.publish(pub(A, 1, []))
    hosts.save_applied(ZONE, [Applied(A.label, 1, (), 5.0)])
    for kind in ("desired", "applied"):
        item = hosts.client.get_item(TableName=TABLE, Key={"host": {"S": A.label},
                                                            "kind": {"S": kind}})["Item"]
        assert int(item["expires"]["N"]) == 1_700_000_000 + EXPIRE_AFTER


def test_save_applied_writes_25_per_request_and_loads_100_keys_per_request(store) -> None:
    hosts, clients = store
    states = [Applied(f"ip-10-1-0-{i}", i + 1, tuple(records_of(Host(f"ip-10-1-0-{i}", "10.1.0.1"),
                                                                  instance("calc", i))),
                      1_700_000_000.25 + i) for i in range(60)]

    requests = hosts.save_applied(ZONE, states)

    assert requests == 3 == clients.stats.attempts("BatchWriteItem")  # 25 + 25 + 10
    published, applied = hosts.load(s.host for s in states)
    assert published == {}
    assert applied == {s.host: s for s in states}  # verified floats survive exactly
    assert clients.stats.attempts("BatchGetItem") == 2  # 120 keys: 100 + 20


def test_load_of_no_host_makes_no_request(store) -> None:
    hosts, clients = store
    before = clients.stats.attempts()  # the fixture's CreateTable
    assert hosts.load([]) == ({}, {})
    assert hosts.save_applied(ZONE, []) == 0
    assert clients.stats.attempts() == before


# --- HostStore: DynamoDB's partial answers (Stubber: moto never returns them) ----------------

def _stubbed() -> tuple[HostStore, Stubber, list[float]]:
    client = boto3.client("dynamodb", region_name="us-east-1")
    sleeps: list[float] = []
    return HostStore(client, TABLE, clock=Clock(0.0), sleep=sleeps.append), Stubber(client), sleeps


def _item(host: str, kind: str, seq: int) -> dict[str, object]:
    item: dict[str, object] = {"host": {"S": host}, "kind": {"S": kind}, "zone": {"S": ZONE},
                               "seq": {"N": str(seq)}, "records": {"S": _records_out(records_of(
                                   Host(host, "10.0.0.5")))}}
    item["verify" if kind == "desired" else "verified"] = (
        {"BOOL": False} if kind == "desired" else {"N": "12.5"})
    return item


def _key(host: str, kind: str) -> dict[str, object]:
    return {"host": {"S": host}, "kind": {"S": kind}}


def test_unprocessed_keys_are_asked_again_until_answered() -> None:
    hosts, stub, sleeps = _stubbed()
    all_keys = [_key(h, k) for h in (A.label, B.label) for k in ("desired", "applied")]
    left = {TABLE: {"Keys": all_keys[2:], "ConsistentRead": True}}
    stub.add_response("batch_get_item",
                      {"Responses": {TABLE: [_item(A.label, "desired", 4),
                                             _item(A.label, "applied", 3)]},
                       "UnprocessedKeys": left},
                      {"RequestItems": {TABLE: {"Keys": all_keys, "ConsistentRead": True}}})
    stub.add_response("batch_get_item", {"Responses": {TABLE: [_item(B.label, "desired", 9)]},
                                         "UnprocessedKeys": {}},
                      {"RequestItems": left})
    with stub:
        published, applied = hosts.load([B.label, A.label])
    stub.assert_no_pending_responses()
    assert {h: p.seq for h, p in published.items()} == {A.label: 4, B.label: 9}
    assert {h: (a.seq, a.verified) for h, a in applied.items()} == {A.label: (3, 12.5)}
    assert len(sleeps) == 1


def test_keys_still_unprocessed_after_every_round_raise_instead_of_reading_absent() -> None:
    hosts, stub, sleeps = _stubbed()
    keys = [_key(A.label, "desired"), _key(A.label, "applied")]
    for _ in range(MAX_ROUNDS):
        stub.add_response("batch_get_item", {"Responses": {TABLE: []}, "UnprocessedKeys": {
            TABLE: {"Keys": keys, "ConsistentRead": True}}})
    with stub, pytest.raises(StoreError):
        hosts.load([A.label])
    stub.assert_no_pending_responses()
    assert len(sleeps) == MAX_ROUNDS - 1  # no pointless wait after the last round
    assert max(sleeps) <= 2.0 and sleeps == sorted(sleeps)  # bounded exponential backoff


def test_unprocessed_items_are_written_again() -> None:
    hosts, stub, sleeps = _stubbed()
    states = [Applied(f"h{i}", i, (), 1.0) for i in range(30)]
    sent: list[list[dict[str, object]]] = []

    def capture(params: dict[str, dict[str, list[dict[str, object]]]], **_kw: object) -> None:
        sent.append(list(params["RequestItems"][TABLE]))

    hosts.client.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", capture)
    # The first 25: DynamoDB leaves 5 unprocessed, then takes them; the last 5 at once.
    left = [{"PutRequest": {"Item": {"host": {"S": f"h{i}"}, "kind": {"S": "applied"}}}}
            for i in range(20, 25)]
    stub.add_response("batch_write_item", {"UnprocessedItems": {TABLE: left}})
    stub.add_response("batch_write_item", {"UnprocessedItems": {}})
    stub.add_response("batch_write_item", {})
    with stub:
        assert hosts.save_applied(ZONE, states) == 3
    stub.assert_no_pending_responses()
    assert [len(r) for r in sent] == [25, 5, 5]
    assert sent[1] == left  # the retry sends exactly what DynamoDB handed back
    assert [i["PutRequest"]["Item"]["host"]["S"] for i in sent[2]] == [  # type: ignore[index]
        f"h{i}" for i in range(25, 30)]
    assert len(sleeps) == 1


def test_items_still_unprocessed_after_every_round_raise() -> None:
    hosts, stub, sleeps = _stubbed()
    left = {TABLE: [{"PutRequest": {"Item": {"host": {"S": "h"}, "kind": {"S": "applied"}}}}]}
    for _ in range(MAX_ROUNDS):
        stub.add_response("batch_write_item", {"UnprocessedItems": left})
    with stub, pytest.raises(StoreError, match="1 applied state"):
        hosts.save_applied(ZONE, [Applied("h", 1, (), 1.0)])
    stub.assert_no_pending_responses()
    assert len(sleeps) == MAX_ROUNDS - 1

"""The zone writer of the queued mode, against in-process moto (Route 53 and DynamoDB).

What it must prove: many hosts' changes go out in few requests; reads happen only where the
writer's knowledge is missing or old; a batch Route 53 rejects is re-read and re-planned, and
one host whose changes can never land is bisected out without holding up the others; an AWS
error leaves the hosts in flight marked unknown; records of other owners are never touched.
One writer at a time (the lease: waited for, extended before every change request, lost ->
stop); a writer killed at any call leaves only true or "unknown" knowledge behind; no
request starts after the deadline, and exactly the hosts not sent are reported unfinished.

Requests are counted by the project's own :class:`RequestStats` (every HTTP attempt). Faults
moto cannot produce (Throttling at a chosen moment) come from :class:`Faults`, a thin proxy
that raises a real ``ClientError`` for a scripted call and passes every other call to moto.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ecssd_agent.aws import route53
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import LEASE_HOST, HostStore
from ecssd_agent.aws.route53 import Route53Zone, find_zone, named_set_identifiers, to_wire
from ecssd_agent.core import ownership
from ecssd_agent.core.host_state import Applied, Published
from ecssd_agent.core.model import Action, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import host_records
from ecssd_agent.writer import zone_writer
from ecssd_agent.writer.zone_writer import (
    LEASE_SECONDS,
    WriterInterrupted,
    ZoneWriter,
    _named_hosts,
    read_hints,
)
from tests.support.queued import FixedClock as Clock
from tests.support.queued import create_host_table

ZONE = "sd.internal."
TABLE = "hosts"
T0 = 1_700_000_000.0
#: One boto3 session for the module: it caches the service models (client creation is most
#: of a test's setup otherwise). Credentials and endpoints still come from the environment.
SESSION = boto3.session.Session()


def host(i: int) -> Host:
    return Host(f"ip-10-0-{i // 250}-{i % 250}", f"10.0.{i // 250}.{i % 250}")


def desired(h: Host, *names: str, routing: Routing = Routing.MULTIVALUE,
            port_base: int = 30000) -> list[RecordSet]:
    instances = [ServiceInstance(name, "tcp", 8081, port_base + n, f"{n:04d}{h.ip}".replace(".", "")
                                 .ljust(64, "0"), cluster="prod",
                                 task_arn=f"arn:aws:ecs:us-east-1:1:task/prod/{h.label}t{n}")
                 for n, name in enumerate(names)]
    records, problems = host_records(h, instances, ZONE, routing, 0)
    assert problems == []
    return records


def five_names(i: int) -> list[str]:
    """Host ``i``'s five service names: 85 of 170 hosts share each, Route 53 taking at most
    100 routed record sets of one name and type."""
    return [f"{name}{i % 2}" for name in "abcde"]


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


class Faults:
    """A boto3 Route 53 client: moto's, made as strict as Route 53, plus scripted errors.

    moto 5.2.x accepts change batches that Route 53 refuses (seen here: a DELETE of a record
    set that is gone, or whose values changed, passes when the name and type still hold
    other record sets; a CREATE of an existing SetIdentifier with other values replaces it).
    Route 53 documents both as InvalidChangeBatch, and the writer's re-read and re-plan
    exist for exactly those, so this proxy checks them against moto's zone first, for the
    whole batch, before passing it on.
    """

    def __init__(self, client: Any, plain: Any) -> None:
        self._client = client
        self._plain = plain  # uncounted: the checks are not requests the writer made
        self.script: dict[str, list[Exception | None]] = {}
        self.rejected = 0  # batches this proxy refused (they never reach moto: no request)
        #: Called with each change batch as it is sent, accepted or not (a clock that moves
        #: while a request is on the way, another writer acting meanwhile).
        self.on_change: list[Callable[[list[dict[str, Any]]], None]] = []
        # False: refusals do not name the record set's identifier (as moto's): the writer
        # cannot tell whose it is, and bisects
        self.name_owners = True
        # every change attempt, the scripted failures too (on_change: those that reach moto)
        self.on_attempt: list[Callable[[list[dict[str, Any]]], None]] = []
        self.change_calls = 0  # every ChangeResourceRecordSets call, refused ones too

    def fail(self, method: str, *outcomes: Exception | None) -> None:
        """The next calls of ``method``: an exception to raise, or None to pass through."""
        self.script.setdefault(method, []).extend(outcomes)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name not in self.script and name != "change_resource_record_sets":
            return real

        def call(**kwargs: Any) -> Any:
            queued = self.script.get(name, [])
            outcome = queued.pop(0) if queued else None
            if name == "change_resource_record_sets":
                for hook in self.on_attempt:
                    hook(kwargs["ChangeBatch"]["Changes"])
            if outcome is not None:
                raise outcome
            if name == "change_resource_record_sets":
                self.change_calls += 1
                for hook in self.on_change:
                    hook(kwargs["ChangeBatch"]["Changes"])
                self._check(kwargs["HostedZoneId"], kwargs["ChangeBatch"]["Changes"])
            return real(**kwargs)

        return call

    def _check(self, zone_id: str, changes: list[dict[str, Any]]) -> None:
        pages = self._plain.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=zone_id)
        have = {_wire_key(w): w for page in pages for w in page["ResourceRecordSets"]}
        for change in changes:  # in order, as Route 53 applies them
            wire = change["ResourceRecordSet"]
            key = _wire_key(wire)
            found = have.get(key)
            what = f"resource record set [name='{wire['Name']}', type='{wire['Type']}'"
            if self.name_owners and "SetIdentifier" in wire:  # as Route 53 writes it
                what += f", set-identifier='{wire['SetIdentifier']}'"
            what += "]"
            if change["Action"] == "DELETE":
                if found is None or _canon(found) != _canon(wire):
                    raise self._rejected(f"Tried to delete {what} but it was not found")
                del have[key]
            elif change["Action"] == "CREATE" and found is not None:
                raise self._rejected(f"Tried to create {what} but it already exists")
            else:
                have[key] = wire

    def _rejected(self, message: str) -> ClientError:
        self.rejected += 1
        return ClientError({"Error": {"Code": "InvalidChangeBatch", "Message": message},
                            "ResponseMetadata": {"HTTPStatusCode": 400}},
                           "ChangeResourceRecordSets")


def _wire_key(wire: dict[str, Any]) -> tuple[str, str, str | None]:
    return (wire["Name"].lower().rstrip(".") + ".", wire["Type"], wire.get("SetIdentifier"))


def _canon(wire: dict[str, Any]) -> tuple[Any, ...]:
    return (wire.get("TTL"), sorted(r["Value"] for r in wire.get("ResourceRecords", [])),
            wire.get("Weight"), bool(wire.get("MultiValueAnswer")), wire.get("HealthCheckId"))


@dataclass
class World:
    clients: Clients
    zone: Route53Zone
    faults: Faults
    store: HostStore
    clock: Clock
    seqs: Counter[str] = field(default_factory=Counter)

    @property
    def route53(self) -> Any:
        return self.clients.client("route53")

    def writer(self, **kwargs: Any) -> ZoneWriter:
        kwargs.setdefault("sleep", Sleeper(self.clock))  # never real time: a retry's backoff
        return ZoneWriter(self.zone, self.store, clock=self.clock, **kwargs)

    def publish(self, h: Host, records: list[RecordSet], verify: bool = False,
                zone: str = ZONE) -> int:
        self.seqs[h.label] += 1
        self.store.publish(Published(h.label, zone, self.seqs[h.label], tuple(records), verify))
        return self.seqs[h.label]

    def all_records(self) -> list[RecordSet]:
        return list(self.zone.records())

    def owned(self, h: Host) -> set[RecordSet]:
        return self.owned_by(h)[h.label]

    def owned_by(self, *hosts: Host) -> dict[str, set[RecordSet]]:
        """Each host's record sets in the zone, from one listing."""
        out: dict[str, set[RecordSet]] = {h.label: set() for h in hosts}
        for record in self.all_records():
            owner = ownership.parse_set_identifier(record.set_identifier)
            if owner is not None and owner.kind is Kind.HOST and owner.host in out:
                out[owner.host].add(record)
        return out

    def applied(self, *hosts: Host) -> dict[str, Applied]:
        return self.store.load([h.label for h in hosts])[1]

    def by_hand(self, action: Action, records: list[RecordSet]) -> None:
        """Someone else's change (the console, another tool): not through the writer."""
        self.route53.change_resource_record_sets(HostedZoneId=self.zone.zone.id, ChangeBatch={
            "Changes": [{"Action": action.value, "ResourceRecordSet": to_wire(r)} for r in records]})

    def requests(self) -> Counter[str]:
        return Counter(self.clients.stats.by_operation())


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        clients = Clients(region="us-east-1", session=SESSION)
        r53 = clients.client("route53")
        r53.create_hosted_zone(Name=ZONE, CallerReference="1",
                               HostedZoneConfig={"PrivateZone": True},
                               VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-1"})
        ddb = clients.client("dynamodb")
        create_host_table(ddb, TABLE)
        faults = Faults(r53, SESSION.client("route53", region_name="us-east-1"))
        zone = Route53Zone(faults, find_zone(r53, ZONE))  # type: ignore[arg-type]
        clock = Clock(T0)  # the writers' lease is timed by the same clock as the writer
        yield World(clients, zone, faults, HostStore(ddb, TABLE, clock=clock), clock)


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter({k: v - before[k] for k, v in after.items() if v - before[k]})


ROUTE53_READS = ("ListResourceRecordSets", "GetHostedZone")


# --- few requests for many hosts -------------------------------------------------------------

def test_many_hosts_go_out_in_one_change_request(world: World) -> None:
    hosts = [host(i) for i in range(50)]
    wanted = {h.label: desired(h, "calc", "time", "_web._tcp", "portal", "auth") for h in hosts}
    for h in hosts:
        world.publish(h, wanted[h.label], verify=True)
    before = world.requests()

    outcome = world.writer().write(h.label for h in hosts)

    spent = delta(world.requests(), before)
    assert outcome.hosts == 50 and outcome.changes == 300 and not outcome.failed
    assert outcome.change_requests == spent["ChangeResourceRecordSets"] == 1
    assert outcome.read_requests == sum(spent[op] for op in ROUTE53_READS)
    assert outcome.hosts_read == 50
    assert world.owned_by(*hosts) == {k: set(v) for k, v in wanted.items()}
    applied = world.applied(*hosts)
    assert {k: (a.seq, set(a.records), a.verified) for k, a in applied.items()} == {
        h.label: (1, set(wanted[h.label]), T0) for h in hosts}
    # 50 applied states, 25 per request: saved "unknown" before the change request, then applied
    assert spent["BatchWriteItem"] == 4


def test_changes_beyond_a_request_fill_requests_of_1000(world: World) -> None:
    hosts = [host(i) for i in range(170)]  # 170 x 6 = 1,020 record sets
    for i, h in enumerate(hosts):
        world.publish(h, desired(h, *five_names(i)))
    before = world.requests()
    outcome = world.writer().write(h.label for h in hosts)
    assert outcome.changes == 1020
    assert delta(world.requests(), before)["ChangeResourceRecordSets"] == 2 == outcome.change_requests
    assert len(world.all_records()) == 1020 + 2  # and the zone's NS and SOA


def test_a_second_write_without_change_costs_no_route53_request(world: World) -> None:
    hosts = [host(i) for i in range(12)]
    for h in hosts:
        world.publish(h, desired(h, "calc"))
    world.writer().write(h.label for h in hosts)
    before = world.requests()

    outcome = world.writer().write(h.label for h in hosts)

    spent = delta(world.requests(), before)
    assert outcome.changes == outcome.change_requests == outcome.read_requests == 0
    assert outcome.hosts_read == 0
    # the writers' lease (taken, given back) and one load; nothing to save
    assert spent == Counter({"PutItem": 1, "BatchGetItem": 1, "DeleteItem": 1})


def test_a_new_publication_is_planned_from_knowledge_without_a_read(world: World) -> None:
    a, b = host(1), host(2)
    world.publish(a, desired(a, "calc", "time"))
    world.publish(b, desired(b, "calc"))
    writer = world.writer()
    writer.write([a.label, b.label])
    seq = world.publish(a, desired(a, "time", "portal", port_base=31000))
    before = world.requests()

    outcome = writer.write([a.label, b.label])

    spent = delta(world.requests(), before)
    assert outcome.hosts_read == 0 and not any(spent[op] for op in ROUTE53_READS)
    assert spent["ChangeResourceRecordSets"] == 1
    assert world.owned(a) == set(desired(a, "time", "portal", port_base=31000))
    assert world.owned(b) == set(desired(b, "calc"))
    assert world.applied(a)[a.label].seq == seq
    assert world.applied(a)[a.label].verified == T0  # inferred, not read: still the read's time


def test_reads_only_new_hosts_verify_requests_and_expired_knowledge(world: World) -> None:
    a, b, c = host(1), host(2), host(3)
    writer = world.writer(verify_after=3600.0)
    for h in (a, b):
        world.publish(h, desired(h, "calc"))
    assert writer.write([a.label, b.label]).hosts_read == 2  # both new

    world.publish(c, desired(c, "calc"))  # new
    world.publish(b, desired(b, "calc", "time"), verify=True)  # an agent that restarted
    world.publish(a, desired(a, "calc", "time"))  # a plain change
    outcome = writer.write([a.label, b.label, c.label])
    assert outcome.hosts_read == 2 and not outcome.failed
    assert {h.label: a_.verified for h, a_ in zip((a, b, c), world.applied(a, b, c).values(),
                                                  strict=True)} == {
        a.label: T0, b.label: T0, c.label: T0}

    # b's verify publication is applied: it is not read again for it.
    assert writer.write([a.label, b.label, c.label]).hosts_read == 0

    world.clock.now = T0 + 3600.0  # everybody's knowledge is an hour old
    before = world.requests()
    outcome = writer.write([a.label, b.label, c.label])
    assert outcome.hosts_read == 3 and outcome.changes == 0
    assert delta(world.requests(), before)["ChangeResourceRecordSets"] == 0
    assert {x.verified for x in world.applied(a, b, c).values()} == {T0 + 3600.0}
    assert world.writer(verify_after=3600.0).write([a.label]).hosts_read == 0  # fresh again


def _list_calls(world: World) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_kw: Any) -> None:
        calls.append(dict(params))

    world.route53.meta.events.register(
        "provide-client-params.route53.ListResourceRecordSets", record)
    return calls


def test_few_names_are_read_by_name_many_names_by_listing_the_zone(world: World) -> None:
    filler = [RecordSet(f"svc-{i:04d}.{ZONE}", "A", ("192.0.2.1",), 300) for i in range(700)]
    world.by_hand(Action.CREATE, filler)  # 702 record sets: 3 pages, a full read costs 4
    calls = _list_calls(world)
    a = host(1)
    world.publish(a, desired(a, "calc"))  # 2 names

    before = world.requests()
    outcome = world.writer().write([a.label])

    spent = delta(world.requests(), before)
    assert calls and all("StartRecordName" in c for c in calls)
    assert {c["StartRecordName"] for c in calls} == {f"calc.{ZONE}", f"{a.label}.{ZONE}"}
    assert outcome.read_requests == sum(spent[op] for op in ROUTE53_READS) == 1 + len(calls)
    assert world.owned(a) == set(desired(a, "calc"))

    calls.clear()
    many = [host(i) for i in range(10, 15)]  # 10 names: more than the 4 a full listing costs
    for h in many:
        world.publish(h, desired(h, f"svc-{h.label}"))
    before = world.requests()
    outcome = world.writer().write(h.label for h in many)

    spent = delta(world.requests(), before)
    assert calls and "StartRecordName" not in calls[0]  # from the start of the zone
    assert len(calls) == math.ceil((702 + 2) / 300)  # the zone as it was when read, once
    assert outcome.read_requests == sum(spent[op] for op in ROUTE53_READS) == 1 + len(calls)
    assert world.owned_by(*many) == {h.label: set(desired(h, f"svc-{h.label}")) for h in many}


# --- Route 53 disagrees with the writer's knowledge ------------------------------------------

def test_a_record_deleted_behind_the_writers_back_is_read_and_replanned(world: World) -> None:
    a, b = host(1), host(2)
    world.publish(a, desired(a, "calc", "time"))
    world.publish(b, desired(b, "calc"))
    writer = world.writer()
    writer.write([a.label, b.label])
    gone = next(r for r in desired(a, "calc", "time") if r.name.startswith("calc."))
    world.by_hand(Action.DELETE, [gone])
    # a drops calc (a DELETE that Route 53 will refuse: it is gone) and adds portal.
    world.publish(a, desired(a, "portal", "time"))
    world.publish(b, desired(b, "calc", "auth"))
    before = world.requests()

    outcome = writer.write([a.label, b.label])

    spent = delta(world.requests(), before)
    # The batch of both is refused, naming a's record set: b is sent again at once, only a
    # is read (the two names of its changes), re-planned and lands.
    assert outcome.rejected == 1 and not outcome.failed
    assert outcome.hosts_read == 1 and 1 <= spent["ListResourceRecordSets"] <= 2
    assert world.faults.rejected == 1 and spent["ChangeResourceRecordSets"] == 2
    assert world.owned(a) == set(desired(a, "portal", "time"))
    assert world.owned(b) == set(desired(b, "calc", "auth"))
    applied = world.applied(a, b)
    assert set(applied[a.label].records) == world.owned(a)
    assert applied[a.label].seq == world.seqs[a.label]


def test_a_record_changed_behind_the_writers_back_is_deleted_as_listed(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc"))
    writer = world.writer()
    writer.write([a.label])
    srv = next(r for r in desired(a, "calc") if r.type == "SRV")
    edited = RecordSet(srv.name, srv.type, ("1 1 9999 elsewhere.sd.internal.",), 60,
                       srv.set_identifier, multivalue=True)
    world.by_hand(Action.UPSERT, [edited])
    world.publish(a, desired(a))  # calc goes: the DELETE of the old values is refused

    outcome = writer.write([a.label])

    assert outcome.rejected == 1 and not outcome.failed
    assert world.owned(a) == set(desired(a))
    assert set(world.applied(a)[a.label].records) == set(desired(a))


def test_a_record_created_behind_the_writers_back_is_taken_over(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a))
    writer = world.writer()
    writer.write([a.label])
    wanted = desired(a, "calc")
    world.by_hand(Action.CREATE, [RecordSet(wanted[1].name, "SRV", ("1 1 1 old.sd.internal.",), 0,
                                            wanted[1].set_identifier, multivalue=True)])
    world.publish(a, wanted)  # a CREATE of an existing record set: refused

    outcome = writer.write([a.label])

    assert outcome.rejected == 1 and not outcome.failed
    assert world.owned(a) == set(wanted)


def test_a_refusal_naming_a_record_set_costs_one_request_and_reads_only_its_owner(
        world: World) -> None:
    """The health sweep deletes record sets of tasks it stopped; the writer, not knowing,
    plans their deletion too. Route 53 names the record set it cannot delete: only its
    owner is read, only under the names of its changes, and nothing is bisected."""
    hosts = [host(i) for i in range(8)]
    writer = world.writer()
    for h in hosts:
        world.publish(h, desired(h, "calc", "time", "auth"))
    writer.write(h.label for h in hosts)
    swept = hosts[5]
    world.by_hand(Action.DELETE, [r for r in desired(swept, "calc") if r.type == "SRV"])
    for h in hosts:
        world.publish(h, desired(h, "time", "auth"))  # every host drops calc
    before = world.requests()
    verified = world.applied(swept)[swept.label].verified

    outcome = writer.write(h.label for h in hosts)

    spent = delta(world.requests(), before)
    assert outcome.rejected == 1 and world.faults.rejected == 1 and not outcome.failed
    assert outcome.hosts_read == 1 and spent["ListResourceRecordSets"] == 1  # calc. only
    assert spent["ChangeResourceRecordSets"] == 2  # the seven others, then swept re-planned
    assert world.owned_by(*hosts) == {h.label: set(desired(h, "time", "auth")) for h in hosts}
    applied = world.applied(*hosts)
    assert set(applied[swept.label].records) == set(desired(swept, "time", "auth"))
    assert applied[swept.label].verified == verified  # its other names were not read
    assert all(applied[h.label].seq == world.seqs[h.label] for h in hosts)


def test_refused_record_sets_name_their_owners_among_the_hosts_of_the_request() -> None:
    a, b, c = host(1), host(2), host(3)

    def ident(h: Host) -> str:
        return ownership.set_identifier(Owner(host=h.label, container="c" * 12, port="80/tcp"))

    message = (f"[Tried to delete resource record set [name='x.sd.internal.', type='SRV', "
               f"set-identifier='{ident(c)}'] but it was not found, Tried to create resource "
               f"record set [name='y.sd.internal.', type='SRV', set-identifier='{ident(a)}'] "
               f"but it already exists, Tried to delete resource record set [name='z.', "
               f"type='A', set-identifier='not-ecssd'] but it was not found, [name='w.', "
               f"set-identifier='{ident(c)}']]")
    named = named_set_identifiers(message)
    assert _named_hosts(named, [a.label, b.label, c.label]) == [c.label, a.label]
    assert _named_hosts(named, [b.label]) == []  # not in this request: bisect instead
    assert named_set_identifiers("RRSet with DNS name x. is not permitted in zone y.") == []


def test_one_impossible_host_is_bisected_out_and_every_other_lands(world: World) -> None:
    hosts = [host(i) for i in range(8)]
    bad = hosts[3]
    writer = world.writer()
    for h in hosts:
        world.publish(h, desired(h, "calc"))
    writer.write(h.label for h in hosts)
    for h in hosts:
        world.publish(h, desired(h, "calc", "time"))
    # bad also wants a record set outside the zone: Route 53 refuses any batch carrying it.
    outside = RecordSet("calc.other.internal.", "SRV", ("1 1 1 x.sd.internal.",), 0,
                        ownership.set_identifier(Owner(host=bad.label, container="f" * 12,
                                                    port="1/tcp")), multivalue=True)
    world.publish(bad, [*desired(bad, "calc", "time"), outside])
    before = world.requests()

    outcome = writer.write(h.label for h in hosts)

    assert set(outcome.failed) == {bad.label}
    assert "not permitted" in outcome.failed[bad.label]
    owned = world.owned_by(*hosts)
    for h in hosts:
        if h is not bad:
            assert owned[h.label] == set(desired(h, "calc", "time"))
    assert owned[bad.label] == set(desired(bad, "calc"))  # as before: all or nothing
    applied = world.applied(*hosts)
    assert applied[bad.label].seq == 1  # not advanced: not applied
    assert set(applied[bad.label].records) == set(desired(bad, "calc"))
    assert all(applied[h.label].seq == 2 for h in hosts if h is not bad)
    # 8 hosts: log2(8) = 3 halvings, two attempts per level at most.
    assert delta(world.requests(), before)["ChangeResourceRecordSets"] <= 2 + 2 * 3

    # Still impossible next time: still reported, never recorded as applied.
    again = writer.write(h.label for h in hosts)
    assert set(again.failed) == {bad.label} and world.applied(bad)[bad.label].seq == 1
    # Fixed by its agent: it lands.
    world.publish(bad, desired(bad, "calc", "time"))
    fixed = writer.write([bad.label])
    assert not fixed.failed and world.owned(bad) == set(desired(bad, "calc", "time"))


def test_a_record_set_botocore_refuses_to_send_is_bisected_out_too(world: World) -> None:
    """A publication the API would never accept (here a negative TTL) fails in botocore's
    parameter validation before anything is sent: like a rejected batch, it must cost only
    its own host, not every host of the write (the Lambda would retry them all forever)."""
    hosts = [host(i) for i in range(4)]
    bad = hosts[1]
    for h in hosts:
        world.publish(h, desired(h, "calc"))
    broken = next(r for r in desired(bad, "calc") if r.type == "SRV")
    world.publish(bad, [*desired(bad), RecordSet(broken.name, "SRV", broken.values, -1,
                                                 broken.set_identifier, multivalue=True)])

    outcome = world.writer().write(h.label for h in hosts)

    assert set(outcome.failed) == {bad.label} and "TTL" in outcome.failed[bad.label]
    owned = world.owned_by(*hosts)
    assert owned[bad.label] == set()
    assert all(owned[h.label] == set(desired(h, "calc")) for h in hosts if h is not bad)
    assert world.applied(bad)[bad.label].seq == 0


def test_a_record_set_beyond_a_request_s_limits_costs_only_its_host(world: World) -> None:
    """1,001 values cannot go in any ChangeResourceRecordSets request: refused at planning."""
    a, b = host(1), host(2)
    srv = next(r for r in desired(a, "calc") if r.type == "SRV")
    huge = RecordSet(srv.name, "SRV", tuple(f"1 1 {p} x.sd.internal." for p in range(1, 1002)),
                     0, srv.set_identifier, multivalue=True)
    world.publish(a, [*desired(a), huge])
    world.publish(b, desired(b, "calc"))

    outcome = world.writer().write([a.label, b.label])

    assert set(outcome.failed) == {a.label} and "limits" in outcome.failed[a.label]
    assert world.owned_by(a, b) == {a.label: set(), b.label: set(desired(b, "calc"))}
    assert world.applied(a)[a.label].seq == 0


def test_a_host_publishing_a_record_set_of_another_owner_is_refused(world: World) -> None:
    a, b, c = host(1), host(2), host(3)
    world.publish(b, desired(b, "calc"))
    world.writer().write([b.label])
    b_records = world.owned(b)
    stolen = next(r for r in desired(b, "calc") if r.type == "SRV")
    world.publish(a, [*desired(a, "calc"), RecordSet(stolen.name, "SRV", ("1 1 1 evil.",), 0,
                                                    stolen.set_identifier, multivalue=True)])
    world.publish(c, desired(c, "calc"))

    outcome = world.writer().write([a.label, b.label, c.label])

    assert set(outcome.failed) == {a.label} and "refusing" in outcome.failed[a.label]
    assert world.owned(b) == b_records
    assert world.owned(a) == set()  # the publication is refused whole
    assert world.owned(c) == set(desired(c, "calc"))
    assert world.applied(a)[a.label].seq == 0  # read, never applied


# --- AWS errors ------------------------------------------------------------------------------

def test_an_aws_error_mid_apply_marks_the_hosts_in_flight_unknown(world: World) -> None:
    a, b, c = host(1), host(2), host(3)
    writer = world.writer()
    for h in (a, b, c):
        world.publish(h, desired(h, "calc"))
    writer.write([a.label, b.label, c.label])
    world.publish(a, desired(a, "calc", "time"))
    world.publish(b, desired(b))
    world.publish(c, desired(c, "calc"))  # republished, unchanged: nothing in flight for c
    world.clock.now = T0 + 60
    world.faults.fail("change_resource_record_sets", throttled("ChangeResourceRecordSets"))

    with pytest.raises(ClientError, match="Throttling"):
        world.writer(max_attempts=1).write([a.label, b.label, c.label])

    applied = world.applied(a, b, c)
    assert (applied[a.label].seq, applied[a.label].verified) == (1, 0.0)
    assert (applied[b.label].seq, applied[b.label].verified) == (1, 0.0)
    assert (applied[c.label].seq, applied[c.label].verified) == (2, T0)  # nothing in flight
    assert world.owned(a) == set(desired(a, "calc"))  # really not applied

    outcome = writer.write([a.label, b.label, c.label])

    assert outcome.hosts_read == 2 and not outcome.failed
    assert world.owned(a) == set(desired(a, "calc", "time"))
    assert world.owned(b) == set(desired(b))
    applied = world.applied(a, b, c)
    assert {k: (x.seq, x.verified) for k, x in applied.items()} == {
        a.label: (2, T0 + 60), b.label: (2, T0 + 60), c.label: (2, T0)}


def test_an_error_in_the_second_request_keeps_what_the_first_applied_unknown(world: World) -> None:
    hosts = [host(i) for i in range(170)]  # two requests
    for i, h in enumerate(hosts):
        world.publish(h, desired(h, *five_names(i)))
    world.faults.fail("change_resource_record_sets", None, throttled("ChangeResourceRecordSets"))
    writer = world.writer(max_attempts=1)

    with pytest.raises(ClientError):
        writer.write(h.label for h in hosts)

    landed = len(world.all_records()) - 2
    assert 0 < landed < 1020  # the first request landed
    verified = [a.verified for a in world.applied(*hosts).values()]
    # the first request's hosts are known applied; the second's may or may not have landed
    assert verified.count(0.0) == (1020 - landed) // 6 and set(verified) == {0.0, T0}
    outcome = writer.write(h.label for h in hosts)
    assert outcome.hosts_read == verified.count(0.0) and not outcome.failed
    assert len(world.all_records()) == 1020 + 2


def test_an_aws_error_reading_after_a_rejection_leaves_those_hosts_unknown(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc", "time"))
    writer = world.writer()
    writer.write([a.label])
    world.by_hand(Action.DELETE, [r for r in desired(a, "calc") if r.type == "SRV"])
    world.publish(a, desired(a, "time"))  # its DELETE of calc is refused: knowledge is wrong
    world.faults.fail("get_hosted_zone", throttled("GetHostedZone"))  # and the re-read fails

    with pytest.raises(ClientError, match="Throttling"):
        writer.write([a.label])

    applied = world.applied(a)[a.label]
    assert applied.verified == 0.0 and applied.seq == 1  # proven stale: read it next time
    outcome = writer.write([a.label])
    assert outcome.hosts_read == 1 and not outcome.failed
    assert world.owned(a) == set(desired(a, "time"))


def test_an_aws_error_reading_new_hosts_applies_and_saves_nothing(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc"))
    world.faults.fail("get_hosted_zone", throttled("GetHostedZone"))
    with pytest.raises(ClientError):
        world.writer().write([a.label])
    assert world.applied(a) == {} and world.owned(a) == set()


# --- what the writer must leave alone ----------------------------------------------------------

def test_hosts_without_state_or_of_another_zone_are_skipped_with_reasons(world: World) -> None:
    a, other, missing = host(1), host(2), host(3)
    world.publish(a, desired(a, "calc"))
    world.publish(other, desired(other, "calc"), zone="elsewhere.internal.")

    outcome = world.writer().write([a.label, other.label, missing.label])

    assert outcome.skipped == {
        other.label: "published for zone elsewhere.internal., this writer serves sd.internal.",
        missing.label: "no desired state stored for this host"}
    assert outcome.hosts == 1
    assert world.owned(a) == set(desired(a, "calc")) and world.owned(other) == set()
    assert set(world.applied(a, other, missing)) == {a.label}
    assert outcome.summary()["skipped_hosts"] == outcome.skipped


def test_a_dry_run_changes_nothing_and_saves_nothing(world: World) -> None:
    a, b = host(1), host(2)
    world.publish(a, desired(a, "calc"))
    world.writer().write([a.label])
    world.publish(a, desired(a, "time"))
    world.publish(b, desired(b, "calc"))
    zone_before = {r.key: r.listed for r in world.all_records()}
    applied_before = world.applied(a, b)
    before = world.requests()

    outcomes = [world.writer(dry_run=True).write([a.label, b.label]) for _ in range(2)]

    spent = delta(world.requests(), before)
    assert outcomes[0].summary() == outcomes[1].summary()  # nothing remembered
    assert outcomes[0].changes == 2 + 2  # a: delete calc, create time; b: A and calc
    assert spent["ChangeResourceRecordSets"] == 0 and spent["BatchWriteItem"] == 0
    assert spent["PutItem"] == 0 and spent["DeleteItem"] == 0  # nor the lease
    assert {r.key: r.listed for r in world.all_records()} == zone_before
    assert world.applied(a, b) == applied_before


def test_a_dry_run_needs_no_lease_and_holds_up_no_writer(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc"))
    assert rival(world).acquire("busy-writer", 600.0)
    outcome = world.writer(dry_run=True, lock_wait=0.0).write([a.label])
    assert outcome.changes == 2 and lease_of(world) == ("busy-writer", T0 + 600.0)


def foreign_neighbours(mine: Host) -> list[RecordSet]:
    """Record sets under ``mine``'s names that belong to somebody else."""
    calc = f"calc.{ZONE}"
    task = Owner(kind=Kind.TASK, cluster="prod", task="abc", port="8081/tcp")
    return [
        *desired(Host("ip-10-9-9-9", "10.9.9.9"), "calc"),  # another host's records
        RecordSet(calc, "SRV", ("1 1 80 10-0-9-9.sd.internal.",), 0, ownership.set_identifier(task),
                  multivalue=True),  # the task-events Lambda's record
        RecordSet(calc, "TXT", ('"made by hand"',), 300),  # hand-made, no SetIdentifier
        RecordSet(calc, "SRV", ("1 1 81 x.sd.internal.",), 0, f"ecssd:h:{mine.label}:junk",
                  multivalue=True),  # looks like mine, does not parse: not mine
        RecordSet(f"{mine.label}.{ZONE}", "TXT", ('"hand"',), 300),
    ]


@pytest.mark.parametrize("big_zone", [False, True], ids=["full-listing", "name-scoped-read"])
def test_records_of_other_owners_are_never_touched(world: World, big_zone: bool) -> None:
    mine = host(1)
    if big_zone:
        world.by_hand(Action.CREATE, [RecordSet(f"filler-{i:04d}.{ZONE}", "A", ("192.0.2.9",), 60)
                                      for i in range(700)])
    others = foreign_neighbours(mine)
    world.by_hand(Action.CREATE, others)
    calls = _list_calls(world)
    writer = world.writer()

    def write() -> None:
        calls.clear()
        outcome = writer.write([mine.label])
        assert not outcome.failed and outcome.hosts_read == 1
        # The read was name-scoped in the big zone, a listing of the whole small one.
        assert calls and all(("StartRecordName" in c) is big_zone for c in calls)
        listed = {r.key: r.listed for r in world.all_records()}
        assert all(listed.get(r.key) == to_wire(r) for r in others)

    world.publish(mine, desired(mine, "calc"), verify=True)
    write()
    assert world.owned(mine) == set(desired(mine, "calc"))
    world.publish(mine, desired(mine, "calc", port_base=32000), verify=True)  # upserts
    write()
    assert world.owned(mine) == set(desired(mine, "calc", port_base=32000))
    world.publish(mine, [], verify=True)  # --remove: everything of mine goes
    write()
    assert world.owned(mine) == set()


def test_a_removed_host_has_nothing_left_and_knows_it(world: World) -> None:
    a, b = host(1), host(2)
    for h in (a, b):
        world.publish(h, desired(h, "calc", "time"))
    writer = world.writer()
    writer.write([a.label, b.label])
    world.publish(a, [])
    outcome = writer.write([a.label])
    assert outcome.changes == 3 and outcome.hosts_read == 0
    assert world.owned(a) == set() and world.owned(b) == set(desired(b, "calc", "time"))
    assert world.applied(a)[a.label].records == ()


def test_a_delete_planned_from_stored_knowledge_matches_the_zone_exactly(world: World) -> None:
    """What the writer read is stored as listed; a DELETE planned from it later (no read in
    between) must carry the exact TTL and values, or Route 53 refuses it."""
    a = host(1)
    srv = next(r for r in desired(a, "calc") if r.type == "SRV")
    # An older agent wrote a's calc record set with a TTL and two values of its own.
    odd = RecordSet(srv.name, "SRV", ("1 1 1 a.sd.internal.", "1 1 2 b.sd.internal."), 77,
                    srv.set_identifier, multivalue=True)
    world.by_hand(Action.CREATE, [odd])
    world.publish(a, [*desired(a), odd])  # the host keeps it as it is for now
    writer = world.writer()
    first = writer.write([a.label])
    assert first.hosts_read == 1 and first.changes == 1  # only its A record was missing
    world.publish(a, desired(a))

    outcome = writer.write([a.label])

    assert outcome.hosts_read == 0  # planned from what was stored
    assert outcome.rejected == 0 and world.faults.rejected == 0 and outcome.changes == 1
    assert world.owned(a) == set(desired(a))


# --- hints -----------------------------------------------------------------------------------

def test_read_hints_dedupes_hosts_and_reports_every_bad_message() -> None:
    good = '{"host": "ip-1", "zone": "sd.internal.", "seq": 1}'
    batch = read_hints({
        "m1": good, "m2": '{"host": "ip-1", "zone": "sd.internal.", "seq": 2}',
        "m3": '{"host": "ip-2", "zone": "sd.internal.", "seq": 1}',
        "m4": "garbage", "m5": '{"host": "ip-3", "zone": "other.", "seq": 1}',
    }, ZONE)
    assert batch.hosts == {"ip-1", "ip-2"}
    assert set(batch.bad) == {"m4", "m5"}
    assert batch.bad["m4"].startswith("not JSON")
    assert batch.bad["m5"] == "hint for zone other., this writer serves sd.internal."


def test_read_hints_keeps_verify_hints_apart_with_the_union_of_their_names() -> None:
    batch = read_hints({
        "m1": '{"host": "ip-1", "zone": "sd.internal.", "seq": 1}',
        "m2": '{"host": "ip-1", "zone": "sd.internal.", "seq": 0, "verify": ["a.sd.internal."]}',
        "m3": '{"host": "ip-2", "zone": "sd.internal.", "seq": 0, "verify": ["a.sd.internal."]}',
        "m4": '{"host": "ip-2", "zone": "sd.internal.", "seq": 0, "verify": ["b.sd.internal."]}',
        "m5": '{"host": "ip-3", "zone": "sd.internal.", "seq": 0, "verify": "a.sd.internal."}',
    }, ZONE)
    assert batch.hosts == {"ip-1"}  # a verify hint alone does not plan its host
    assert batch.verify == {"ip-1": {"a.sd.internal."},
                            "ip-2": {"a.sd.internal.", "b.sd.internal."}}
    assert batch.bad["m5"].startswith("verify is not a list of names")
    assert sorted(batch.messages_of({"ip-2"})) == ["m3", "m4"]


# --- verify hints: record sets deleted behind the writer's back (the health sweep) ----------

def swept(world: World, h: Host, *names: str) -> list[RecordSet]:
    """The sweep deletes ``h``'s SRV record sets of ``names`` (not through the writer)."""
    gone = [r for r in world.all_records() if r.type == "SRV" and r.name.split(".")[0] in names
            and (r.set_identifier or "").startswith(f"ecssd:h:{h.label}:")]
    assert len(gone) == len(names)
    world.by_hand(Action.DELETE, gone)
    return gone


def test_a_record_set_the_sweep_deleted_is_read_on_its_hint_and_re_created_on_the_next_publication(
        world: World) -> None:
    a, b = host(1), host(2)
    for h in (a, b):
        world.publish(h, desired(h, "calc", "time"))
    writer = world.writer()
    writer.write([a.label, b.label])
    (gone,) = swept(world, a, "calc")
    world.publish(a, desired(a, "calc", "time"))  # a's resync: the same state again
    assert writer.write([a.label]).changes == 0  # what it knows says calc is there: the hole
    assert gone not in world.owned(a)
    calls = _list_calls(world)
    before = world.requests()

    outcome = writer.write([], verify={a.label: {gone.name}})

    spent = delta(world.requests(), before)
    assert [c.get("StartRecordName") for c in calls] == [gone.name]  # that name only
    assert outcome.hosts_verified == 1 and outcome.read_requests == 1
    assert spent["ListResourceRecordSets"] == 1 and spent["ChangeResourceRecordSets"] == 0
    assert outcome.hosts == 0 and outcome.changes == 0  # not planned: its agent publishes next
    known = world.applied(a)[a.label]
    assert set(known.records) == set(desired(a, "calc", "time")) - {gone}
    assert known.verified == T0  # a partial read: its full verification is still due as before
    assert known.seq == world.seqs[a.label]

    world.publish(a, desired(a, "calc", "time"))  # its next resync
    before = world.requests()
    outcome = writer.write([a.label])

    spent = delta(world.requests(), before)
    assert outcome.changes == 1 and outcome.change_requests == 1 and outcome.read_requests == 0
    assert not any(spent[op] for op in ROUTE53_READS)
    assert world.owned(a) == set(desired(a, "calc", "time"))
    assert world.owned(b) == set(desired(b, "calc", "time"))  # never read, never touched


def test_a_verify_hint_with_the_host_s_publication_heals_in_one_write(
        world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc", "time"))
    writer = world.writer()
    writer.write([a.label])
    (gone,) = swept(world, a, "calc")
    world.publish(a, desired(a, "calc", "time"))

    outcome = writer.write([a.label], verify={a.label: {gone.name}})

    assert outcome.hosts_verified == 1 and outcome.changes == 1 and outcome.rejected == 0
    assert world.owned(a) == set(desired(a, "calc", "time"))


def test_many_hosts_hinted_under_one_name_share_one_read(world: World) -> None:
    hosts = [host(i) for i in range(40)]
    for h in hosts:
        world.publish(h, desired(h, "calc", "time", "auth"))
    writer = world.writer()
    writer.write(h.label for h in hosts)
    gone = {h.label: swept(world, h, "calc") for h in hosts[::2]}
    before = world.requests()

    outcome = writer.write([], verify={h: {r.name for r in rs} for h, rs in gone.items()})

    spent = delta(world.requests(), before)
    assert outcome.hosts_verified == 20 and outcome.hosts_read == 20
    assert spent["ListResourceRecordSets"] == 1 and outcome.read_requests == 1
    applied = world.applied(*hosts)
    for h in hosts:
        missing = set(gone.get(h.label, ()))
        assert set(applied[h.label].records) == set(desired(h, "calc", "time", "auth")) - missing


def test_a_verify_hint_never_deletes_or_forgets_what_is_still_there(world: World) -> None:
    """A late or repeated hint (SQS delivers at least once): the read finds the record sets
    where they are, and what the writer knows stays as it was; records of others under the
    same name are not the host's and are not taken in."""
    a, b = host(1), host(2)
    for h in (a, b):
        world.publish(h, desired(h, "calc"))
    writer = world.writer()
    writer.write([a.label, b.label])
    known = world.applied(a)[a.label]
    zone_before = set(world.all_records())

    outcome = writer.write([], verify={a.label: {f"calc.{ZONE}", f"{a.label}.{ZONE}"}})

    assert outcome.hosts_verified == 1 and outcome.changes == outcome.change_requests == 0
    assert set(world.all_records()) == zone_before
    after = world.applied(a)[a.label]
    assert (set(after.records), after.seq, after.verified) == (set(known.records), known.seq,
                                                               known.verified)


def test_a_verify_hint_for_a_host_without_knowledge_or_read_in_full_anyway_costs_no_read(
        world: World) -> None:
    a, b = host(1), host(2)
    world.publish(a, desired(a, "calc"))
    before = world.requests()

    # b: never written (its first write reads it in full); a: new, read in full for its plan
    outcome = world.writer().write([a.label], verify={a.label: {f"calc.{ZONE}"},
                                                      b.label: {f"calc.{ZONE}"}})

    spent = delta(world.requests(), before)
    assert outcome.hosts_verified == 0 and outcome.hosts_read == 1
    # only a's full read: the zone's size, then its one page (cheaper than its two names)
    assert (spent["GetHostedZone"], spent["ListResourceRecordSets"]) == (1, 1)
    assert world.owned(a) == set(desired(a, "calc")) and world.applied(b) == {}


def test_a_verify_hint_in_a_dry_run_reads_but_saves_nothing(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc"))
    world.writer().write([a.label])
    (gone,) = swept(world, a, "calc")
    known = world.applied(a)[a.label]

    outcome = world.writer(dry_run=True).write([], verify={a.label: {gone.name}})

    assert outcome.hosts_verified == 1 and world.applied(a)[a.label] == known
    assert lease_of(world) is None


def test_a_busy_lease_hands_the_verify_hints_back_with_their_names(world: World) -> None:
    a, b = host(1), host(2)
    for h in (a, b):
        world.publish(h, desired(h, "calc"))
    world.writer().write([a.label, b.label])
    assert rival(world).acquire("busy-writer", 600.0)
    names = {f"calc.{ZONE}", f"{b.label}.{ZONE}"}

    with pytest.raises(WriterInterrupted) as caught:
        world.writer(lock_wait=5.0).write([a.label], verify={b.label: names})

    assert caught.value.unfinished == {a.label} and caught.value.verify == {b.label: names}
    hints = caught.value.hand_back(ZONE)
    assert [(h.host, h.seq, set(h.verify)) for h in hints] == [(a.label, 0, set()),
                                                               (b.label, 0, names)]


def test_the_writer_plans_nothing_for_no_host(world: World) -> None:
    before = world.requests()
    outcome = world.writer().write([])
    assert outcome.summary()["hosts"] == 0
    assert delta(world.requests(), before) == Counter()  # not even a load


def test_changes_are_planned_for_both_routing_policies(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc", routing=Routing.WEIGHTED))
    writer = world.writer()
    writer.write([a.label])
    assert {r.weight for r in world.owned(a)} == {1}
    world.publish(a, desired(a, "calc"))  # weighted -> multivalue: delete and create
    outcome = writer.write([a.label])
    assert not outcome.failed and outcome.rejected == 0 and outcome.changes == 4
    assert world.owned(a) == set(desired(a, "calc"))


# --- one writer at a time: the lease -----------------------------------------------------------

class Sleeper:
    """``time.sleep`` for a writer on a :class:`Clock`: sleeping moves the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.now += seconds


def lease_of(world: World) -> tuple[str, float] | None:
    """(owner, expires) of the writers' lease item, or None when nobody holds it."""
    item = SESSION.client("dynamodb", region_name="us-east-1").get_item(
        TableName=TABLE, Key={"host": {"S": LEASE_HOST}, "kind": {"S": "lease"}},
        ConsistentRead=True).get("Item")
    return None if item is None else (item["owner"]["S"], float(item["expires"]["N"]))


def rival(world: World) -> HostStore:
    """Another writer's view of the same table, on the same clock."""
    return HostStore(world.clients.client("dynamodb"), TABLE, clock=world.clock)


def test_the_lease_is_taken_when_free_expired_or_ours_and_refused_otherwise(world: World) -> None:
    store, other = world.store, rival(world)
    assert store.acquire("a", 60.0)  # free
    assert lease_of(world) == ("a", T0 + 60.0)
    assert not other.acquire("b", 60.0)  # held, unexpired
    world.clock.now = T0 + 30.0
    assert store.acquire("a", 60.0)  # ours: extended
    assert lease_of(world) == ("a", T0 + 90.0)
    world.clock.now = T0 + 90.0
    assert not other.acquire("b", 60.0)  # expires now: not yet expired
    assert lease_of(world) == ("a", T0 + 90.0)
    world.clock.now = T0 + 90.5
    assert other.acquire("b", 60.0)  # expired: the holder died
    assert lease_of(world) == ("b", T0 + 151.0)  # whole seconds (the table's TTL), rounded up
    assert not store.acquire("a", 60.0)  # and the old holder cannot take it back


def test_the_lease_is_extended_only_while_ours_and_unexpired(world: World) -> None:
    store, other = world.store, rival(world)
    assert not store.extend("a", 60.0)  # nobody's: extending is not taking
    assert lease_of(world) is None
    assert store.acquire("a", 60.0)
    world.clock.now = T0 + 59.0
    assert store.extend("a", 60.0)
    assert lease_of(world) == ("a", T0 + 119.0)
    assert not other.extend("b", 60.0)  # a's
    world.clock.now = T0 + 119.5
    # expired, and free to take: but another writer may have held it meanwhile, so no
    assert not store.extend("a", 60.0)
    assert lease_of(world) == ("a", T0 + 119.0)
    assert other.acquire("b", 60.0) and not store.extend("a", 60.0)


def test_the_lease_is_released_only_by_its_holder(world: World) -> None:
    assert world.store.acquire("a", 60.0)
    world.store.release("b")  # not b's: nothing happens, no error
    assert lease_of(world) == ("a", T0 + 60.0)
    world.store.release("a")
    assert lease_of(world) is None
    world.store.release("a")  # already gone: no error
    assert rival(world).acquire("b", 60.0)


def test_lease_errors_other_than_a_held_lease_propagate(world: World) -> None:
    missing = HostStore(world.clients.client("dynamodb"), "no-such-table", clock=world.clock)
    with pytest.raises(ClientError, match="ResourceNotFound"):
        missing.acquire("a", 60.0)
    with pytest.raises(ClientError, match="ResourceNotFound"):
        missing.release("a")


def test_a_throttled_request_is_sent_again_with_the_lease_extended_before_each_attempt(
        world: World) -> None:
    a, b = host(1), host(2)
    for h in (a, b):
        world.publish(h, desired(h, "calc"))
    busy = ClientError({"Error": {"Code": "PriorRequestNotComplete", "Message": "busy"},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, "ChangeResourceRecordSets")
    world.faults.fail("change_resource_record_sets", throttled("ChangeResourceRecordSets"), busy)
    sleep = Sleeper(world.clock)
    leases: list[tuple[str, float] | None] = []
    world.faults.on_attempt.append(lambda changes: leases.append(lease_of(world)))
    writer = world.writer(sleep=sleep, jitter=lambda: 1.0)

    outcome = writer.write([a.label, b.label])

    assert writer.retries == 2 and outcome.change_requests == 1 and not outcome.failed
    assert sleep.slept == [1.0, 2.0]  # botocore's backoff, here without its jitter
    owner = leases[0][0] if leases[0] else ""
    # each attempt went out with the lease extended to LEASE_SECONDS from that moment
    assert leases == [(owner, T0 + LEASE_SECONDS), (owner, T0 + 1.0 + LEASE_SECONDS),
                      (owner, T0 + 3.0 + LEASE_SECONDS)]
    assert world.owned_by(a, b) == {h.label: set(desired(h, "calc")) for h in (a, b)}


def test_a_writer_whose_lease_expired_while_it_waited_sends_nothing_more(world: World) -> None:
    """Another writer may have taken the expired lease, applied newer publications and given
    it back: an attempt of what this one planned before could roll them back."""
    a = host(1)
    world.publish(a, desired(a, "calc"))
    world.faults.fail("change_resource_record_sets", throttled("ChangeResourceRecordSets"))
    sent: list[set[str]] = []
    world.faults.on_attempt.append(lambda changes: sent.append(hosts_in(changes)))
    writer = world.writer(sleep=Sleeper(world.clock), jitter=lambda: LEASE_SECONDS + 1.0)

    with pytest.raises(WriterInterrupted, match="lease was lost") as caught:
        writer.write([a.label])

    assert len(sent) == 1 and caught.value.unfinished == {a.label}  # the throttled attempt
    assert world.applied(a)[a.label].verified == 0.0  # unknown: read next time
    assert world.owned(a) == set()


def test_a_request_is_not_sent_again_past_the_deadline_or_the_attempts(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc"))
    world.faults.fail("change_resource_record_sets",
                      *[throttled("ChangeResourceRecordSets")] * 3)
    with pytest.raises(WriterInterrupted, match="deadline"):
        world.writer(sleep=Sleeper(world.clock), jitter=lambda: 1.0).write(
            [a.label], deadline=T0 + 0.5)
    with pytest.raises(ClientError, match="Throttling"):
        world.writer(sleep=Sleeper(world.clock), max_attempts=2).write([a.label])
    assert world.owned(a) == set()
    assert world.writer().write([a.label]).changes == 2  # read (unknown), then applied


def test_a_second_writer_waits_for_the_lease_then_gives_all_its_hosts_back(world: World) -> None:
    hosts = [host(i) for i in range(3)]
    for h in hosts:
        world.publish(h, desired(h, "calc"))
    assert rival(world).acquire("busy-writer", 600.0)
    sleep = Sleeper(world.clock)
    writer = world.writer(sleep=sleep, lock_wait=30.0)
    before = world.requests()

    with pytest.raises(WriterInterrupted) as caught:
        writer.write(h.label for h in hosts)

    assert caught.value.unfinished == {h.label for h in hosts}
    assert 28.0 <= sum(sleep.slept) <= 30.0 and max(sleep.slept) <= 2.0  # backed off, capped
    spent = delta(world.requests(), before)
    assert set(spent) == {"PutItem"}  # only tries at the lease: nothing loaded, sent or saved
    assert spent["PutItem"] == len(sleep.slept) + 1
    assert world.applied(*hosts) == {} and world.owned_by(*hosts) == {h.label: set()
                                                                      for h in hosts}
    assert lease_of(world) == ("busy-writer", T0 + 600.0)  # never released by a non-holder

    rival(world).release("busy-writer")
    outcome = writer.write(h.label for h in hosts)

    assert not outcome.failed and outcome.changes == 6
    assert world.owned_by(*hosts) == {h.label: set(desired(h, "calc")) for h in hosts}
    assert lease_of(world) is None  # given back at the end


def test_a_dead_writer_blocks_the_others_only_until_its_lease_expires(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc"))
    assert rival(world).acquire("dead-writer", LEASE_SECONDS)  # and never released
    sleep = Sleeper(world.clock)

    outcome = world.writer(sleep=sleep, lock_wait=120.0).write([a.label])

    assert LEASE_SECONDS <= sum(sleep.slept) <= LEASE_SECONDS + 2.0
    assert not outcome.failed and world.owned(a) == set(desired(a, "calc"))


def test_a_deadline_shortens_the_wait_for_the_lease(world: World) -> None:
    a = host(1)
    world.publish(a, desired(a, "calc"))
    assert rival(world).acquire("busy-writer", 600.0)
    sleep = Sleeper(world.clock)
    with pytest.raises(WriterInterrupted):
        world.writer(sleep=sleep, lock_wait=120.0).write([a.label], deadline=T0 + 5.0)
    assert world.clock.now <= T0 + 5.0 and sum(sleep.slept) >= 3.0


def small_requests(monkeypatch: pytest.MonkeyPatch, records: int) -> None:
    """Pack at most ``records`` records per change request: several requests from a few
    hosts, so the tests of what happens between requests stay small and fast."""
    def packed(groups: Any, max_records: int = records, max_chars: int = 32000) -> Any:
        return route53.pack(groups, max_records, max_chars)

    monkeypatch.setattr(zone_writer, "pack", packed)


def hosts_in(changes: list[dict[str, Any]]) -> set[str]:
    owners = (ownership.parse_set_identifier(c["ResourceRecordSet"].get("SetIdentifier"))
              for c in changes)
    return {o.host for o in owners if o is not None}


def test_the_lease_is_extended_before_every_change_request(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    small_requests(monkeypatch, 4)
    hosts = [host(i) for i in range(6)]  # 2 record sets each: 3 requests
    for h in hosts:
        world.publish(h, desired(h, "calc"))
    other = rival(world)
    refused: list[bool] = []

    def slow_request(_changes: list[dict[str, Any]]) -> None:
        world.clock.now += 50.0  # 3 x 50 s: far past one lease of 60 s
        refused.append(not other.acquire("rival", LEASE_SECONDS))

    world.faults.on_change.append(slow_request)
    outcome = world.writer().write(h.label for h in hosts)

    assert outcome.change_requests == 3 and refused == [True, True, True]
    assert world.owned_by(*hosts) == {h.label: set(desired(h, "calc")) for h in hosts}
    assert lease_of(world) is None


def six_known_hosts(world: World, monkeypatch: pytest.MonkeyPatch,
                    *names: str) -> tuple[list[Host], ZoneWriter]:
    """Six hosts written with "calc", then published again with ``names``; requests of at
    most four changes (two hosts each)."""
    small_requests(monkeypatch, 4)
    hosts = [host(i) for i in range(6)]
    for h in hosts:
        world.publish(h, desired(h, "calc"))
    writer = world.writer()
    writer.write(h.label for h in hosts)
    for h in hosts:
        world.publish(h, desired(h, *names))
    return hosts, writer


def test_a_writer_that_lost_its_lease_stops_before_its_next_request(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts, writer = six_known_hosts(world, monkeypatch, "calc", "time")  # 2 per request
    sent: list[set[str]] = []

    def stalled(changes: list[dict[str, Any]]) -> None:
        sent.append(hosts_in(changes))
        if len(sent) == 1:  # stalled past its lease; another writer took over meanwhile
            world.clock.now += LEASE_SECONDS + 1.0
            assert rival(world).acquire("rival", LEASE_SECONDS)

    world.faults.on_change.append(stalled)

    with pytest.raises(WriterInterrupted, match="lease was lost") as caught:
        writer.write(h.label for h in hosts)

    assert len(sent) == 1 and caught.value.unfinished == {h.label for h in hosts} - sent[0]
    applied = world.applied(*hosts)
    for h in hosts:
        done = h.label in sent[0]
        assert applied[h.label].seq == (2 if done else 1)
        assert world.owned(h) == set(desired(h, "calc", "time") if done else desired(h, "calc"))
    assert lease_of(world) == ("rival", T0 + 2 * LEASE_SECONDS + 1.0)  # not released by us


# --- a writer killed anywhere leaves no belief the zone contradicts ---------------------------

class Killed(RuntimeError):
    """The process died (a Lambda timeout, a crash): nothing after this ran."""


@dataclass
class Death:
    """When the writer's process dies: at the ``nth`` call of ``operation``, before the call
    left (``landed=False``) or after it took effect, before its answer came back."""

    operation: str
    nth: int
    landed: bool
    dead: bool = False
    calls: Counter[str] = field(default_factory=Counter)


class Mortal:
    """A boto3 client of a process that dies as ``death`` says: from then on it makes no
    request at all (every call fails), so no ``finally`` can save or release anything."""

    def __init__(self, client: Any, death: Death) -> None:
        self._client = client
        self._death = death

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        death = self._death
        if not callable(real):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            if death.dead:
                raise Killed(f"{name} after death")
            if name == "get_paginator":
                return real(*args, **kwargs)
            death.calls[name] += 1
            if name == death.operation and death.calls[name] == death.nth:
                if death.landed:  # taken, or refused: the answer is lost either way
                    with contextlib.suppress(ClientError):
                        real(*args, **kwargs)
                death.dead = True
                raise Killed(f"killed at {name} #{death.nth}")
            return real(*args, **kwargs)

        return call


def beliefs_hold(world: World, hosts: list[Host],
                 stale: dict[str, Applied] | None = None) -> None:
    """Every host's stored knowledge is either true of the zone or marked "read me".

    ``stale``: knowledge made wrong behind the writer's back (a record set deleted by hand)
    before the write; it may still be there as it was (Route 53 refuses what is planned from
    it, so it cannot do harm), but the writer must not have written a wrong belief anew.
    """
    owned = world.owned_by(*hosts)
    published = world.store.load([h.label for h in hosts])[0]
    for label, known in world.applied(*hosts).items():
        if known.verified == 0.0:
            continue  # unknown: its next write reads it
        if stale and stale.get(label) == known:
            continue
        assert set(known.records) == owned[label], f"{label}: believed {known.records}"
        if known.seq == published[label].seq:  # believed applied: really applied
            assert owned[label] == set(published[label].records), label


def kill_scenario(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[
        dict[str, list[RecordSet]], dict[str, Applied]]:
    """Six hosts whose new publications take several requests: four known hosts changing,
    one new host (read first), one whose knowledge someone made wrong (its DELETE is
    refused: the request carrying it is bisected). Returns what each host wants, and the
    knowledge made stale."""
    small_requests(monkeypatch, 6)
    known = [host(i) for i in range(4)]
    new, wrong = host(10), host(11)
    for h in [*known, wrong]:
        world.publish(h, desired(h, "calc", "time"))
    world.writer().write(h.label for h in [*known, wrong])
    world.by_hand(Action.DELETE, [r for r in desired(wrong, "calc", "time")
                                  if r.name.startswith("time.")])
    wanted = {h.label: desired(h, "calc", "portal", port_base=31000)
              for h in [*known, new, wrong]}
    for h in [*known, new, wrong]:
        world.publish(h, wanted[h.label])
    world.clock.now = T0 + 10.0
    return wanted, world.applied(wrong)


KILLS = [Death(op, n, landed) for op, counts in (("change_resource_record_sets", 5),
                                                 ("batch_write_item", 8), ("put_item", 3))
         for n in range(1, counts + 1) for landed in (False, True)]


def test_the_kill_scenario_makes_the_calls_the_kills_aim_at(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a death, the scenario makes at least as many calls as the deaths count on
    (else a kill test would pass without killing anything)."""
    wanted, _ = kill_scenario(world, monkeypatch)
    death = Death("none", 0, False)
    writer = ZoneWriter(Route53Zone(Mortal(world.faults, death), world.zone.zone),
                        HostStore(Mortal(world.clients.client("dynamodb"), death), TABLE,
                                  clock=world.clock), clock=world.clock)
    outcome = writer.write(wanted)
    assert not outcome.failed and outcome.rejected >= 1 and outcome.hosts_read == 2
    assert death.calls["change_resource_record_sets"] >= 5
    assert death.calls["batch_write_item"] >= 8 and death.calls["put_item"] >= 3


@pytest.mark.parametrize("death", KILLS, ids=lambda d: (
    f"{d.operation}-{d.nth}-{'landed' if d.landed else 'unsent'}"))
def test_a_writer_killed_anywhere_leaves_truth_or_unknown_and_the_next_write_converges(
        world: World, monkeypatch: pytest.MonkeyPatch, death: Death) -> None:
    death = Death(death.operation, death.nth, death.landed)  # parameters are shared
    wanted, stale = kill_scenario(world, monkeypatch)
    hosts = [host(i) for i in (0, 1, 2, 3, 10, 11)]
    doomed = ZoneWriter(Route53Zone(Mortal(world.faults, death), world.zone.zone),
                        HostStore(Mortal(world.clients.client("dynamodb"), death), TABLE,
                                  clock=world.clock), clock=world.clock)

    with pytest.raises(Killed):
        doomed.write(wanted)

    assert death.dead
    beliefs_hold(world, hosts, stale)
    sleep = Sleeper(world.clock)  # the dead writer's lease is waited out

    outcome = world.writer(sleep=sleep).write(wanted)

    assert not outcome.failed
    assert world.owned_by(*hosts) == {k: set(v) for k, v in wanted.items()}
    beliefs_hold(world, hosts)
    applied = world.applied(*hosts)
    assert {k: (a.seq, set(a.records)) for k, a in applied.items()} == {
        k: (world.seqs[k], set(v)) for k, v in wanted.items()}
    assert sum(sleep.slept) <= LEASE_SECONDS + 2.0


# --- the deadline --------------------------------------------------------------------------------

def deadline_scenario(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[
        list[Host], ZoneWriter, dict[str, Applied]]:
    """Six known hosts, each with a new publication: three requests, no read."""
    hosts, writer = six_known_hosts(world, monkeypatch, "time")  # delete calc, create time
    return hosts, writer, world.applied(*hosts)


def test_no_request_starts_after_the_deadline(world: World,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    hosts, writer, before = deadline_scenario(world, monkeypatch)
    sent: list[set[str]] = []

    def slow(changes: list[dict[str, Any]]) -> None:
        sent.append(hosts_in(changes))
        world.clock.now = T0 + 100.0  # the first request ends past the deadline

    world.faults.on_change.append(slow)

    with pytest.raises(WriterInterrupted, match="deadline") as caught:
        writer.write((h.label for h in hosts), deadline=T0 + 50.0)

    assert len(sent) == 1 and sent[0]
    assert caught.value.unfinished == {h.label for h in hosts} - sent[0]
    applied = world.applied(*hosts)
    for h in hosts:
        if h.label in sent[0]:  # the first request's hosts: saved as applied, still trusted
            assert applied[h.label].seq == world.seqs[h.label]
            assert applied[h.label].verified == before[h.label].verified
            assert world.owned(h) == set(desired(h, "time"))
        else:  # the others: untouched, in the zone and in the table
            assert applied[h.label] == before[h.label]
            assert world.owned(h) == set(desired(h, "calc"))
    assert lease_of(world) is None

    world.faults.on_change.clear()
    outcome = writer.write(caught.value.unfinished, deadline=T0 + 1000.0)
    assert outcome.hosts_read == 0 and not outcome.failed
    assert world.owned_by(*hosts) == {h.label: set(desired(h, "time")) for h in hosts}


def test_a_deadline_already_past_sends_nothing_and_hands_back_only_what_is_left(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts, writer, before = deadline_scenario(world, monkeypatch)
    same, missing = host(20), host(21)
    world.publish(same, desired(same, "calc"))
    writer.write([same.label])
    world.publish(same, desired(same, "calc"))  # republished unchanged: nothing to send

    with pytest.raises(WriterInterrupted) as caught:
        writer.write([*(h.label for h in hosts), same.label, missing.label], deadline=T0)

    assert caught.value.unfinished == {h.label for h in hosts}  # not the done or skipped
    assert world.faults.change_calls == 3 + 1  # the setup's writes only
    after = world.applied(*hosts)
    assert after == before
    assert world.applied(same)[same.label].seq == world.seqs[same.label]  # nothing to do: done


def test_a_rejected_request_is_not_bisected_past_the_deadline(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts, writer, _ = deadline_scenario(world, monkeypatch)
    wrong = hosts[0]  # its calc record set was deleted by hand: its DELETE is refused
    world.by_hand(Action.DELETE, [r for r in desired(wrong, "calc") if r.type == "SRV"])
    sent: list[set[str]] = []

    def slow(changes: list[dict[str, Any]]) -> None:
        sent.append(hosts_in(changes))
        world.clock.now = T0 + 100.0

    world.faults.on_change.append(slow)

    with pytest.raises(WriterInterrupted, match="deadline") as caught:
        writer.write((h.label for h in hosts), deadline=T0 + 50.0)

    assert len(sent) == 1 and wrong.label in sent[0]  # refused; nothing more was sent
    assert caught.value.unfinished == {h.label for h in hosts}
    beliefs_hold(world, hosts)
    world.faults.on_change.clear()
    outcome = writer.write(caught.value.unfinished)
    assert not outcome.failed
    assert world.owned_by(*hosts) == {h.label: set(desired(h, "time")) for h in hosts}


def test_the_lease_is_extended_before_each_request_of_a_bisection(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts, writer, _ = deadline_scenario(world, monkeypatch)
    wrong = hosts[0]
    world.by_hand(Action.DELETE, [r for r in desired(wrong, "calc") if r.type == "SRV"])
    world.faults.name_owners = False
    other = rival(world)
    refused: list[bool] = []

    def slow_request(_changes: list[dict[str, Any]]) -> None:
        world.clock.now += 50.0
        refused.append(not other.acquire("rival", LEASE_SECONDS))

    world.faults.on_change.append(slow_request)
    outcome = writer.write(h.label for h in hosts)

    assert outcome.rejected >= 2 and not outcome.failed  # the pack, then wrong's half
    assert len(refused) >= 5 and all(refused)
    assert world.owned_by(*hosts) == {h.label: set(desired(h, "time")) for h in hosts}

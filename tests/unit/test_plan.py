"""The plan, as a table: current zone + desired records -> exactly these changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ecssd_agent.core.model import Action, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Owner, owned_by_host
from ecssd_agent.core.plan import ForeignRecord, plan
from ecssd_agent.core.records import host_records, routed

ZONE = "sd.internal."
HOST = Host("ip-10-0-0-12", "10.0.0.12")
owns = owned_by_host(HOST.label)


def instance(name: str, port: int, cid: str = "a" * 64, container_port: int = 8081) -> ServiceInstance:
    return ServiceInstance(name=name, protocol="tcp", container_port=container_port, port=port,
                           container_id=cid)


def desired(*instances: ServiceInstance, routing: Routing = Routing.WEIGHTED, ttl: int = 0,
            host: Host = HOST) -> list[RecordSet]:
    records, problems = host_records(host, instances, ZONE, routing, ttl)
    assert problems == []
    return records


CALC = instance("_calc._tcp", 32768)
CALC_B = instance("_calc._tcp", 32769, cid="b" * 64)
TIME = instance("time", 32770, cid="c" * 64, container_port=8080)
OTHER_HOST = desired(CALC, host=Host("ip-10-0-0-13", "10.0.0.13"))
FOREIGN = [
    RecordSet("www.sd.internal.", "A", ("1.2.3.4",), 300),  # no SetIdentifier
    RecordSet("www.sd.internal.", "A", ("1.2.3.5",), 300, set_identifier="blue", weight=10),
    RecordSet("sd.internal.", "NS", ("ns-1.",), 172800),
    RecordSet("x.sd.internal.", "SRV", ("1 1 1 t.",), 0, set_identifier="ecssd:h:ip-10-0-0-1", weight=1),
]


def summary(changes):
    return [(c.action.value, c.record.type, c.record.name) for c in changes]


CASES = [
    ("empty zone: create host A and SRVs", [], desired(CALC, TIME),
     [("CREATE", "SRV", "_calc._tcp.sd.internal."), ("CREATE", "A", "ip-10-0-0-12.sd.internal."),
      ("CREATE", "SRV", "time.sd.internal.")]),
    ("in sync: nothing", desired(CALC, TIME), desired(CALC, TIME), []),
    ("container gone: delete its SRV only", desired(CALC, CALC_B), desired(CALC),
     [("DELETE", "SRV", "_calc._tcp.sd.internal.")]),
    ("port changed: upsert", desired(CALC), desired(replace(CALC, port=40000)),
     [("UPSERT", "SRV", "_calc._tcp.sd.internal.")]),
    ("host IP changed: upsert the host A", desired(CALC), desired(CALC, host=Host(HOST.label, "10.9.9.9")),
     [("UPSERT", "A", "ip-10-0-0-12.sd.internal.")]),
    ("ttl changed: upsert all", desired(CALC), desired(CALC, ttl=60),
     [("UPSERT", "SRV", "_calc._tcp.sd.internal."), ("UPSERT", "A", "ip-10-0-0-12.sd.internal.")]),
    ("routing changed: delete then create", desired(CALC), desired(CALC, routing=Routing.MULTIVALUE),
     [("DELETE", "SRV", "_calc._tcp.sd.internal."), ("DELETE", "A", "ip-10-0-0-12.sd.internal."),
      ("CREATE", "SRV", "_calc._tcp.sd.internal."), ("CREATE", "A", "ip-10-0-0-12.sd.internal.")]),
    ("remove: delete everything owned", desired(CALC, TIME), [],
     [("DELETE", "SRV", "_calc._tcp.sd.internal."), ("DELETE", "A", "ip-10-0-0-12.sd.internal."),
      ("DELETE", "SRV", "time.sd.internal.")]),
    ("other hosts and foreign records are never touched", [*OTHER_HOST, *FOREIGN], [], []),
    ("other hosts' records of the same name stay", [*OTHER_HOST, *FOREIGN, *desired(CALC)],
     desired(CALC, TIME), [("CREATE", "SRV", "time.sd.internal.")]),
]


@pytest.mark.parametrize("case,current,want,expected", CASES, ids=[c[0] for c in CASES])
def test_plan(case, current, want, expected):
    changes = plan(current, want, owns)
    assert summary(changes) == expected
    # Every change is to a record set this host owns.
    assert all(owns(c.record) for c in changes)


@pytest.mark.parametrize("case,current,want,expected", CASES, ids=[c[0] for c in CASES])
def test_idempotency(case, current, want, expected):
    """Applying the plan and planning again yields nothing (the second --sync is free)."""
    zone = {r.key: r for r in current}
    for change in plan(current, want, owns):
        if change.action is Action.DELETE:
            del zone[change.record.key]
        else:
            zone[change.record.key] = change.record
    assert plan(zone.values(), want, owns) == []


def test_deletes_come_first_and_use_the_listed_record():
    host_a, calc_srv = desired(CALC)
    listed = replace(calc_srv, listed={"Name": "as listed"})
    changes = plan([host_a, listed], desired(TIME), owns)
    assert [c.action for c in changes] == [Action.DELETE, Action.CREATE]
    assert changes[0].record.listed == {"Name": "as listed"}


def test_refuses_to_plan_a_foreign_record():
    other = routed("x.sd.internal.", "A", ["1.1.1.1"], Owner(host="ip-other"), Routing.WEIGHTED, 0)
    with pytest.raises(ForeignRecord):
        plan([], [other], owns)


def test_value_order_does_not_matter():
    a = RecordSet("a.sd.internal.", "A", ("1.1.1.1", "2.2.2.2"), 0, "ecssd:h:ip-10-0-0-12", 1)
    b = routed("a.sd.internal.", "A", ["2.2.2.2", "1.1.1.1"], Owner(host=HOST.label), Routing.WEIGHTED, 0)
    assert plan([a], [b], owns) == []


def test_never_delete_adds_and_corrects_but_removes_nothing():
    """``delete=False``: what a repair that must not take anything away plans. The owned record
    set no longer desired stays; a missing one is created, a wrong one corrected, and one whose
    routing policy changes is still replaced (its old self is the record set being corrected)."""
    current = [*desired(CALC, CALC_B), *OTHER_HOST]
    changes = plan(current, desired(replace(CALC, port=40000), TIME), owns, delete=False)
    assert summary(changes) == [("UPSERT", "SRV", "_calc._tcp.sd.internal."),
                                ("CREATE", "SRV", "time.sd.internal.")]
    assert plan(current, [], owns, delete=False) == []
    multivalue = desired(CALC, TIME, routing=Routing.MULTIVALUE)
    assert summary(plan(desired(CALC), multivalue, owns, delete=False)) == [
        ("DELETE", "SRV", "_calc._tcp.sd.internal."), ("DELETE", "A", "ip-10-0-0-12.sd.internal."),
        ("CREATE", "SRV", "_calc._tcp.sd.internal."), ("CREATE", "A", "ip-10-0-0-12.sd.internal."),
        ("CREATE", "SRV", "time.sd.internal.")]

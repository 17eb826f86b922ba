"""The client library: names, RFC 2782 order, additional records, TTL cache, errors.

The stub resolver answers from records through the server's own responder, in process:
real DNS messages, but full control of the answers and a count of every query.
"""

from __future__ import annotations

from collections import Counter

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest

from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.records import srv_value
from ecssd_agent.dns import client
from ecssd_agent.dns.client import (
    Instance,
    NoInstances,
    ResolverError,
    ServiceResolver,
    make_resolver,
    parse_nameserver,
)
from ecssd_agent.dns.responder import Responder
from ecssd_agent.dns.view import ZoneView

Z = "servicediscovery.internal."


class StubResolver:
    """``dns.resolver.Resolver.resolve`` over an in-process ZoneView."""

    def __init__(self, records: list[RecordSet], additional: bool = True) -> None:
        self.responder = Responder(ZoneView(Z, records))
        self.additional = additional
        self.asked: list[tuple[str, str]] = []
        self.fail: Exception | None = None

    def set_records(self, records: list[RecordSet]) -> None:
        self.responder.view = ZoneView(Z, records)

    def resolve(self, qname, rdtype="A", *args, raise_on_no_answer=True, **kwargs):
        name = dns.name.from_text(str(qname))
        rdtype = dns.rdatatype.RdataType.make(rdtype)
        self.asked.append((name.to_text(), dns.rdatatype.to_text(rdtype)))
        if self.fail is not None:
            raise self.fail
        query = dns.message.make_query(name, rdtype)
        response = dns.message.from_wire(self.responder.respond(query.to_wire(), False)[0])
        if not self.additional:
            response.additional = []
        if response.rcode() == dns.rcode.NXDOMAIN:
            raise dns.resolver.NXDOMAIN(qnames=[name], responses={name: response})
        if not response.answer and raise_on_no_answer:
            raise dns.resolver.NoAnswer(response=response)
        return dns.resolver.Answer(name, rdtype, dns.rdataclass.IN, response)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def host(label: str, ip: str, ttl: int = 0) -> RecordSet:
    return RecordSet(f"{label}.{Z}", "A", (ip,), ttl)


def srv(name: str, values: list[tuple[int, int, int, str]], ttl: int = 0) -> RecordSet:
    return RecordSet(f"{name}.{Z}", "SRV", tuple(
        srv_value(port, f"{target}.{Z}", priority, weight)
        for priority, weight, port, target in values), ttl)


def library(records: list[RecordSet], **kwargs) -> tuple[ServiceResolver, StubResolver]:
    stub = StubResolver(records, additional=kwargs.pop("additional", True))
    return ServiceResolver(Z, resolver=stub, **kwargs), stub


def test_names_are_queried_exactly_as_the_agent_publishes_them(monkeypatch):
    lib, _ = library([])
    assert lib.absolute("calc") == f"calc.{Z}"
    assert lib.absolute("_calc._tcp") == f"_calc._tcp.{Z}"
    assert lib.absolute("Calc.ServiceDiscovery.Internal") == f"calc.{Z}"
    assert lib.absolute("calc.example.org.") == "calc.example.org."
    monkeypatch.setenv("ECSSD_DOMAIN", "corp.local")
    assert ServiceResolver(resolver=StubResolver([])).absolute("calc") == "calc.corp.local."
    with pytest.raises(ValueError):
        lib.absolute(" ")


def test_instances_follow_priority_then_weight_with_addresses_from_the_additional_section():
    records = [srv("_calc._tcp", [(1, 1, 8001, "a"), (1, 3, 8002, "b"), (2, 1, 8003, "c")]),
               host("a", "10.0.0.1"), host("b", "10.0.0.2"), host("c", "10.0.0.3")]
    lib, stub = library(records)
    firsts: Counter[int] = Counter()
    for _ in range(1000):
        instances = lib.resolve("_calc._tcp")
        assert len(instances) == 3
        assert instances[2] == Instance(f"c.{Z}".rstrip("."), "10.0.0.3", 8003)  # priority 2 last
        assert {i.port for i in instances[:2]} == {8001, 8002}
        firsts[instances[0].port] += 1
    assert 650 <= firsts[8002] <= 850  # weight 3 of 4 comes first ~75% of the time
    assert {kind for _, kind in stub.asked} == {"SRV"}  # addresses from the additional section


def test_without_additional_records_each_target_is_asked_for_its_address():
    records = [srv("calc", [(1, 1, 8001, "a"), (1, 1, 8002, "b")]),
               host("a", "10.0.0.1"), RecordSet(f"b.{Z}", "A", ("10.0.0.2", "10.0.0.3"), 0)]
    lib, stub = library(records, additional=False)
    instances = lib.resolve("calc")
    assert sorted(instances) == sorted([Instance(f"a.{Z}"[:-1], "10.0.0.1", 8001),
                                        Instance(f"b.{Z}"[:-1], "10.0.0.2", 8002),
                                        Instance(f"b.{Z}"[:-1], "10.0.0.3", 8002)])
    assert sorted(stub.asked) == sorted([(f"calc.{Z}", "SRV"), (f"a.{Z}", "A"), (f"b.{Z}", "A")])


def test_cache_honours_the_ttl_and_ttl_zero_means_no_cache():
    clock = Clock()
    lib, stub = library([srv("calc", [(1, 1, 8001, "a")], ttl=30), host("a", "10.0.0.1", ttl=30),
                         srv("zero", [(1, 1, 8002, "a")], ttl=0)], clock=clock)
    lib.resolve("calc")
    lib.resolve("calc")
    assert len(stub.asked) == 1
    clock.now += 29.9
    lib.resolve("calc")
    assert len(stub.asked) == 1
    clock.now += 0.2
    lib.resolve("calc")
    assert len(stub.asked) == 2
    lib.resolve("zero")
    lib.resolve("zero")
    assert stub.asked.count((f"zero.{Z}", "SRV")) == 2


def test_cache_uses_the_smallest_ttl_of_srv_and_addresses_and_stays_small():
    clock = Clock()
    lib, stub = library([srv("calc", [(1, 1, 8001, "a")], ttl=300), host("a", "10.0.0.1", ttl=5)],
                        clock=clock, cache_size=2)
    lib.resolve("calc")
    clock.now += 6
    lib.resolve("calc")
    assert len(stub.asked) == 2
    for name in ("x1", "x2", "x3"):
        lib._store(f"{name}.", 1, 60, ["10.9.9.9"])
    assert len(lib._cache) == 2


def test_a_changed_answer_is_seen_once_the_ttl_expires():
    clock = Clock()
    lib, stub = library([srv("calc", [(1, 1, 8001, "a")], ttl=10), host("a", "10.0.0.1", ttl=10)],
                        clock=clock)
    assert lib.resolve_one("calc").port == 8001
    stub.set_records([srv("calc", [(1, 1, 9001, "a")], ttl=10), host("a", "10.0.0.1", ttl=10)])
    assert lib.resolve_one("calc").port == 8001
    clock.now += 10
    assert lib.resolve_one("calc").port == 9001


@pytest.mark.parametrize(("records", "reason"), [
    ([], "does not exist"),
    ([host("calc", "10.0.0.1")], "has no SRV record"),
    ([RecordSet(f"calc.{Z}", "SRV", ("0 0 0 .",), 0)], "no SRV record has a target"),
    ([srv("calc", [(1, 1, 8001, "gone")])], "does not exist"),
])
def test_no_instance_is_a_clear_error(records, reason):
    lib, _ = library(records)
    with pytest.raises(NoInstances) as caught:
        lib.resolve("calc")
    assert reason in str(caught.value) and caught.value.name == f"calc.{Z}"


def test_negative_answers_are_not_cached():
    lib, stub = library([])
    with pytest.raises(NoInstances):
        lib.resolve("calc")
    stub.set_records([srv("calc", [(1, 1, 8001, "a")]), host("a", "10.0.0.1")])
    assert lib.resolve_one("calc").ip == "10.0.0.1"


def test_resolver_failures_are_not_mistaken_for_no_instances():
    lib, stub = library([])
    stub.fail = dns.exception.Timeout()
    with pytest.raises(ResolverError):
        lib.resolve("calc")
    stub.fail = dns.resolver.NoNameservers()
    with pytest.raises(ResolverError):
        lib.resolve("calc")


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("::1", ("::1", 53)),
    ("localhost:5300", None),
])
def test_nameserver_addresses(value, expected):
    ip, port = parse_nameserver(value)
    if expected is None:
        assert port == 5300 and ip in ("127.0.0.1", "::1")
    else:
        assert (ip, port) == expected


@pytest.mark.parametrize("value", ["127.0.0.1:0", "127.0.0.1:x", ":53", "no-such-host.invalid"])
def test_bad_nameserver_addresses(value):
    with pytest.raises(ValueError):
        parse_nameserver(value)


def test_resolver_comes_from_ecssd_dns_else_the_system(monkeypatch):
    monkeypatch.setenv("ECSSD_DNS", "127.0.0.1:5353")
    resolver = make_resolver()
    assert resolver.nameservers == ["127.0.0.1"] and resolver.port == 5353
    monkeypatch.delenv("ECSSD_DNS")
    try:
        system = make_resolver()
    except ResolverError:
        return  # no /etc/resolv.conf here: the error says to set ECSSD_DNS
    assert system.port == 53


def test_module_level_helpers_share_one_resolver(monkeypatch):
    monkeypatch.setenv("ECSSD_DNS", "127.0.0.1:5353")
    monkeypatch.setattr(client, "_default", None)
    first = client.default_resolver()
    assert client.default_resolver() is first
    stub = StubResolver([srv("calc", [(1, 1, 8001, "a")]), host("a", "10.0.0.1")])
    first.resolver = stub
    assert client.resolve("calc") == [Instance(f"a.{Z}"[:-1], "10.0.0.1", 8001)]
    assert client.resolve_one("calc").port == 8001

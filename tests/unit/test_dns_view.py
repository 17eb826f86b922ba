"""The DNS server's answers, pure: records -> ZoneView -> Responder, checked with dnspython.

Every query is built by dnspython and every response parsed by it, so these tests check
the wire format as a real client reads it, not our own idea of it.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from ecssd_agent.core.model import Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.records import host_records, srv_value
from ecssd_agent.dns import wire
from ecssd_agent.dns.responder import Responder
from ecssd_agent.dns.view import ZoneView, unavailable

Z = "servicediscovery.internal."
MOTO_SOA = ("{'Value': 'ns-2048.awsdns-64.com. hostmaster.example.com. 1 7200 900 1209600 "
            "86400'}")


def agent_records(hosts: int, name: str = "_calc._tcp", routing: Routing = Routing.WEIGHTED,
                  ttl: int = 0, per_host: int = 1) -> list[RecordSet]:
    """What the agent writes for ``hosts`` hosts running ``per_host`` instances each."""
    out: list[RecordSet] = []
    for h in range(hosts):
        instances = [ServiceInstance(name, "tcp", 8081 + i, 32000 + h * 10 + i,
                                     f"{h:06d}{i:06d}abcd") for i in range(per_host)]
        records, problems = host_records(Host(f"ip-10-0-{h // 250}-{h % 250}",
                                              f"10.0.{h // 250}.{h % 250}"),
                                         instances, Z, routing, ttl)
        assert not problems
        out.extend(records)
    return out


def base_records() -> list[RecordSet]:
    return [RecordSet(Z, "SOA", (MOTO_SOA,), 900),
            RecordSet(Z, "NS", ("ns-2048.awsdns-64.com", "ns-2049.awsdns-65.net"), 172800)]


def weighted(name: str, rtype: str, values_weights: list[tuple[str, int]],
             ttl: int = 30) -> list[RecordSet]:
    return [RecordSet(name, rtype, (value,), ttl, set_identifier=f"w{i}", weight=weight)
            for i, (value, weight) in enumerate(values_weights)]


def responder(*records: RecordSet, max_udp: int = 4096) -> Responder:
    return Responder(ZoneView(Z, [*base_records(), *records]), max_udp=max_udp)


def ask(r: Responder, name: str, rdtype: str | int = "A", *, udp: bool = True,
        wire_query: bytes | None = None, **kwargs: object) -> dns.message.Message:
    query = wire_query if wire_query is not None else dns.message.make_query(
        name, rdtype, **kwargs).to_wire()  # type: ignore[arg-type]
    response, _ = r.respond(query, udp)
    assert response is not None
    return dns.message.from_wire(response)


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# --- answers and Route 53's routing rules ------------------------------------------------

def test_simple_record_set_answers_all_values_authoritatively_with_the_query_id_and_case():
    r = responder(RecordSet(f"web.{Z}", "A", ("10.1.0.1", "10.1.0.2", "10.1.0.3"), 60))
    query = dns.message.make_query("WeB.ServiceDiscovery.Internal.", "A")
    response = ask(r, "", wire_query=query.to_wire())
    assert response.id == query.id
    assert response.flags & dns.flags.AA and response.flags & dns.flags.QR
    assert response.flags & dns.flags.RD  # copied from the query
    assert not response.flags & dns.flags.RA
    assert response.question[0].name.to_text() == "WeB.ServiceDiscovery.Internal."
    assert sorted(rd.address for rd in response.answer[0]) == ["10.1.0.1", "10.1.0.2",
                                                               "10.1.0.3"]
    assert response.answer[0].ttl == 60


def test_srv_answer_carries_the_target_address_in_the_additional_section():
    r = responder(*agent_records(1))
    response = ask(r, f"_calc._tcp.{Z}", "SRV")
    srv = response.answer[0][0]
    assert (srv.priority, srv.weight, srv.port) == (1, 1, 32000)
    assert srv.target.to_text() == f"ip-10-0-0-0.{Z}"
    [additional] = response.additional
    assert additional.name.to_text() == f"ip-10-0-0-0.{Z}"
    assert [rd.address for rd in additional] == ["10.0.0.0"]


@pytest.mark.parametrize("weights", [(1, 1, 1), (1, 1, 2), (5, 0, 1)])
def test_weighted_group_answers_one_record_set_in_proportion_to_its_weight(weights):
    r = responder(*weighted(f"_w._tcp.{Z}", "SRV",
                            [(srv_value(9000 + i, f"h{i}.{Z}"), w) for i, w in enumerate(weights)]))
    n = 3000
    seen: Counter[int] = Counter()
    for _ in range(n):
        answer = ask(r, f"_w._tcp.{Z}", "SRV").answer
        assert len(answer) == 1 and len(answer[0]) == 1
        seen[answer[0][0].port - 9000] += 1
    total = sum(weights)
    for i, weight in enumerate(weights):
        if weight == 0:
            assert seen[i] == 0
        else:
            assert within(seen[i], n, weight / total), (weights, seen)


def test_weight_zero_everywhere_means_equal_chances():
    r = responder(*weighted(f"z.{Z}", "A", [("10.9.0.1", 0), ("10.9.0.2", 0)]))
    seen = Counter(ask(r, f"z.{Z}").answer[0][0].address for _ in range(1000))
    assert set(seen) == {"10.9.0.1", "10.9.0.2"}
    assert within(seen["10.9.0.1"], 1000, 0.5)


def test_multivalue_answers_all_when_at_most_eight_in_every_rotation():
    r = responder(*agent_records(5, routing=Routing.MULTIVALUE))
    firsts = Counter()
    for _ in range(500):
        response = ask(r, f"_calc._tcp.{Z}", "SRV")
        ports = [rd.port for rd in response.answer[0]]
        assert sorted(ports) == [32000, 32010, 32020, 32030, 32040]
        firsts[ports[0]] += 1
        assert len(response.additional) == 5
    assert len(firsts) == 5  # clients taking the first record spread over all of them


def test_multivalue_answers_eight_distinct_random_record_sets_when_more():
    r = responder(*agent_records(20, routing=Routing.MULTIVALUE))
    seen: Counter[int] = Counter()
    for _ in range(400):
        response = ask(r, f"_calc._tcp.{Z}", "SRV", use_edns=0, payload=4096)
        ports = [rd.port for rd in response.answer[0]]
        assert len(ports) == 8 == len(set(ports))
        targets = {rd.target for rd in response.answer[0]}
        assert {rrset.name for rrset in response.additional} == targets
        seen.update(ports)
    assert len(seen) == 20
    for count in seen.values():
        assert within(count, 400, 8 / 20)


def test_multivalue_of_nine_to_twelve_uses_every_pre_rendered_choice_of_eight():
    r = responder(*agent_records(12, routing=Routing.MULTIVALUE))
    answer = r.view.answers[wire.name_key(f"_calc._tcp.{Z}") + b"\x00\x21"]
    assert len(answer.variants) == math.comb(12, 8)
    seen: Counter[int] = Counter()
    firsts: Counter[int] = Counter()
    for _ in range(600):
        ports = [rd.port for rd in ask(r, f"_calc._tcp.{Z}", "SRV", use_edns=0).answer[0]]
        assert len(ports) == 8 == len(set(ports))
        seen.update(ports)
        firsts[ports[0]] += 1
    assert len(seen) == 12 and len(firsts) >= 8
    for count in seen.values():
        assert within(count, 600, 8 / 12)


def test_additional_addresses_only_for_targets_with_a_deterministic_answer():
    records = [RecordSet(f"s.{Z}", "SRV", (srv_value(1, f"fixed.{Z}"), srv_value(2, f"routed.{Z}"),
                                           srv_value(3, "elsewhere.example.")), 5),
               RecordSet(f"fixed.{Z}", "A", ("10.2.0.1",), 5),
               *weighted(f"routed.{Z}", "A", [("10.3.0.1", 1), ("10.3.0.2", 1)])]
    response = ask(responder(*records), f"s.{Z}", "SRV")
    assert len(response.answer[0]) == 3
    assert [rrset.name.to_text() for rrset in response.additional] == [f"fixed.{Z}"]


def test_additional_addresses_of_a_weighted_target_follow_its_routing():
    records = [RecordSet(f"s.{Z}", "SRV", (srv_value(1, f"t.{Z}"),), 5),
               *weighted(f"t.{Z}", "A", [("10.6.0.1", 1), ("10.6.0.2", 0)])]
    response = ask(responder(*records), f"s.{Z}", "SRV")
    assert [[rd.address for rd in rrset] for rrset in response.additional] == [["10.6.0.1"]]


def test_same_target_twice_gets_one_set_of_additional_records():
    r = responder(*agent_records(1, per_host=3, routing=Routing.MULTIVALUE))
    response = ask(r, f"_calc._tcp.{Z}", "SRV")
    assert len(response.answer[0]) == 3
    assert len(response.additional) == 1 and len(response.additional[0]) == 1


# --- negative answers -----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "rdtype", "rcode"), [
    (f"nope.{Z}", "A", dns.rcode.NXDOMAIN),
    (f"deeper.nope.{Z}", "SRV", dns.rcode.NXDOMAIN),
    (f"ip-10-0-0-0.{Z}", "SRV", dns.rcode.NOERROR),  # exists with another type: NODATA
    (f"_tcp.{Z}", "SRV", dns.rcode.NOERROR),  # an empty non-terminal exists
    (f"ip-10-0-0-0.{Z}", "AAAA", dns.rcode.NOERROR),
])
def test_nxdomain_and_nodata_carry_the_soa(name, rdtype, rcode):
    r = responder(*agent_records(1))
    for kwargs in ({}, {"use_edns": 0}):
        response = ask(r, name, rdtype, **kwargs)
        assert response.rcode() == rcode
        assert response.flags & dns.flags.AA
        assert not response.answer
        [soa] = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == Z
        assert soa.ttl == 900  # min(SOA TTL 900, MINIMUM 86400), RFC 2308


def test_a_malformed_listed_soa_is_replaced_by_a_valid_synthesized_one():
    view = ZoneView(Z, base_records())
    assert [p for p in view.problems if p.startswith("SOA")] == [
        f"SOA {Z}: the listed value {MOTO_SOA!r} does not parse; answering a synthesized SOA "
        f"(ns-2048.awsdns-64.com. hostmaster.{Z} 1 7200 900 1209600 86400)"]
    response = ask(Responder(view), Z, "SOA")
    soa = response.answer[0][0]
    assert soa.mname.to_text() == "ns-2048.awsdns-64.com."
    assert soa.rname.to_text() == f"hostmaster.{Z}"
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum) == (7200, 900, 1209600, 86400)


def test_a_valid_listed_soa_is_answered_as_listed():
    soa = RecordSet(Z, "SOA", ("ns-1.example. admin.example. 7 60 60 60 30",), 120)
    view = ZoneView(Z, [soa])
    assert not view.problems
    response = ask(Responder(view), f"none.{Z}", "A")
    assert response.authority[0].ttl == 30 and response.authority[0][0].serial == 7


def test_names_outside_the_zone_are_refused_and_not_authoritative():
    r = responder(*agent_records(1))
    for name in ("example.com.", "internal.", "xservicediscovery.internal."):
        response = ask(r, name, "A")
        assert response.rcode() == dns.rcode.REFUSED
        assert not response.flags & dns.flags.AA


def test_before_the_first_listing_the_zone_answers_servfail():
    r = Responder(unavailable(Z))
    assert ask(r, f"calc.{Z}", "SRV").rcode() == dns.rcode.SERVFAIL
    assert ask(r, "example.com.", "A").rcode() == dns.rcode.REFUSED


# --- CNAME, wildcard, ANY, transfers ------------------------------------------------------

def test_cname_is_followed_inside_the_zone_with_each_link_routed():
    records = [*weighted(f"api.{Z}", "CNAME", [(f"blue.{Z}", 3), (f"green.{Z}", 1)]),
               RecordSet(f"blue.{Z}", "A", ("10.4.0.1",), 5),
               RecordSet(f"green.{Z}", "A", ("10.4.0.2",), 5)]
    r = responder(*records)
    seen: Counter[str] = Counter()
    for _ in range(2000):
        cname, a = ask(r, f"api.{Z}", "A").answer
        assert cname.rdtype == dns.rdatatype.CNAME
        seen[a[0].address] += 1
    assert within(seen["10.4.0.1"], 2000, 0.75)
    other = ask(r, f"api.{Z}", "TXT")  # no TXT at the target: the CNAME alone
    assert other.rcode() == dns.rcode.NOERROR and len(other.answer) == 1


def test_wildcard_answers_names_that_do_not_exist_but_not_existing_ones():
    r = responder(RecordSet(f"*.apps.{Z}", "A", ("10.5.0.1",), 5),
                  RecordSet(f"real.apps.{Z}", "TXT", ('"hi"',), 5))
    response = ask(r, f"x.y.apps.{Z}", "A")
    assert response.answer[0].name.to_text() == f"x.y.apps.{Z}"
    assert response.answer[0][0].address == "10.5.0.1"
    assert ask(r, f"x.apps.{Z}", "SRV").rcode() == dns.rcode.NOERROR  # NODATA via wildcard
    real = ask(r, f"real.apps.{Z}", "A")  # exists: no synthesis
    assert real.rcode() == dns.rcode.NOERROR and not real.answer
    assert ask(r, f"x.other.{Z}", "A").rcode() == dns.rcode.NXDOMAIN


def test_any_answers_one_rrset_and_transfers_are_refused():
    r = responder(*agent_records(1))
    response = ask(r, f"ip-10-0-0-0.{Z}", "ANY")
    assert len(response.answer) == 1 and response.answer[0].rdtype == dns.rdatatype.A
    assert ask(r, Z, "AXFR", udp=False).rcode() == dns.rcode.REFUSED


def test_alias_records_and_unparsable_values_are_reported_not_answered():
    bad = RecordSet(f"bad.{Z}", "SRV", ("garbage", srv_value(80, f"h.{Z}")), 5)
    alias = RecordSet(f"alias.{Z}", "A", (), None, alias=True)
    view = ZoneView(Z, [bad, alias])
    assert any("garbage" in p for p in view.problems)
    assert any("alias" in p for p in view.problems)
    response = ask(Responder(view), f"bad.{Z}", "SRV")
    assert [rd.port for rd in response.answer[0]] == [80]


# --- EDNS, truncation, TCP ------------------------------------------------------------------

def big_srv(n: int = 60) -> RecordSet:
    return RecordSet(f"big.{Z}", "SRV",
                     tuple(srv_value(20000 + i, f"ip-10-0-0-{i % 3}.{Z}") for i in range(n)), 5)


def test_edns_is_echoed_with_our_size_and_the_do_bit():
    r = responder(*agent_records(1), max_udp=1400)
    response = ask(r, f"_calc._tcp.{Z}", "SRV", use_edns=0, payload=1232, want_dnssec=True)
    assert response.edns == 0 and response.payload == 1400
    assert response.ednsflags & dns.flags.DO
    plain = ask(r, f"_calc._tcp.{Z}", "SRV")
    assert plain.edns == -1


def test_edns_options_are_ignored_and_other_versions_get_badvers():
    r = responder(*agent_records(1))
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"12345678")
    response = ask(r, f"_calc._tcp.{Z}", "SRV", use_edns=0, options=[cookie])
    assert response.rcode() == dns.rcode.NOERROR and response.answer
    response = ask(r, f"_calc._tcp.{Z}", "SRV", use_edns=1)
    assert response.rcode() == dns.rcode.BADVERS


def test_too_large_for_udp_sets_tc_and_tcp_gets_everything():
    r = responder(big_srv(), *agent_records(3))
    truncated = ask(r, f"big.{Z}", "SRV")  # no EDNS: 512 bytes
    assert truncated.flags & dns.flags.TC and not truncated.answer
    truncated = ask(r, f"big.{Z}", "SRV", use_edns=0, payload=1232)
    assert truncated.flags & dns.flags.TC and truncated.edns == 0
    full = ask(r, f"big.{Z}", "SRV", udp=False)
    assert not full.flags & dns.flags.TC
    assert len(full.answer[0]) == 60 and len(full.additional) == 3
    fits = ask(r, f"big.{Z}", "SRV", use_edns=0, payload=4096)  # the client's size is honoured
    assert not fits.flags & dns.flags.TC and len(fits.answer[0]) == 60


def test_when_only_the_additional_section_does_not_fit_it_is_dropped_without_tc():
    r = responder(big_srv(8), *agent_records(3))
    response = ask(r, f"big.{Z}", "SRV")  # 8 SRVs fit in 512 bytes, with their addresses not
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 8 and not response.additional
    assert len(ask(r, f"big.{Z}", "SRV", udp=False).additional) == 3


# --- malformed and unusual packets -----------------------------------------------------------

def test_garbage_is_dropped_or_formerr_and_never_raises():
    r = responder(*agent_records(2))
    rng = random.Random(7)
    good = dns.message.make_query(f"_calc._tcp.{Z}", "SRV", use_edns=0).to_wire()
    for _ in range(5000):
        kind = rng.randrange(3)
        if kind == 0:
            packet = rng.randbytes(rng.randrange(0, 80))
        elif kind == 1:
            packet = good[:rng.randrange(len(good))]
        else:
            packet = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                packet[rng.randrange(len(packet))] = rng.randrange(256)
            packet = bytes(packet)
        response, _ = r.respond(packet, True)
        if response is not None:
            assert response[:2] == packet[:2] and response[2] & wire.QR
            dns.message.from_wire(response)  # whatever we send parses


def test_responses_and_short_packets_are_dropped_and_bad_questions_get_formerr():
    r = responder(*agent_records(1))
    reply, _ = r.respond(dns.message.make_query(f"_calc._tcp.{Z}", "SRV").to_wire(), True)
    assert reply is not None
    assert r.respond(reply, True) == (None, None)  # never answer a response
    assert r.respond(b"\x12\x34\x01", True) == (None, None)
    header_only = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # QDCOUNT 1, no question
    response = dns.message.from_wire(r.respond(header_only, True)[0])
    assert response.rcode() == dns.rcode.FORMERR and response.id == 0x1234


def test_unusual_but_valid_queries_take_the_slow_path():
    r = responder(*agent_records(1))
    # A compression pointer in the question (legal, rare): the name at offset 12 points to 12.
    query = dns.message.make_query(f"_calc._tcp.{Z}", "SRV")
    normal = query.to_wire()
    response = ask(r, "", wire_query=normal)
    assert response.answer
    # Two questions: FORMERR.
    two = bytearray(normal)
    two[5] = 2
    two += normal[12:]
    assert ask(r, "", wire_query=bytes(two)).rcode() == dns.rcode.FORMERR
    # A NOTIFY (another opcode): NOTIMP.
    notify = dns.message.make_query(Z, "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert ask(r, "", wire_query=notify.to_wire()).rcode() == dns.rcode.NOTIMP
    # Class CH (version.bind and friends): REFUSED.
    chaos = dns.message.make_query("version.bind.", "TXT", rdclass=dns.rdataclass.CH)
    assert ask(r, "", wire_query=chaos.to_wire()).rcode() == dns.rcode.REFUSED


def test_fast_and_general_paths_answer_alike():
    r = responder(*agent_records(3), big_srv(), RecordSet(f"web.{Z}", "A", ("10.1.0.1",), 9))
    for name, rdtype in [(f"web.{Z}", "A"), (f"big.{Z}", "SRV"), (f"ip-10-0-0-1.{Z}", "A")]:
        for kwargs in ({}, {"use_edns": 0}, {"use_edns": 0, "payload": 4096},
                       {"use_edns": 0, "want_dnssec": True}):
            data = dns.message.make_query(name, rdtype, **kwargs).to_wire()
            fast, _ = r.respond(data, True)
            general, _ = r._general(data, True)
            assert fast == general, (name, kwargs)


def test_question_parsing_by_hand_matches_dnspython():
    query = dns.message.make_query("A.b.C.", "SRV", use_edns=0, payload=1400, want_dnssec=True)
    parsed = wire.parse_query(query.to_wire())
    assert parsed.qkey == dns.name.from_text("a.b.c.").to_wire()
    assert parsed.question[:-4] == dns.name.from_text("A.b.C.").to_wire()
    assert (parsed.qtype, parsed.qclass, parsed.payload, parsed.do) == (33, 1, 1400, True)
    slow = wire.parse_query_slow(query.to_wire())
    assert (slow.key, slow.payload, slow.do) == (parsed.key, parsed.payload, parsed.do)
    with pytest.raises(wire.Malformed):
        wire.parse_query(b"\x00" * 5)


def test_only_a_name_the_view_lacks_is_reported_missing_for_a_lookup():
    r = responder(*agent_records(1))
    missing = r.respond(dns.message.make_query(f"New.{Z}", "A").to_wire(), True)[1]
    assert missing == wire.name_key(f"new.{Z}")  # NXDOMAIN: lowercase, wire form
    host = next(rec.name for rec in agent_records(1) if rec.type == "A")
    assert r.respond(dns.message.make_query(host, "AAAA").to_wire(), True)[1] is None  # NODATA
    assert r.respond(dns.message.make_query(f"_calc._tcp.{Z}", "SRV").to_wire(), True)[1] is None
    assert r.respond(dns.message.make_query("elsewhere.example.", "A").to_wire(), True)[1] is None

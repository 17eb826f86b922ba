"""The zone as the server answers it: Route 53's listing -> an immutable view of answers.

Built once per zone change (the listing is compared with the previous one first), then only
read, so the query threads never lock: the refresher swaps in a new view by assigning one
reference. Every answer is rendered here, against the name it answers for (see
:mod:`.answers`), so the hot path does no rendering at all.

Route 53's answer rules, as applied:

- a simple record set (no SetIdentifier) answers all its values;
- a weighted group (same name and type, ``Weight`` set) answers ONE record set, chosen
  with probability proportional to its weight; weight-0 record sets only when all are 0;
- a multivalue group answers up to eight record sets chosen at random (all when <= 8);
- other routing policies (latency, geolocation, failover: we cannot evaluate them
  locally) answer one record set chosen uniformly. Health checks are not evaluated: every
  record set counts as healthy.
- NXDOMAIN when the name does not exist, NOERROR with no answer (NODATA) when it exists
  with other types or is an empty non-terminal (``_tcp.zone.`` when ``_calc._tcp.zone.``
  exists); both carry the zone's SOA in the authority section, with the negative TTL of
  RFC 2308 (the lesser of the SOA's TTL and its MINIMUM field).
- A CNAME is answered for any type and followed inside the zone (up to 8 links), each
  link routed by its own rules; a chain that ends outside the zone or at a name without
  the type answers the CNAMEs alone. Wildcards (``*.zone.``) answer names that do not
  exist, as RFC 4592 says. ``ANY`` is answered with one RRset (RFC 8482).
- Alias records are skipped (their targets are AWS resources we cannot resolve here).
  NS records below the apex are answered as data, not as delegations.

Additional section: Route 53 itself adds nothing to SRV answers, but the issue asks for
the targets' addresses, and resolvers save a round trip. Each SRV answer carries the A and
AAAA records of its targets *when the target's answer is deterministic* (a simple record
set, a group of one record set, which is what the agent writes for a host, or a multivalue
group of at most eight). A target whose own answer is a per-query routing choice gets no
additional records, so that the additional section never contradicts what a direct query
for the target would answer; the client library then asks for it.

The SOA: moto lists a malformed one. When the apex SOA does not parse, a valid one is
synthesized from the zone name (``<first NS> hostmaster.<zone> 1 7200 900 1209600 86400``,
Route 53's default timers) and answered instead.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.SOA

from ecssd_agent.core.model import RecordSet
from ecssd_agent.dns import wire
from ecssd_agent.dns.answers import (
    MULTIVALUE_MAX,
    Answer,
    Fixed,
    Item,
    Sampled,
    Uniform,
    Variant,
    Weighted,
)

MAX_CHAIN = 8  # CNAME links followed inside the zone
MAX_CHAIN_VARIANTS = 64  # beyond this a chain answers its first CNAME alone
MAX_COMBINATIONS = 512  # a multivalue group of up to 12 has all its 8-subsets pre-rendered
WILDCARD_CACHE = 4096  # synthesized wildcard answers kept per view
DEFAULT_SOA_TTL = 900
DEFAULT_SOA_TIMERS = "1 7200 900 1209600 86400"  # Route 53's defaults
ANY_PREFERENCE = (wire.T_SRV, wire.T_A, wire.T_AAAA, wire.T_CNAME)


@dataclass(frozen=True)
class Entry:
    """One record set, parsed: rdata already in wire form, names as keys."""

    name: bytes
    rdtype: int
    ttl: int
    rdatas: tuple[bytes, ...]
    targets: tuple[bytes, ...]  # SRV targets, or the CNAME's target
    set_identifier: str | None = None
    weight: int | None = None
    multivalue: bool = False


@dataclass(frozen=True)
class Option:
    """One possible answer: record sets answered together, with a relative weight."""

    weight: float
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class SampleOf:
    """Up to eight of these record sets, chosen per query (a large multivalue group)."""

    entries: tuple[Entry, ...]


Options = list[Option] | SampleOf


def _in_zone(key: bytes, zone_key: bytes) -> bool:
    if key == zone_key:
        return True
    if not key.endswith(zone_key):
        return False
    boundary = len(key) - len(zone_key)
    i = 0
    while i < boundary:
        i += key[i] + 1
    return i == boundary


def parse_records(
    records: Iterable[RecordSet], zone_key: bytes
) -> tuple[list[Entry], list[str]]:
    """RecordSets -> entries; what cannot be answered becomes a problem (text), not an error."""
    entries: list[Entry] = []
    problems: list[str] = []
    for record in records:
        if record.alias:
            problems.append(f"{record.type} {record.name}: alias records are not answered")
            continue
        try:
            rdtype = dns.rdatatype.from_text(record.type)
            key = wire.name_key(record.name)
        except (dns.exception.DNSException, ValueError) as exc:
            problems.append(f"{record.type} {record.name}: cannot be answered ({exc})")
            continue
        if not _in_zone(key, zone_key):
            problems.append(f"{record.type} {record.name}: not in the zone")
            continue
        rdatas: list[bytes] = []
        targets: list[bytes] = []
        for value in record.values:
            try:
                rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, value,
                                            origin=dns.name.root, relativize=False)
            except (dns.exception.DNSException, ValueError) as exc:
                problems.append(f"{record.type} {record.name}: value {value!r} skipped: {exc}")
                continue
            data = rdata.to_wire()
            assert data is not None
            rdatas.append(data)
            if rdtype in (dns.rdatatype.SRV, dns.rdatatype.CNAME):
                target = rdata.target  # type: ignore[attr-defined]
                if target != dns.name.root:
                    targets.append(wire.name_key(target))
        if not rdatas:
            continue
        entries.append(Entry(key, int(rdtype), record.ttl if record.ttl is not None else 300,
                             tuple(rdatas), tuple(dict.fromkeys(targets)),
                             record.set_identifier, record.weight, record.multivalue))
    return entries, problems


def routing_options(group: Sequence[Entry]) -> Options:
    """Route 53's routing rules for one name and type (see the module docstring)."""
    simple = [e for e in group if e.set_identifier is None]
    if simple:  # Route 53 allows one simple record set and nothing else beside it
        return [Option(1.0, (simple[0],))]
    if all(e.weight is not None for e in group):
        positive = [e for e in group if e.weight]
        if positive:
            return [Option(float(e.weight or 0), (e,)) for e in positive]
        return [Option(1.0, (e,)) for e in group]
    if all(e.multivalue for e in group):
        if len(group) > MULTIVALUE_MAX:
            return SampleOf(tuple(group))
        return [Option(1.0, tuple(group[i:]) + tuple(group[:i])) for i in range(len(group))]
    return [Option(1.0, (e,)) for e in group]


def deterministic(group: Sequence[Entry]) -> tuple[Entry, ...] | None:
    """The record sets every query for this group gets (order aside), or None if they vary."""
    options = routing_options(group)
    if isinstance(options, SampleOf) or len({frozenset(o.entries) for o in options}) != 1:
        return None
    return options[0].entries


class ZoneView:
    """The immutable answer table of one zone listing; see the module docstring."""

    def __init__(self, zone: str, records: Sequence[RecordSet] = (), ready: bool = True) -> None:
        self.zone = zone.strip().lower().rstrip(".") + "."
        self.zone_key = wire.name_key(self.zone)
        self.records = tuple(records)
        self.ready = ready
        entries, problems = parse_records(self.records, self.zone_key)
        self.groups: dict[tuple[bytes, int], list[Entry]] = defaultdict(list)
        for entry in entries:
            self.groups[(entry.name, entry.rdtype)].append(entry)
        soa, soa_problem = self._soa()
        if soa_problem:  # it says why; the value's own parse error would say it twice
            problems = [p for p in problems if not p.startswith(f"SOA {self.zone}:")]
            problems.append(soa_problem)
        self.groups[(self.zone_key, wire.T_SOA)] = [soa]
        self.problems = tuple(problems)
        self.negative_tail = self._negative_tail(soa)
        self.names = self._names()
        self.has_wildcards = any(name.startswith(b"\x01*") for name in self.names)
        self.answers: dict[bytes, Answer] = {}
        self.cname_default: dict[bytes, Answer] = {}
        self._wildcards: dict[bytes, tuple[Answer | None, bool]] = {}
        self._determinism: dict[tuple[bytes, int], tuple[Entry, ...] | None] = {}
        self._render_all()

    # --- lookups (query time) ------------------------------------------------------------

    def in_zone(self, qkey: bytes) -> bool:
        return _in_zone(qkey, self.zone_key)

    def fallback(self, qkey: bytes, qtype: int) -> tuple[Answer | None, bool]:
        """For a (name, type) with no pre-rendered answer: (answer or None, name exists)."""
        if qkey in self.names:
            return self.cname_default.get(qkey), True
        if not self.has_wildcards:
            return None, False
        cache_key = qkey + qtype.to_bytes(2, "big")
        found = self._wildcards.get(cache_key)
        if found is None:
            found = self._wildcard(qkey, qtype)
            if len(self._wildcards) >= WILDCARD_CACHE:
                self._wildcards.clear()
            self._wildcards[cache_key] = found
        return found

    def negative_records(self, qkey: bytes) -> bytes:
        """The authority section of NXDOMAIN/NODATA: the SOA, its owner a pointer into qkey."""
        offset = wire.HEADER + len(qkey) - len(self.zone_key)
        return bytes((0xC0 | (offset >> 8), offset & 0xFF)) + self.negative_tail

    def describe(self) -> str:
        return (f"{len(self.records)} record set(s), {len(self.names)} name(s), "
                f"{len(self.answers)} answer(s)")

    # --- building ------------------------------------------------------------------------

    def _soa(self) -> tuple[Entry, str | None]:
        listed = self.groups.get((self.zone_key, wire.T_SOA))
        if listed:
            return listed[0], None
        zone = self.zone
        raw = [r for r in self.records if r.type == "SOA" and r.name == zone]
        ns = sorted(v for r in self.records if r.type == "NS" and r.name == zone
                    for v in r.values)
        mname = ns[0].rstrip(".") + "." if ns else "ns." + zone
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                                    f"{mname} hostmaster.{zone} {DEFAULT_SOA_TIMERS}")
        data = rdata.to_wire()
        assert data is not None
        ttl = raw[0].ttl if raw and raw[0].ttl is not None else DEFAULT_SOA_TTL
        why = (f"SOA {zone}: the listed value {raw[0].values[0] if raw[0].values else ''!r} "
               f"does not parse; answering a synthesized SOA ({rdata.to_text()})"
               if raw else None)
        return Entry(self.zone_key, wire.T_SOA, ttl, (data,), ()), why

    @staticmethod
    def _negative_tail(soa: Entry) -> bytes:
        rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.SOA, soa.rdatas[0], 0,
                                    len(soa.rdatas[0]))
        assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
        return wire.rr(b"", wire.T_SOA, min(soa.ttl, rdata.minimum), soa.rdatas[0])

    def _names(self) -> frozenset[bytes]:
        names: set[bytes] = set()
        zlen = len(self.zone_key)
        for name, _ in self.groups:
            for offset in wire.labels_offsets(name):
                suffix = name[offset:]
                if len(suffix) < zlen:
                    break
                names.add(suffix)
        return frozenset(names)

    def _render_all(self) -> None:
        types_present = {rdtype for _, rdtype in self.groups}
        by_name: dict[bytes, list[int]] = defaultdict(list)
        for name, rdtype in self.groups:
            by_name[name].append(rdtype)
        for (name, rdtype), group in self.groups.items():
            self.answers[name + rdtype.to_bytes(2, "big")] = self._answer(
                name, routing_options(group))
        for name, rdtypes in by_name.items():
            if wire.T_CNAME in rdtypes:
                for rdtype in types_present - {wire.T_CNAME}:
                    key = name + rdtype.to_bytes(2, "big")
                    if key not in self.answers:
                        self.answers[key] = self._answer(name, self._chain(name, rdtype, 0))
                self.cname_default[name] = self._answer(name, self._chain(name, 0, 0))
            first = next((t for t in ANY_PREFERENCE if t in rdtypes), min(rdtypes))
            self.answers[name + wire.T_ANY.to_bytes(2, "big")] = (
                self.answers[name + first.to_bytes(2, "big")])

    def _deterministic(self, name: bytes, rdtype: int,
                       group: Sequence[Entry]) -> tuple[Entry, ...] | None:
        key = (name, rdtype)
        if key not in self._determinism:
            self._determinism[key] = deterministic(group) if group else None
        return self._determinism[key]

    def _chain(self, name: bytes, rdtype: int, depth: int) -> Options:
        """Options for ``rdtype`` at ``name``, following CNAMEs within the zone."""
        group = self.groups.get((name, rdtype))
        if group:
            return routing_options(group)
        cnames = self.groups.get((name, wire.T_CNAME))
        if not cnames or depth >= MAX_CHAIN:
            return []
        links = routing_options(cnames)
        if isinstance(links, SampleOf):  # Route 53 has no multivalue CNAMEs; be safe
            links = [Option(1.0, (e,)) for e in links.entries]
        out: list[Option] = []
        for link in links:
            target = link.entries[0].targets[0] if link.entries[0].targets else b""
            rest = self._chain(target, rdtype, depth + 1) if (
                target and self.in_zone(target)) else []
            if isinstance(rest, SampleOf) or not rest:
                out.append(link)
                continue
            total = sum(o.weight for o in rest)
            out.extend(Option(link.weight * o.weight / total, link.entries + o.entries)
                       for o in rest)
        if len(out) > MAX_CHAIN_VARIANTS:
            return links
        return out

    def _wildcard(self, qkey: bytes, qtype: int) -> tuple[Answer | None, bool]:
        """RFC 4592: the source of synthesis is ``*.`` + the closest existing ancestor."""
        for offset in wire.labels_offsets(qkey)[1:]:
            ancestor = qkey[offset:]
            if len(ancestor) < len(self.zone_key):
                break
            if ancestor not in self.names:
                continue
            source = b"\x01*" + ancestor
            if source not in self.names:
                return None, False
            if qtype == wire.T_ANY:
                present = [t for (n, t) in self.groups if n == source]
                if not present:
                    return None, True
                qtype = next((t for t in ANY_PREFERENCE if t in present), min(present))
            options = self._chain(source, qtype, 0)
            if not options:
                return None, True
            return self._answer(qkey, options, synthesized_from=source), True
        return None, False

    def _answer(self, qkey: bytes, options: Options,
                synthesized_from: bytes | None = None) -> Answer:
        seeds = wire.suffix_seeds(qkey)

        def owner(entry: Entry) -> bytes:
            name = qkey if entry.name == synthesized_from else entry.name
            return wire.compress(name, seeds)

        def answer_records(entries: Iterable[Entry]) -> list[bytes]:
            return [wire.rr(owner(e), e.rdtype, e.ttl, rdata) for e in entries for rdata in e.rdatas]

        def additional_records(entries: Iterable[Entry]) -> list[bytes]:
            out: dict[bytes, None] = {}
            for entry in entries:
                if entry.rdtype != wire.T_SRV:
                    continue
                for target in entry.targets:
                    for rdtype in (wire.T_A, wire.T_AAAA):
                        group = self.groups.get((target, rdtype))
                        for e in self._deterministic(target, rdtype, group or []) or ():
                            for rdata in e.rdatas:
                                out[wire.rr(wire.compress(target, seeds), rdtype, e.ttl,
                                            rdata)] = None
            return list(out)

        if isinstance(options, SampleOf):
            items = [Item(tuple(answer_records([e])), tuple(additional_records([e])))
                     for e in options.entries]
            if math.comb(len(items), MULTIVALUE_MAX) > MAX_COMBINATIONS:
                return Sampled(items)
            return Uniform([_combination(items, chosen)
                            for chosen in combinations(range(len(items)), MULTIVALUE_MAX)])
        if not options:
            raise ValueError("no options to answer")
        variants = [Variant(answer_records(o.entries), additional_records(o.entries))
                    for o in options]
        if len(variants) == 1:
            return Fixed(variants[0])
        if len({o.weight for o in options}) == 1:
            return Uniform(variants)
        return Weighted(variants, [o.weight for o in options])


def _combination(items: Sequence[Item], chosen: Sequence[int]) -> Variant:
    """One pre-rendered choice of a large multivalue group, its records in a random order."""
    order = list(chosen)
    random.shuffle(order)
    answer = [record for i in order for record in items[i].answer]
    additional = dict.fromkeys(record for i in order for record in items[i].additional)
    return Variant(answer, list(additional))


def unavailable(zone: str) -> ZoneView:
    """The view before the first listing: every name in the zone answers SERVFAIL."""
    return ZoneView(zone, (), ready=False)

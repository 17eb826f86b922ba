"""One query in, one response out: the server's hot path, pure given a :class:`ZoneView`.

Per ordinary query (a name and type the zone has) the work is: a header check, one dict
lookup on the question bytes sliced at a fixed offset from the packet's end, the routing
pick, a size check and a join of the query's ID and question with a pre-rendered body
(:meth:`Responder.respond`'s fast path). Everything else, misses included, is parsed
properly (:func:`wire.parse_query`, or dnspython for the unusual) on the general path. The
response echoes the question exactly as sent (the client's case included); the
pre-rendered records point into it by compression pointers.

Rules of the protocol it keeps:
- AA on every answer from the zone; RD and CD copied from the query; RA never set.
- Names outside the zone: REFUSED. Zone transfers: REFUSED (Route 53 does not allow
  them). Classes other than IN: REFUSED. Opcodes other than QUERY: NOTIMP.
- EDNS (RFC 6891): an OPT record in the query gets one in the response, advertising our
  UDP size and copying the DO bit; a version other than 0 gets BADVERS.
- UDP size: 512 bytes without EDNS, else the client's payload size (up to
  ``max_udp``). When a response does not fit, the additional section is dropped first
  (RFC 2181 9: no TC for that); when the answer itself does not fit, the response is the
  question alone with TC set, and the client retries over TCP, where nothing is cut.
- A packet that is not a query (too short, a response) is dropped; a query that cannot
  be parsed gets FORMERR. Nothing a client sends can raise out of :meth:`respond`.
"""

from __future__ import annotations

from ecssd_agent.dns import wire
from ecssd_agent.dns.answers import Variant
from ecssd_agent.dns.view import ZoneView

DEFAULT_MAX_UDP = 4096
_SOA_COUNTS = (wire.counts(0, 1, 0), wire.counts(0, 1, 1))
_EMPTY_COUNTS = (wire.counts(0, 0, 0), wire.counts(0, 0, 1))
_OPT_LEN = 11
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT < 256
_IN = b"\x00\x01"
_IN_BARE_OPT = b"\x00\x01\x00\x00\x29"  # QCLASS IN, then an OPT record's root owner and type


class Responder:
    """Answers queries from the current view; the refresher replaces ``view``."""

    def __init__(self, view: ZoneView, max_udp: int = DEFAULT_MAX_UDP) -> None:
        self.view = view
        self.max_udp = max(max_udp, wire.MIN_UDP)
        self._opt = (wire.opt_record(self.max_udp, False), wire.opt_record(self.max_udp, True))

    def respond(self, data: bytes, udp: bool = True) -> tuple[bytes | None, bytes | None]:
        """(the response, or None to drop the packet; the name if the view lacks it).

        The second value, the query's name in wire form (lowercase), is set on NXDOMAIN only:
        the view may be stale for that name (a service that registered a moment ago), so
        the server may ask for a lookup of it and answer again after it. A name the view
        has (NODATA for another type) is left to the next sweep of the zone.

        First the fast path, for the common query whose name and type have an answer: a
        standard QUERY for class IN with one question and either no additional record or
        a bare OPT (version 0, no options). Its question then ends at a fixed distance
        from the end of the packet, so no label needs walking: if the bytes there, as a
        key, are in the view, they are a valid name. Everything else takes the general
        path below, which checks every rule.
        """
        n = len(data)
        if n > 16 and not data[2] & 0xF8 and data[4:11] == _ONE_QUESTION:
            edns = data[11]
            if edns == 0:
                end = n - 4
                fits = data[n - 2:] == _IN
            else:
                end = n - 15
                fits = (edns == 1 and data[end + 2:end + 7] == _IN_BARE_OPT
                        and data[n - 5] == 0 and data[n - 2:] == b"\x00\x00")
            if fits and end > 12:
                answer = self.view.answers.get(data[12:end].lower() + data[end:end + 2])
                if answer is not None:
                    return self._fast(data, end, edns, answer.pick(), udp), None
        return self._general(data, udp)

    def _fast(self, data: bytes, end: int, edns: int, variant: Variant,
              udp: bool) -> bytes | None:
        n = len(data)
        question = data[12:end + 4]
        body = variant.body
        counts = variant.counts[edns]
        if udp:
            limit = min(max((data[n - 8] << 8) | data[n - 7], wire.MIN_UDP),
                        self.max_udp) if edns else wire.MIN_UDP
            fixed = end + 4 + edns * _OPT_LEN
            if fixed + len(body) > limit:
                if fixed + len(variant.short_body) > limit:  # TC: rare, the general path
                    return self._general(data, udp)[0]
                body, counts = variant.short_body, variant.short_counts[edns]
        response = (data[:2] + bytes((0x84 | (data[2] & 1), data[3] & wire.CD)) + counts
                    + question + body)
        return response + self._opt[data[n - 4] >> 7] if edns else response

    def _general(self, data: bytes, udp: bool) -> tuple[bytes | None, bytes | None]:
        try:
            try:
                query = wire.parse_query(data)
            except wire.Unusual:
                query = wire.parse_query_slow(data)
        except wire.Malformed:
            return wire.formerr(data), None
        if query.opcode != 0:  # without the question: other opcodes' sections differ (UPDATE)
            return self._error(query, wire.NOTIMP, question=False), None
        if query.payload and query.version:
            return self._error(query, wire.BADVERS), None
        if query.qclass != wire.CLASS_IN:
            return self._error(query, wire.REFUSED), None
        view = self.view
        answer = view.answers.get(query.key)
        if answer is not None:
            return self._positive(query, answer.pick(), udp), None
        return self._miss(query, view, udp)

    def _positive(self, query: wire.Query, variant: Variant, udp: bool) -> bytes:
        edns = 1 if query.payload else 0
        body = variant.body
        counts = variant.counts[edns]
        if udp:
            limit = min(query.payload, self.max_udp) if edns else wire.MIN_UDP
            fixed = wire.HEADER + len(query.question) + edns * _OPT_LEN
            if fixed + len(body) > limit:
                if fixed + len(variant.short_body) <= limit:
                    body, counts = variant.short_body, variant.short_counts[edns]
                else:
                    return self._header(query, wire.NOERROR, wire.TC) + _EMPTY_COUNTS[edns] + (
                        query.question + (self._opt[query.do] if edns else b""))
        response = self._header(query, wire.NOERROR) + counts + query.question + body
        return response + self._opt[query.do] if edns else response

    def _miss(self, query: wire.Query, view: ZoneView,
              udp: bool) -> tuple[bytes | None, bytes | None]:
        if not view.in_zone(query.qkey):
            return self._error(query, wire.REFUSED), None
        if not view.ready:
            return self._error(query, wire.SERVFAIL), None
        if query.qtype in (wire.T_AXFR, wire.T_IXFR):
            return self._error(query, wire.REFUSED), None
        answer, exists = view.fallback(query.qkey, query.qtype)
        if answer is not None:
            return self._positive(query, answer.pick(), udp), None
        edns = 1 if query.payload else 0
        response = (self._header(query, wire.NOERROR if exists else wire.NXDOMAIN)
                    + _SOA_COUNTS[edns] + query.question + view.negative_records(query.qkey))
        return (response + self._opt[query.do] if edns else response), (
            None if exists else query.qkey)

    @staticmethod
    def _header(query: wire.Query, rcode: int, extra: int = 0, aa: bool = True) -> bytes:
        flags2 = wire.QR | (query.flags2 & 0x78) | (query.flags2 & wire.RD) | extra
        if aa:
            flags2 |= wire.AA
        return query.ident + bytes((flags2, (query.flags3 & wire.CD) | (rcode & 0xF)))

    def _error(self, query: wire.Query, rcode: int, question: bool = True) -> bytes:
        """A response without records: REFUSED, SERVFAIL, NOTIMP, BADVERS."""
        edns = 1 if query.payload else 0
        counts = wire.counts(0, 0, edns)
        if not question:
            counts = b"\x00\x00" + counts[2:]
        response = (self._header(query, rcode, aa=False) + counts
                    + (query.question if question else b""))
        if edns:
            opt = (wire.opt_record(self.max_udp, query.do, ext_rcode=rcode >> 4)
                   if rcode > 0xF else self._opt[query.do])
            response += opt
        return response

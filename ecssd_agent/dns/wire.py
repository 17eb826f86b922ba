"""The few pieces of the DNS wire format (RFC 1035, 6891) the server's hot path handles by hand.

Why by hand: parsing every query into a ``dns.message.Message`` and rendering a new one for
every answer costs ~140 us per query in Python (about 7,000 queries/s). An ordinary query
has a 12-byte header, one question and at most one OPT record. :func:`parse_query` reads
that in a few microseconds, and a response is the header, the query's own question bytes
and an answer body rendered when the zone was loaded. Anything unusual (a compressed
question, several questions, a TSIG, trailing bytes) goes to :func:`parse_query_slow`, which
uses dnspython and either understands the query or says why it is malformed.

Names are handled as *keys*: their uncompressed wire form in lowercase. ``bytes.lower()``
only changes A-Z, and label length bytes are 0-63, so lowercasing a wire name never changes
its structure.
"""

from __future__ import annotations

import struct

import dns.exception
import dns.message
import dns.name

HEADER = 12
QR, AA, TC, RD = 0x80, 0x04, 0x02, 0x01  # bits of the third header byte
CD = 0x10  # bit of the fourth header byte

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # extended rcode: 1 in the OPT record's upper bits, 0 in the header

CLASS_IN = 1
T_A, T_NS, T_CNAME, T_SOA, T_AAAA, T_SRV, T_OPT = 1, 2, 5, 6, 28, 33, 41
T_IXFR, T_AXFR, T_ANY = 251, 252, 255

MIN_UDP = 512  # RFC 1035: what every client can receive without EDNS
MAX_POINTER = 0x3FFF

_COUNTS = struct.Struct(">HHHH")
_QFIXED = struct.Struct(">HH")
_OPT = struct.Struct(">HHBBHH")  # type, payload size, ext rcode, version, flags, rdlen
_RR_FIXED = struct.Struct(">HHIH")


class Malformed(ValueError):
    """Not a query we can answer: the server answers FORMERR when it can, else drops it."""


class Unusual(Exception):
    """A legal but uncommon query: parse it with dnspython instead (:func:`parse_query_slow`)."""


class Query:
    """What answering needs from one query. ``key`` = lowercase qname + raw qtype bytes.

    ``payload`` is the client's EDNS UDP payload size (at least 512), or 0 without EDNS.
    """

    __slots__ = ("do", "flags2", "flags3", "ident", "key", "opcode", "payload", "qclass",
                 "qkey", "qtype", "question", "version")

    def __init__(self, ident: bytes, flags2: int, flags3: int, question: bytes, qkey: bytes,
                 qtype: int, qclass: int, payload: int = 0, do: bool = False,
                 version: int = 0) -> None:
        self.ident = ident
        self.flags2 = flags2
        self.flags3 = flags3
        self.opcode = (flags2 >> 3) & 0xF
        self.question = question
        self.qkey = qkey
        self.qtype = qtype
        self.qclass = qclass
        self.key = qkey + question[len(qkey):len(qkey) + 2]
        self.payload = payload
        self.do = do
        self.version = version


def parse_query(data: bytes) -> Query:
    """The hot path's parser. Raises :class:`Malformed` (drop or FORMERR) or :class:`Unusual`."""
    n = len(data)
    if n < HEADER:
        raise Malformed("shorter than a DNS header")
    if data[2] & QR:
        raise Malformed("a response, not a query")
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(data, 4)
    if qdcount != 1 or ancount or nscount or arcount > 1:
        raise Unusual
    i = HEADER
    while True:
        if i >= n:
            raise Unusual
        length = data[i]
        if length == 0:
            break
        if length > 63:  # a compression pointer (legal, never seen) or garbage
            raise Unusual
        i += length + 1
    end = i + 1
    if end + 4 > n or end - HEADER > 255:
        raise Unusual
    qtype, qclass = _QFIXED.unpack_from(data, end)
    pos = end + 4
    payload = 0
    do = False
    version = 0
    if arcount:
        if pos + 11 > n or data[pos] != 0:
            raise Unusual
        rtype, size, _ext, version, flags, rdlen = _OPT.unpack_from(data, pos + 1)
        if rtype != T_OPT:  # e.g. a TSIG record
            raise Unusual
        pos += 11 + rdlen  # options (cookies, padding, ...) are ignored, as RFC 6891 allows
        payload = max(size, MIN_UDP)
        do = bool(flags & 0x8000)
    if pos != n:
        raise Unusual
    return Query(data[:2], data[2], data[3], data[HEADER:end + 4],
                 data[HEADER:end].lower(), qtype, qclass, payload, do, version)


def parse_query_slow(data: bytes) -> Query:
    """Any query dnspython can parse, reduced to one question; raises :class:`Malformed`."""
    if len(data) < HEADER or data[2] & QR:
        raise Malformed("not a query")
    try:
        message = dns.message.from_wire(data)
    except dns.message.UnknownTSIGKey as exc:  # a signed query: we hold no keys
        raise Malformed(f"TSIG-signed query: {exc}") from exc
    except (dns.exception.DNSException, ValueError, IndexError, struct.error) as exc:
        raise Malformed(f"unparsable: {exc.__class__.__name__}: {exc}") from exc
    if len(message.question) != 1:
        raise Malformed(f"{len(message.question)} questions")
    rrset = message.question[0]
    qname = rrset.name.to_wire()
    assert qname is not None
    question = qname + _QFIXED.pack(rrset.rdtype, rrset.rdclass)
    edns = message.edns >= 0
    return Query(data[:2], data[2], data[3], question, qname.lower(), int(rrset.rdtype),
                 int(rrset.rdclass), max(message.payload, MIN_UDP) if edns else 0,
                 bool(message.ednsflags & 0x8000), max(message.edns, 0))


def formerr(data: bytes) -> bytes | None:
    """FORMERR for a packet whose header is readable, else None (drop it)."""
    if len(data) < HEADER or data[2] & QR:
        return None
    flags2 = QR | (data[2] & 0x78) | (data[2] & RD)
    return data[:2] + bytes((flags2, FORMERR)) + _COUNTS.pack(0, 0, 0, 0)


# --- rendering ---------------------------------------------------------------------------

def name_key(name: dns.name.Name | str) -> bytes:
    """A name's lookup key: absolute, uncompressed wire form, lowercase."""
    if isinstance(name, str):
        name = dns.name.from_text(name)
    wire = name.to_wire()
    assert wire is not None
    return wire.lower()


def key_text(key: bytes) -> str:
    """A key back to text, for logs and errors."""
    return dns.name.from_wire(key, 0)[0].to_text()


def labels_offsets(key: bytes) -> list[int]:
    """Offsets of each label of a wire name, from the first label to the root's zero byte."""
    offsets = []
    i = 0
    while key[i]:
        offsets.append(i)
        i += key[i] + 1
    offsets.append(i)
    return offsets


def suffix_seeds(qkey: bytes) -> dict[bytes, int]:
    """Compression targets of a response: each suffix of the question's name, at its offset.

    The question always starts at offset 12, so pointers into it stay valid whatever the
    client's case and whichever pre-rendered pieces follow it.
    """
    return {qkey[i:]: HEADER + i for i in labels_offsets(qkey)[:-1]}


def compress(key: bytes, seeds: dict[bytes, int]) -> bytes:
    """``key`` with its longest suffix found in ``seeds`` replaced by a pointer."""
    i = 0
    while key[i]:
        pointer = seeds.get(key[i:])
        if pointer is not None and pointer <= MAX_POINTER:
            return key[:i] + struct.pack(">H", 0xC000 | pointer)
        i += key[i] + 1
    return key


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One resource record: ``owner`` already in wire form (possibly compressed)."""
    return owner + _RR_FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


def counts(an: int, ns: int, ar: int) -> bytes:
    return _COUNTS.pack(1, an, ns, ar)


def opt_record(payload: int, do: bool, ext_rcode: int = 0) -> bytes:
    """The response's OPT pseudo-record: our UDP payload size, the DO bit copied (RFC 3225)."""
    return b"\x00" + _OPT.pack(T_OPT, payload, ext_rcode, 0, 0x8000 if do else 0, 0)

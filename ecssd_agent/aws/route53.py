"""Route 53: the only code that knows the ResourceRecordSet wire format and the batch limits.

Reads go through boto3's paginator; writes go in as few ChangeResourceRecordSets requests as
the limits allow. What an error answer means (throttled, retry, refused, maybe applied) is
decided once, by :func:`error_meaning`, for every writer. A batch Route 53 *rejects* is not
sent again: the zone is not what the plan assumed, so the caller reads and plans again
(:mod:`ecssd_agent.sync.reconcile`).
"""


from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from ecssd_agent.core.model import Action, Change, RecordSet

log = logging.getLogger(__name__)

# Route 53 quotas for one ChangeResourceRecordSets request; an UPSERT counts twice in both.
MAX_RECORDS_PER_REQUEST = 1000
MAX_VALUE_CHARS_PER_REQUEST = 32000
CLOUD_MAP_PRINCIPAL = "servicediscovery.amazonaws.com"

_OCTAL_ESCAPE = re.compile(r"\\(\d{3})")
_NAMED_SET_IDENTIFIER = re.compile(r"set-identifier='([^']*)'")
_PAST_TENSE = {Action.CREATE: "created", Action.DELETE: "deleted", Action.UPSERT: "updated"}


class ZoneError(RuntimeError):
    """The hosted zone cannot be used; the message tells the operator what to do."""


class BatchRejected(RuntimeError):
    """Route 53 refused a change batch because the zone is not as planned (re-read, re-plan).

    ``named``: the SetIdentifiers of the record sets Route 53's message names ("Tried to
    delete resource record set [name='...', type='SRV', set-identifier='...'] but it was
    not found"), so a caller can tell whose knowledge was wrong without reading the others.
    """

    def __init__(self, message: str, named: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.named = tuple(named)


class Meaning(str, Enum):
    """What an error answer to a Route 53 request says about the request."""

    THROTTLED = "throttled"  # not applied: the account is over its request rate; send later, less
    RETRY = "retry"  # not applied: a change to the zone is still in progress; send again
    REFUSED = "refused"  # not applied, and sending it again as it is will not help
    UNKNOWN = "unknown"  # maybe applied (a server error, a lost answer): read before planning


@dataclass(frozen=True)
class ErrorMeaning:
    """:func:`error_meaning`'s answer: the kind, and the code or cause that says so."""

    kind: Meaning
    code: str

    @property
    def retryable(self) -> bool:
        """Sending the same request again may succeed (after a pause)."""
        return self.kind is not Meaning.REFUSED

    @property
    def not_applied(self) -> bool:
        """Route 53 surely did not apply the request: what the writer knew still holds."""
        return self.kind is not Meaning.UNKNOWN

    @property
    def definite(self) -> bool:
        """Surely not applied, and worth sending again soon: the throttled or busy answers."""
        return self.kind in (Meaning.THROTTLED, Meaning.RETRY)


_THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException"})
_BUSY_CODES = frozenset({"PriorRequestNotComplete"})
_SERVER_CODES = frozenset({"ServiceUnavailable", "InternalError", "InternalFailure",
                           "RequestTimeout"})


def code_meaning(code: str, status: int = 0) -> ErrorMeaning:
    """What an error code (and HTTP status) of a Route 53 answer means."""
    if code in _THROTTLING_CODES:
        return ErrorMeaning(Meaning.THROTTLED, code)
    if code in _BUSY_CODES:
        return ErrorMeaning(Meaning.RETRY, code)
    if code in _SERVER_CODES or status >= 500:
        return ErrorMeaning(Meaning.UNKNOWN, code or f"HTTP {status}")
    return ErrorMeaning(Meaning.REFUSED, code or (f"HTTP {status}" if status else "?"))


def error_meaning(exc: BaseException) -> ErrorMeaning:
    """What a Route 53 request that raised ``exc`` did: the one reading of an error that every
    writer uses. A lost connection or answer may hide an applied change (UNKNOWN); an
    exception that is no answer of Route 53's (bad parameters, no credentials) was not sent."""
    if isinstance(exc, ClientError):
        return code_meaning(exc.response.get("Error", {}).get("Code", ""),
                            int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)))
    if isinstance(exc, (BotocoreConnectionError, ReadTimeoutError, ConnectionClosedError)):
        return ErrorMeaning(Meaning.UNKNOWN, type(exc).__name__)
    return ErrorMeaning(Meaning.REFUSED, type(exc).__name__)


def named_set_identifiers(message: str) -> list[str]:
    """The SetIdentifiers of the record sets a refusal's message names, in its order."""
    return _NAMED_SET_IDENTIFIER.findall(message)


#: Route 53's largest ListResourceRecordSets page.
MAX_PAGE_ITEMS = 300


@dataclass(frozen=True)
class ListPosition:
    """Where a listing starts: Route 53's StartRecordName, -Type and -Identifier.

    ``name`` is sent as is (as Route 53 gave it, escapes included); :meth:`record_name` is
    the form of :attr:`RecordSet.name`, to compare with listed record sets.
    """

    name: str
    type: str | None = None
    identifier: str | None = None

    def record_name(self) -> str:
        name = _unescape(self.name)
        return name if name.endswith(".") else name + "."


@dataclass(frozen=True)
class Page:
    """One ListResourceRecordSets answer: record sets in Route 53's order, and where the
    next page starts (None: the zone ends with this page)."""

    records: tuple[RecordSet, ...]
    next: ListPosition | None


@dataclass(frozen=True)
class Zone:
    id: str  # without the /hostedzone/ prefix
    name: str  # absolute, lowercase, trailing dot
    private: bool


# --- wire format -------------------------------------------------------------------------

def _unescape(name: str) -> str:
    """Route 53 lists some characters of names as ``\\ddd`` octal escapes (``\\052`` is *)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), name).lower()


def from_wire(rrset: Mapping[str, Any]) -> RecordSet:
    """A listed ResourceRecordSet -> RecordSet, keeping the original for an exact DELETE."""
    name = _unescape(rrset["Name"])
    return RecordSet(
        name=name if name.endswith(".") else name + ".",
        type=rrset["Type"],
        values=tuple(sorted(r["Value"] for r in rrset.get("ResourceRecords", []))),
        ttl=rrset.get("TTL"),
        set_identifier=rrset.get("SetIdentifier"),
        weight=rrset.get("Weight"),
        multivalue=bool(rrset.get("MultiValueAnswer", False)),
        health_check_id=rrset.get("HealthCheckId"),
        alias="AliasTarget" in rrset,
        listed=dict(rrset),
    )


def to_wire(record: RecordSet) -> dict[str, Any]:
    """RecordSet -> ResourceRecordSet, as ChangeResourceRecordSets takes it."""
    if record.listed is not None:
        return dict(record.listed)
    wire: dict[str, Any] = {"Name": record.name, "Type": record.type}
    if record.set_identifier is not None:
        wire["SetIdentifier"] = record.set_identifier
    if record.weight is not None:
        wire["Weight"] = record.weight
    if record.multivalue:
        wire["MultiValueAnswer"] = True
    if record.ttl is not None:
        wire["TTL"] = record.ttl
    if record.health_check_id:
        wire["HealthCheckId"] = record.health_check_id
    wire["ResourceRecords"] = [{"Value": v} for v in record.values]
    return wire


def change_to_wire(change: Change) -> dict[str, Any]:
    record = change.record
    if change.action is not Action.DELETE:
        # A create or upsert sends what we want, never a stale listing of it.
        record = replace(record, listed=None)
    return {"Action": change.action.value, "ResourceRecordSet": to_wire(record)}


# --- batching ----------------------------------------------------------------------------

def change_cost(change: Change) -> tuple[int, int]:
    """(ResourceRecord elements, value characters) a change counts against the limits."""
    factor = 2 if change.action is Action.UPSERT else 1
    values = change.record.values
    return factor * max(len(values), 1), factor * sum(len(v) for v in values)


def batches(
    changes: Sequence[Change],
    max_records: int = MAX_RECORDS_PER_REQUEST,
    max_chars: int = MAX_VALUE_CHARS_PER_REQUEST,
) -> list[list[Change]]:
    """Split changes, in order, into the fewest requests each within both limits."""
    out: list[list[Change]] = []
    current: list[Change] = []
    records = chars = 0
    for change in changes:
        n, c = change_cost(change)
        if n > max_records or c > max_chars:
            raise ValueError(f"one change exceeds Route 53's request limits: {change.record}")
        if current and (records + n > max_records or chars + c > max_chars):
            out.append(current)
            current, records, chars = [], 0, 0
        current.append(change)
        records += n
        chars += c
    if current:
        out.append(current)
    return out


def pack(groups: Sequence[Sequence[Change]], max_records: int = MAX_RECORDS_PER_REQUEST,
         max_chars: int = MAX_VALUE_CHARS_PER_REQUEST) -> list[list[int]]:
    """Indexes of ``groups`` per request: whole groups (one host's changes) packed, in order,
    into the fewest requests within both limits. A group too big for one request goes alone
    (``batches`` then splits it)."""
    out: list[list[int]] = []
    current: list[int] = []
    records = chars = 0
    for index, group in enumerate(groups):
        costs = [change_cost(c) for c in group]
        n, c = sum(x for x, _ in costs), sum(y for _, y in costs)
        if current and (records + n > max_records or chars + c > max_chars):
            out.append(current)
            current, records, chars = [], 0, 0
        current.append(index)
        records += n
        chars += c
    if current:
        out.append(current)
    return out


# --- the zone ----------------------------------------------------------------------------

def _zone_id(raw: str) -> str:
    return raw.rsplit("/", 1)[-1]


def find_zone(
    client: Any, domain: str, zone_id: str | None = None, vpc_id: str | None = None
) -> Zone:
    """The hosted zone to use, by id or by name; refuses ambiguity and Cloud Map zones."""
    if zone_id:
        try:
            found = client.get_hosted_zone(Id=zone_id)
        except ClientError as exc:
            raise ZoneError(f"hosted zone {zone_id}: {exc}") from exc
        return _checked(found["HostedZone"])

    name = domain.lower().rstrip(".") + "."
    candidates: list[Mapping[str, Any]] = []
    kwargs: dict[str, Any] = {"DNSName": name, "MaxItems": "100"}
    while True:  # zones are listed by name, so ours are consecutive from DNSName on
        page = client.list_hosted_zones_by_name(**kwargs)
        matching = [z for z in page["HostedZones"] if z["Name"].lower() == name]
        candidates.extend(matching)
        if not page.get("IsTruncated") or page.get("NextDNSName", "").lower() != name:
            break
        kwargs = {"DNSName": page["NextDNSName"], "HostedZoneId": page["NextHostedZoneId"],
                  "MaxItems": "100"}
    private = [z for z in candidates if z.get("Config", {}).get("PrivateZone")]
    if not private:
        publics = ", ".join(_zone_id(z["Id"]) for z in candidates)
        hint = f" (public zones with that name: {publics})" if publics else ""
        raise ZoneError(f"no private hosted zone named {name}{hint}; create one or pass "
                        "--hosted-zone-id")
    if len(private) == 1 and not vpc_id:
        return _checked(private[0])

    vpcs = {_zone_id(z["Id"]): client.get_hosted_zone(Id=z["Id"]).get("VPCs", [])
            for z in private}
    if vpc_id:
        chosen = [z for z in private if any(v.get("VPCId") == vpc_id for v in vpcs[_zone_id(z["Id"])])]
        if len(chosen) == 1:
            return _checked(chosen[0])
    listing = "; ".join(
        f"{zid} (VPCs: {', '.join(v.get('VPCId', '?') for v in vs) or 'none'})"
        for zid, vs in vpcs.items()
    )
    if vpc_id:
        raise ZoneError(f"no single private hosted zone named {name} is associated with VPC "
                        f"{vpc_id}: {listing}; pass --hosted-zone-id")
    raise ZoneError(f"{len(private)} private hosted zones are named {name}: {listing}; "
                    "pick one with --hosted-zone-id or --vpc-id")


def _checked(zone: Mapping[str, Any]) -> Zone:
    linked = zone.get("LinkedService", {}).get("ServicePrincipal")
    if linked:
        raise ZoneError(
            f"hosted zone {_zone_id(zone['Id'])} ({zone['Name']}) is managed by {linked}"
            + (" (AWS Cloud Map)" if linked == CLOUD_MAP_PRINCIPAL else "")
            + ": Route 53 refuses changes made outside that service; use a zone of your own"
        )
    return Zone(
        id=_zone_id(zone["Id"]),
        name=zone["Name"].lower().rstrip(".") + ".",  # absolute, as record names are
        private=bool(zone.get("Config", {}).get("PrivateZone")),
    )


class Route53Zone:
    """One hosted zone: list its record sets and apply planned changes to it."""

    def __init__(self, client: Any, zone: Zone, comment: str = "ecssd",
                 write_client: Any = None) -> None:
        self.client = client
        self.zone = zone
        self.comment = comment
        # Writes may use a client with other retries: the daemon sends each change batch once
        # and, when throttled, re-plans everything pending into its next request.
        self.write_client = write_client or client

    def records(self, start_name: str | None = None) -> Iterator[RecordSet]:
        """Every record set of the zone, page by page (lazily, so a caller may stop early)."""
        kwargs: dict[str, Any] = {"HostedZoneId": self.zone.id}
        if start_name:
            kwargs["StartRecordName"] = start_name
        for page in self.client.get_paginator("list_resource_record_sets").paginate(**kwargs):
            for rrset in page["ResourceRecordSets"]:
                yield from_wire(rrset)

    def page(self, start: ListPosition | None = None, max_items: int = MAX_PAGE_ITEMS) -> Page:
        """One page (one request) from ``start`` (None: the zone's first record set).

        For a caller that spends one request at a time (``ecssd-dns`` paces its listing);
        everyone else lists with :meth:`records` (the paginator).
        """
        kwargs: dict[str, Any] = {"HostedZoneId": self.zone.id, "MaxItems": str(max_items)}
        if start is not None:
            kwargs["StartRecordName"] = start.name
            if start.type:
                kwargs["StartRecordType"] = start.type
            if start.identifier:
                kwargs["StartRecordIdentifier"] = start.identifier
        answer = self.client.list_resource_record_sets(**kwargs)
        records = tuple(from_wire(rrset) for rrset in answer["ResourceRecordSets"])
        following = None
        if answer.get("IsTruncated"):
            following = ListPosition(answer["NextRecordName"], answer.get("NextRecordType"),
                                     answer.get("NextRecordIdentifier"))
        return Page(records, following)

    def apply(self, changes: Iterable[Change], dry_run: bool = False) -> int:
        """Apply changes in the fewest requests; returns how many requests were made.

        Raises :class:`BatchRejected` when Route 53 refuses a batch as invalid for the zone
        as it is (for example a record set changed by someone else since it was listed); the
        batches before it are applied (each batch is atomic), the ones after it are not.
        """
        requests = 0
        for batch in batches(list(changes)):
            if dry_run:
                for change in batch:
                    log.info("would have %s %s", _PAST_TENSE[change.action],
                             change.record.describe(), extra=_extra(change))
                continue
            try:
                self.write_client.change_resource_record_sets(
                    HostedZoneId=self.zone.id,
                    ChangeBatch={"Comment": self.comment,
                                 "Changes": [change_to_wire(c) for c in batch]},
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("InvalidChangeBatch", "InvalidInput"):
                    message = exc.response["Error"].get("Message", code)
                    raise BatchRejected(f"Route 53 rejected a batch of {len(batch)} changes: "
                                        f"{message}",
                                        named_set_identifiers(message)) from exc
                raise
            requests += 1
            for change in batch:
                log.info("%s %s", _PAST_TENSE[change.action], change.record.describe(),
                         extra=_extra(change))
        return requests


def _extra(change: Change) -> dict[str, Any]:
    return {"action": change.action.value, "record_name": change.record.name,
            "record_type": change.record.type, "set_identifier": change.record.set_identifier}

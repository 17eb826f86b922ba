"""moto's Route 53, made to refuse what Route 53 refuses and to accept and delete what it does.

:func:`install` patches moto's Route 53 in this process (idempotent; call it before the first
Route 53 request, as tests/conftest.py and the moto launchers do). Every client then meets it:
in-process ``mock_aws``, and HTTP through any moto server this process runs.

What changes against moto 5.2 (numbers and wording: :mod:`tests.support.route53_quotas`):

- Quotas, each refused with ``InvalidChangeBatch`` and Route 53's words: 100 weighted,
  multivalue answer, latency, geolocation or IP-based record sets per name and type; 400
  values per record set; 1,000 ResourceRecord elements (an alias counts one) and 32,000
  characters of values per request, an UPSERT counting twice; the zone's record-set quota
  (10,000 unless :func:`set_zone_record_limit` or ``POST`` :data:`ZONE_LIMIT_PATH` says
  otherwise), read with GetHostedZoneLimit, which moto lacks and this adds over HTTP too.
- Identity as Route 53 has it, (name, type, SetIdentifier): a CREATE is refused only when
  that record set exists now (moto consults a journal of every past change and refuses a
  re-create after a delete); a DELETE removes exactly that record set, and only when its
  values match (moto removes every record set of the zone with the SetIdentifier).
- Route 53's other refusals that matter to a service registry: a routed record set beside a
  simple one of the same name and type (and the reverse, and two routing policies), a CNAME
  beside other types, an alias whose target in this zone does not exist, a weight over 255.
- A refused batch changes nothing and its one message lists every problem, in order.
- ListResourceRecordSets pages inside one name's record sets (``StartRecordIdentifier``,
  ``NextRecordIdentifier``), as Route 53 does; moto starts such a page over.

Record sets of one name and type list in the order they were created (Route 53 documents
no order among them); an UPSERT keeps the record set's place.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support import route53_quotas as quotas

#: The moto-api endpoint that sets a zone's record-set quota:
#: ``{"HostedZoneId": "Z...", "Value": 12}`` (``"Value": null`` restores the default).
ZONE_LIMIT_PATH = "/moto-api/strict-route53/zone-record-limit"
_LIMIT_URL = r"{0}/(?P<api_version>[\d_-]+)/hostedzonelimit/(?P<zone_id>[^/]+)/(?P<limit_type>[^/]+)$"
_LIMIT_ATTRIBUTE = "strict_record_limit"
_CIDR_ATTRIBUTE = "strict_cidr_routing"

_LOCK = threading.RLock()  # the threaded server answers requests concurrently
_INSTALLED = False

Key = tuple[str, str, "str | None"]


def install() -> None:
    """Make this process's moto Route 53 strict (idempotent)."""
    global _INSTALLED
    with _LOCK:
        if _INSTALLED:
            return
        from moto.moto_api._internal import urls as api_urls
        from moto.route53 import models, responses, urls

        models.Route53Backend.change_resource_record_sets = _change_resource_record_sets  # type: ignore[method-assign]
        models.Route53Backend.get_hosted_zone_limit = _get_hosted_zone_limit  # type: ignore[attr-defined]
        responses.Route53.change_resource_record_sets = _change_response  # type: ignore[method-assign]
        responses.Route53.list_resource_record_sets = _list_response  # type: ignore[method-assign]
        responses.Route53.get_hosted_zone_limit = _limit_response  # type: ignore[attr-defined]
        urls.url_paths[_LIMIT_URL] = responses.Route53.dispatch
        api_urls.url_paths["{0}" + ZONE_LIMIT_PATH] = _zone_limit_endpoint
        _INSTALLED = True


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.support.strict_route53 [moto_server's options]``: a moto server in its
    own process whose Route 53 is this one."""
    install()
    from moto.server import main as moto_main

    moto_main(list(sys.argv[1:] if argv is None else argv))


def set_zone_record_limit(zone_id: str, limit: int | None) -> None:
    """Give one hosted zone of this process's moto a record-set quota (None: the default),
    as a raised or lowered Route 53 quota would. A moto reset forgets it with the zone."""
    if limit is not None and limit < 1:
        raise ValueError(f"a zone's record-set quota is at least 1, not {limit}")
    setattr(_find_zone(zone_id), _LIMIT_ATTRIBUTE, limit)


def zone_record_limit(zone: Any) -> int:
    limit = getattr(zone, _LIMIT_ATTRIBUTE, None)
    return quotas.RECORD_SETS_PER_ZONE if limit is None else int(limit)


# --- the record sets' forms ----------------------------------------------------------------

def _absolute(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _zone_id(value: str) -> str:
    return value.rsplit("/", 1)[-1]


def _values(wire: Mapping[str, Any]) -> list[str]:
    # moto keeps the SOA's values as {"Value": ...} and every other set's as plain strings
    return [v if isinstance(v, str) else v["Value"] for v in wire.get("ResourceRecords") or []]


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _number(value: Any) -> int | None:
    return None if value is None else int(value)


def policy(wire: Mapping[str, Any]) -> str | None:
    """The routing policy of a record set in wire form; None for a simple one."""
    if wire.get("Weight") is not None:
        return "weighted"
    if wire.get("MultiValueAnswer"):
        return "multivalue"
    if wire.get("Region"):
        return "latency"
    if wire.get("GeoLocation"):
        return "geolocation"
    if wire.get("CidrRoutingConfig"):
        return "ip"
    if wire.get("Failover"):
        return "failover"
    if wire.get("GeoProximityLocation"):
        return "geoproximity"
    return None


def _wire_of(rrset: Any) -> dict[str, Any]:
    """A moto RecordSet in the wire form of a change."""
    wire: dict[str, Any] = {"Name": rrset.name, "Type": rrset.type}
    if rrset.alias_target:
        wire["AliasTarget"] = rrset.alias_target
    else:
        wire["TTL"] = rrset.ttl
        wire["ResourceRecords"] = [{"Value": v} for v in _values({"ResourceRecords": rrset.records})]
    for field, value in (("SetIdentifier", rrset.set_identifier), ("Weight", rrset.weight),
                         ("Region", rrset.region), ("Failover", rrset.failover),
                         ("GeoLocation", rrset.geo_location),
                         ("MultiValueAnswer", rrset.multi_value_answer),
                         ("HealthCheckId", rrset.health_check_id),
                         ("CidrRoutingConfig", getattr(rrset, _CIDR_ATTRIBUTE, None))):
        if value is not None:
            wire[field] = value
    return wire


def _signature(wire: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything a DELETE must repeat exactly (values in any order)."""
    alias = wire.get("AliasTarget")
    return (
        None if alias else _number(wire.get("TTL")),
        tuple(sorted(_values(wire))),
        _number(wire.get("Weight")), wire.get("Region"), wire.get("Failover"),
        _frozen(wire.get("GeoLocation")), bool(wire.get("MultiValueAnswer")),
        wire.get("HealthCheckId"), _frozen(wire.get("CidrRoutingConfig")),
        None if not alias else (_zone_id(alias["HostedZoneId"]), _absolute(alias["DNSName"]),
                                bool(alias.get("EvaluateTargetHealth"))),
    )


def _key(rrset: Any) -> Key:
    return (_absolute(rrset.name), rrset.type, rrset.set_identifier)


@dataclass(frozen=True)
class _Change:
    action: str
    wire: dict[str, Any]  # the ResourceRecordSet as sent

    @property
    def key(self) -> Key:
        return (_absolute(self.wire["Name"]), self.wire["Type"], self.wire.get("SetIdentifier"))

    def elements(self) -> int:
        count = len(_values(self.wire)) or (1 if "AliasTarget" in self.wire else 0)
        return quotas.counted(self.action, count)

    def characters(self) -> int:
        return quotas.counted(self.action, sum(len(v) for v in _values(self.wire)))


# --- ChangeResourceRecordSets -------------------------------------------------------------

def _refused(problems: Sequence[str]) -> Exception:
    from moto.route53.exceptions import Route53ClientError

    return Route53ClientError(quotas.INVALID_CHANGE_BATCH, quotas.batch_message(problems))


def _invalid_input(message: str) -> Exception:
    from moto.route53.exceptions import InvalidInput

    return InvalidInput(message)


def _read(zone: Any, change: Mapping[str, Any]) -> _Change:
    """One change as sent, or the error Route 53 answers before it looks at the zone."""
    from moto.route53.exceptions import DnsNameInvalidForZone, InvalidActionValue
    from moto.route53.utils import validate_domain_name

    action = change["Action"]
    if action not in ("CREATE", "UPSERT", "DELETE"):
        raise InvalidActionValue(action)
    wire = dict(change["ResourceRecordSet"])
    validate_domain_name(wire["Name"], code=quotas.INVALID_CHANGE_BATCH)
    name, zone_name = _absolute(wire["Name"]), _absolute(zone.name)
    if name != zone_name and not name.endswith("." + zone_name):
        raise DnsNameInvalidForZone(name=wire["Name"], zone_name=zone.name)
    plain = "TTL" in wire and bool(wire.get("ResourceRecords"))
    if ("AliasTarget" in wire) == plain:
        found = "more than one" if plain else "none"
        raise _invalid_input(
            "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and "
            f"ResourceRecords], or TrafficPolicyInstanceId], but found {found} in Change with "
            f"[Action={action}, Name={wire['Name']}, Type={wire['Type']}, "
            f"SetIdentifier={wire.get('SetIdentifier', 'null')}]")
    weight = wire.get("Weight")
    if weight is not None and not 0 <= int(weight) <= quotas.MAX_WEIGHT:
        raise _invalid_input(
            f"Invalid XML ; cvc-maxInclusive-valid: Value '{weight}' is not facet-valid with "
            f"respect to maxInclusive '{quotas.MAX_WEIGHT}' for type 'ResourceRecordSetWeight'.")
    return _Change(action, wire)


class _Batch:
    """One change batch checked against the zone as each earlier change leaves it."""

    def __init__(self, backend: Any, zone: Any, changes: Sequence[_Change]) -> None:
        self.backend = backend
        self.zone = zone
        self.zone_id = zone.resource_id
        self.zone_name = _absolute(zone.name)
        self.current: dict[Key, Any] = {}
        self.named: dict[str, set[Key]] = {}
        for rrset in zone.rrsets:
            key = _key(rrset)
            self.current.setdefault(key, rrset)
            self.named.setdefault(key[0], set()).add(key)
        self.pending: dict[Key, Any] = {}  # key -> the new moto RecordSet, None when deleted
        problems: list[str] = []
        for change in changes:
            problems += self._step(change)
        problems += self._quotas()
        if problems:
            raise _refused(problems)

    def get(self, key: Key) -> Any:
        return self.pending[key] if key in self.pending else self.current.get(key)

    def at(self, name: str) -> Iterator[tuple[Key, Any]]:
        """The record sets named ``name`` as the batch has left them so far."""
        for key in self.named.get(name, ()):
            rrset = self.get(key)
            if rrset is not None:
                yield key, rrset

    def _set(self, key: Key, rrset: Any) -> None:
        self.pending[key] = rrset
        self.named.setdefault(key[0], set()).add(key)

    def _step(self, change: _Change) -> list[str]:
        key = change.key
        name, rtype, identifier = key
        existing = self.get(key)
        if change.action == "DELETE":
            if existing is None:
                return [quotas.not_found(name, rtype, identifier)]
            if _signature(_wire_of(existing)) != _signature(change.wire):
                return [quotas.values_differ(name, rtype, identifier)]
            self._set(key, None)
            return []
        if change.action == "CREATE" and existing is not None:
            return [quotas.already_exists(name, rtype, identifier)]
        problems = self._fits(change)
        if not problems:
            self._set(key, _record_set(change.wire))
        return problems

    def _fits(self, change: _Change) -> list[str]:
        name, rtype, identifier = change.key
        problems = []
        if len(_values(change.wire)) > quotas.VALUES_PER_RECORD_SET:
            problems.append(quotas.values_limit())
        wanted = policy(change.wire)
        others = [(key, rrset) for key, rrset in self.at(name) if key != change.key]
        for other in {policy(_wire_of(rrset)) for key, rrset in others if key[1] == rtype}:
            if other == wanted:
                continue
            if identifier is None:
                problems.append(quotas.routed_beside_simple(str(other), name, rtype))
            elif other is None:
                problems.append(quotas.simple_beside_routed(name, rtype, identifier))
            else:
                problems.append(quotas.other_policy(other, name, rtype, identifier))
        types = {key[1] for key, _ in others}
        if rtype == "CNAME" and types - {"CNAME"}:
            problems.append(quotas.cname_beside_others(name, self.zone_name))
        elif rtype != "CNAME" and "CNAME" in types:
            problems.append(quotas.other_beside_cname(rtype, name, self.zone_name))
        alias = change.wire.get("AliasTarget")
        if alias is not None:
            problems += self._alias(alias, rtype)
        return problems

    def _alias(self, alias: Mapping[str, Any], rtype: str) -> list[str]:
        target, zone_id = _absolute(alias["DNSName"]), _zone_id(alias["HostedZoneId"])
        if zone_id == self.zone_id:
            if target != self.zone_name and not target.endswith("." + self.zone_name):
                return [quotas.alias_outside_zone(target, rtype, zone_id)]
            found = any(key[1] == rtype for key, _ in self.at(target))
        elif zone_id in self.backend.zones:  # another zone of this account: as it is now
            found = any(_key(r)[:2] == (target, rtype) for r in self.backend.zones[zone_id].rrsets)
        else:
            return []  # a load balancer, a distribution...: not in this world
        return [] if found else [quotas.alias_target_missing(target, rtype, zone_id)]

    def _quotas(self) -> list[str]:
        problems = []
        touched = {key[:2] for key, rrset in self.pending.items() if rrset is not None}
        for name, rtype in sorted(touched):
            before: dict[str | None, int] = {}
            after: dict[str | None, int] = {}
            for key in self.named.get(name, ()):
                if key[1] != rtype:
                    continue
                for counts, rrset in ((before, self.current.get(key)), (after, self.get(key))):
                    if rrset is not None:
                        kind = policy(_wire_of(rrset))
                        counts[kind] = counts.get(kind, 0) + 1
            for kind, count in after.items():
                if (kind in quotas.QUOTA_POLICIES and count > quotas.ROUTED_PER_NAME_AND_TYPE
                        and count > before.get(kind, 0)):
                    problems.append(quotas.routed_limit(kind, name, rtype))
        total = len(self.zone.rrsets) + sum(
            (rrset is not None) - (key in self.current) for key, rrset in self.pending.items())
        if total > zone_record_limit(self.zone) and total > len(self.zone.rrsets):
            problems.append(quotas.zone_limit(self.zone_id))
        return problems

    def apply(self) -> None:
        kept: list[Any] = []
        placed: set[Key] = set()
        for rrset in self.zone.rrsets:
            key = _key(rrset)
            if key in self.pending and key not in placed:
                placed.add(key)
                if self.pending[key] is not None:
                    kept.append(self.pending[key])
            elif key not in placed:
                kept.append(rrset)
        kept += [r for k, r in self.pending.items() if k not in placed and r is not None]
        self.zone.rrsets = kept


def _record_set(wire: Mapping[str, Any]) -> Any:
    from moto.route53.models import RecordSet

    stored = dict(wire)
    if not stored["Name"].endswith("."):
        stored["Name"] += "."
    if "ResourceRecords" in stored:
        stored["ResourceRecords"] = _values(stored)
    if "AliasTarget" in stored:  # listed as Route 53 lists it: absolute target, no TTL
        stored["AliasTarget"] = {**stored["AliasTarget"],
                                 "DNSName": _absolute(stored["AliasTarget"]["DNSName"])}
    rrset = RecordSet(stored)  # type: ignore[abstract]
    if "AliasTarget" in stored:
        rrset.ttl = None
    if wire.get("CidrRoutingConfig"):
        setattr(rrset, _CIDR_ATTRIBUTE, wire["CidrRoutingConfig"])
    return rrset


def _change_resource_record_sets(self: Any, zoneid: str, change_list: list[dict[str, Any]]) -> None:
    zone = self.get_hosted_zone(zoneid)
    changes = [_read(zone, change) for change in change_list]
    problems = []
    if sum(c.elements() for c in changes) > quotas.RECORDS_PER_REQUEST:
        problems.append(quotas.records_limit())
    if sum(c.characters() for c in changes) > quotas.VALUE_CHARS_PER_REQUEST:
        problems.append(quotas.characters_limit())
    if problems:
        raise _refused(problems)
    with _LOCK:
        _Batch(self, zone, changes).apply()


def _change_response(self: Any) -> Any:
    """moto's handler minus its own count of the request's records (the backend counts)."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow

    self.backend.change_resource_record_sets(self._get_param("HostedZoneId"),
                                             self._get_param("ChangeBatch.Changes"))
    return ActionResult({"ChangeInfo": {"Id": "/change/C2682N5HXP0BZ4", "Status": "INSYNC",
                                        "SubmittedAt": utcnow()}})


# --- GetHostedZoneLimit and the quota setting ----------------------------------------------

def _get_hosted_zone_limit(self: Any, zone_id: str, limit_type: str) -> tuple[int, int]:
    """(the quota, the zone's current count) for MAX_RRSETS_BY_ZONE or
    MAX_VPCS_ASSOCIATED_BY_ZONE."""
    from moto.route53.exceptions import Route53ClientError

    zone = self.get_hosted_zone(zone_id)
    if limit_type == "MAX_RRSETS_BY_ZONE":
        return zone_record_limit(zone), len(zone.rrsets)
    if limit_type == "MAX_VPCS_ASSOCIATED_BY_ZONE":
        if not zone.private_zone:
            raise Route53ClientError("HostedZoneNotPrivate",
                                     "The specified hosted zone is a public hosted zone.")
        return quotas.VPCS_PER_ZONE, len(zone.vpcs)
    raise _invalid_input(
        f"Invalid XML ; cvc-enumeration-valid: Value '{limit_type}' is not facet-valid with "
        "respect to enumeration '[MAX_RRSETS_BY_ZONE, MAX_VPCS_ASSOCIATED_BY_ZONE]'. It must be "
        "a value from the enumeration.")


def _limit_response(self: Any) -> Any:
    from moto.core.responses import ActionResult

    limit_type = self._get_param("Type")
    value, count = self.backend.get_hosted_zone_limit(self._get_param("HostedZoneId"), limit_type)
    return ActionResult({"Limit": {"Type": limit_type, "Value": value}, "Count": count})


def _find_zone(zone_id: str) -> Any:
    from moto.route53.models import route53_backends

    wanted = _zone_id(zone_id)
    for partitions in route53_backends.values():
        for backend in partitions.values():
            if wanted in backend.zones:
                return backend.zones[wanted]
    raise KeyError(f"no hosted zone {wanted} in this moto")


def _zone_limit_endpoint(request: Any, full_url: str, headers: Any) -> tuple[int, dict[str, str], str]:
    raw = request.get_data() if hasattr(request, "get_data") else request.body
    body = json.loads(raw or b"{}")
    try:
        set_zone_record_limit(body["HostedZoneId"], body.get("Value"))
    except (KeyError, ValueError) as exc:
        return 400, {}, json.dumps({"error": str(exc)})
    return 200, {"Content-Type": "application/json"}, json.dumps(body)


# --- ListResourceRecordSets ----------------------------------------------------------------

def _list_response(self: Any) -> Any:
    """moto's handler, continuing after ``StartRecordIdentifier`` as Route 53 does."""
    from moto.core.responses import ActionResult
    from moto.route53.exceptions import InvalidInput
    from moto.route53.utils import validate_domain_name

    zone_id = self._get_param("HostedZoneId")
    start_type = self._get_param("StartRecordType")
    start_name = self._get_param("StartRecordName")
    start_identifier = self._get_param("StartRecordIdentifier")
    max_items = self._get_int_param("MaxItems", 300)
    if start_type and not start_name:
        raise InvalidInput("The input is not valid")
    if start_name:
        validate_domain_name(start_name)
    with _LOCK:
        listed = list(self.backend.get_hosted_zone(zone_id).get_record_sets(start_type, start_name))
    if start_identifier and listed:
        first = (listed[0].name, listed[0].type)
        for index, rrset in enumerate(listed):
            if (rrset.name, rrset.type) != first:
                break
            if rrset.set_identifier == start_identifier:
                listed = listed[index:]
                break
    result: dict[str, Any] = {"ResourceRecordSets": listed[:max_items],
                              "IsTruncated": len(listed) > max_items, "MaxItems": max_items}
    if len(listed) > max_items:
        following = listed[max_items]
        result["NextRecordName"] = following.name
        result["NextRecordType"] = following.type
        if following.set_identifier:
            result["NextRecordIdentifier"] = following.set_identifier
    return ActionResult(result)


if __name__ == "__main__":
    main()

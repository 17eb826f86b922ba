"""Route 53's documented quotas and the words of its refusals, for the test world's Route 53s.

Two fakes refuse what Route 53 refuses: the strict moto (:mod:`tests.support.strict_route53`)
and the fleet simulation's model (``benchmarks/fleet/route53.py``). Both take the numbers and
the messages from here, so a product test and a fleet measurement meet the same cliff with
the same words. Nothing here imports the product: the test world is an independent oracle.

Sources (Route 53 Developer Guide, "Quotas"; API Reference, ChangeResourceRecordSets):
100 geolocation, latency, multivalue answer, weighted or IP-based records with the same name
and type; 400 values in a record; 10,000 records per hosted zone by default (GetHostedZoneLimit
MAX_RRSETS_BY_ZONE); per request at most 1,000 ResourceRecord elements (alias records
included) and 32,000 characters in all Value elements, each counted twice for an UPSERT.

Route 53 answers a refused batch with code ``InvalidChangeBatch`` and one message listing
every problem it found, in brackets, separated by ", " (``[problem 1, problem 2]``). Wording
seen in Route 53's answers as users report them (kept verbatim here): "Tried to create
resource record set [...] but it already exists", "... but it was not found", "... but the
values provided do not match the current values", "Exceeded limit on number of weighted
RRSets for NAME, type TYPE in this zone.", "Number of records limit of 1000 exceeded.",
"RDATA character limit of 32000 exceeded.", "Exceeded limit MAX_RRSETS_BY_ZONE for zone:
ZONEID", "Cannot have more than N records in a RRSet." (seen when the quota was 100), "RRSet
with DNS name NAME, type TYPE, SetIdentifier ID cannot be created as a non-weighted set exists
with the same name and type.", "Tried to create an alias that targets NAME, type TYPE in zone
ZONEID, but that target was not found" (and "... but the alias target name does not lie within
the target zone"), and the CNAME conflicts. MODELLED, not seen: the limit message for routing
policies other than weighted (the weighted one with the policy's name), a simple record set
refused beside routed ones, and two routing policies under one name and type.
"""

from __future__ import annotations

from collections.abc import Iterable

ROUTED_PER_NAME_AND_TYPE = 100
VALUES_PER_RECORD_SET = 400
RECORDS_PER_REQUEST = 1000
VALUE_CHARS_PER_REQUEST = 32000
UPSERT_COUNTS = 2
RECORD_SETS_PER_ZONE = 10_000
MAX_WEIGHT = 255
#: Amazon VPCs that can be associated with one private hosted zone (GetHostedZoneLimit
#: MAX_VPCS_ASSOCIATED_BY_ZONE).
VPCS_PER_ZONE = 300

#: Routing policies under the 100-per-name-and-type quota, as Route 53's messages name them.
#: Failover (one primary, one secondary) and geoproximity are not under it.
QUOTA_POLICIES = {
    "weighted": "weighted",
    "multivalue": "multivalue answer",
    "latency": "latency",
    "geolocation": "geolocation",
    "ip": "IP-based",
}

INVALID_CHANGE_BATCH = "InvalidChangeBatch"


def counted(action: str, amount: int) -> int:
    """``amount`` ResourceRecord elements or characters as a request's quota counts them."""
    return amount * (UPSERT_COUNTS if action == "UPSERT" else 1)


def batch_message(problems: Iterable[str]) -> str:
    """Route 53's one message for a refused batch: every problem, in brackets."""
    return "[" + ", ".join(problems) + "]"


def named(name: str, rtype: str, set_identifier: str | None) -> str:
    text = f"[name='{name}', type='{rtype}'"
    if set_identifier is not None:
        text += f", set-identifier='{set_identifier}'"
    return text + "]"


def already_exists(name: str, rtype: str, set_identifier: str | None) -> str:
    return f"Tried to create resource record set {named(name, rtype, set_identifier)} but it already exists"


def not_found(name: str, rtype: str, set_identifier: str | None) -> str:
    return f"Tried to delete resource record set {named(name, rtype, set_identifier)} but it was not found"


def values_differ(name: str, rtype: str, set_identifier: str | None) -> str:
    return (f"Tried to delete resource record set {named(name, rtype, set_identifier)} but the "
            "values provided do not match the current values")


def routed_limit(policy: str, name: str, rtype: str) -> str:
    return (f"Exceeded limit on number of {QUOTA_POLICIES[policy]} RRSets for {name}, "
            f"type {rtype} in this zone.")


def values_limit() -> str:
    return f"Cannot have more than {VALUES_PER_RECORD_SET} records in a RRSet."


def records_limit() -> str:
    return f"Number of records limit of {RECORDS_PER_REQUEST} exceeded."


def characters_limit() -> str:
    return f"RDATA character limit of {VALUE_CHARS_PER_REQUEST} exceeded."


def zone_limit(zone_id: str) -> str:
    return f"Exceeded limit MAX_RRSETS_BY_ZONE for zone: {zone_id}"


def simple_beside_routed(name: str, rtype: str, set_identifier: str) -> str:
    """A routed record set where a simple one of its name and type exists."""
    return (f"RRSet with DNS name {name}, type {rtype}, SetIdentifier {set_identifier} cannot "
            "be created as a non-weighted set exists with the same name and type.")


def routed_beside_simple(policy: str, name: str, rtype: str) -> str:
    """A simple record set where routed ones of its name and type exist (modelled)."""
    return (f"RRSet with DNS name {name}, type {rtype} cannot be created as {policy} sets "
            "exist with the same name and type.")


def other_policy(policy: str, name: str, rtype: str, set_identifier: str) -> str:
    """A routed record set beside routed ones of another policy (modelled)."""
    return (f"RRSet with DNS name {name}, type {rtype}, SetIdentifier {set_identifier} cannot "
            f"be created as {policy} sets exist with the same name and type.")


def alias_target_missing(target: str, rtype: str, zone_id: str) -> str:
    return (f"Tried to create an alias that targets {target}, type {rtype} in zone {zone_id}, "
            "but that target was not found")


def alias_outside_zone(target: str, rtype: str, zone_id: str) -> str:
    return (f"Tried to create an alias that targets {target}, type {rtype} in zone {zone_id}, "
            "but the alias target name does not lie within the target zone")


def cname_beside_others(name: str, zone_name: str) -> str:
    return (f"RRSet of type CNAME with DNS name {name} is not permitted as it conflicts with "
            f"other records with the same DNS name in zone {zone_name}")


def other_beside_cname(rtype: str, name: str, zone_name: str) -> str:
    return (f"RRSet of type {rtype} with DNS name {name} is not permitted because a conflicting "
            f"RRSet of type CNAME with the same DNS name already exists in zone {zone_name}")

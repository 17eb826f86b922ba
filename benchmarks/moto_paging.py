"""Make moto's ListResourceRecordSets page the way Route 53 does (for in-process moto servers).

Why: moto 5.2.x does not implement ``StartRecordIdentifier`` and never returns
``NextRecordIdentifier`` (its source says so). When a page of a zone ends inside the weighted
record sets of one name and type, which is every page boundary of a zone where services have
many instances, moto's next page starts again at the first record set of that name, and the
boto3 paginator stops with "The same next token was received twice". Real Route 53 continues
after the identifier. The benchmarks list zones of 1k-10k record sets, so they install this
fix in the process that runs the (threaded) moto server; it changes nothing else.

Limits of the fix: record sets of one name and type are kept in moto's insertion order, and
the identifier marks a position in that order (Route 53 documents no order of its own).
"""

from __future__ import annotations

from typing import Any

_INSTALLED = False


def install() -> None:
    """Replace moto's ListResourceRecordSets response handler (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from moto.core.responses import ActionResult
    from moto.route53.exceptions import InvalidInput
    from moto.route53.responses import Route53

    def list_resource_record_sets(self: Any) -> Any:
        zone_id = self._get_param("HostedZoneId")
        start_type = self._get_param("StartRecordType")
        start_name = self._get_param("StartRecordName")
        start_identifier = self._get_param("StartRecordIdentifier")
        max_items = self._get_int_param("MaxItems", 300)
        if start_type and not start_name:
            raise InvalidInput("The input is not valid")
        if start_name:  # same validation as moto's own handler
            from moto.route53.models import validate_domain_name

            validate_domain_name(start_name)
        zone = self.backend.get_hosted_zone(zone_id)
        listed = list(zone.get_record_sets(start_type, start_name))
        if start_identifier and listed:
            first = (listed[0].name, listed[0].type)
            for index, rrset in enumerate(listed):
                if (rrset.name, rrset.type) != first:
                    break
                if rrset.set_identifier == start_identifier:
                    listed = listed[index:]
                    break
        records = listed[:max_items]
        truncated = len(listed) > max_items
        result: dict[str, Any] = {"ResourceRecordSets": records, "IsTruncated": truncated,
                                  "MaxItems": max_items}
        if truncated:
            following = listed[max_items]
            result["NextRecordName"] = following.name
            result["NextRecordType"] = following.type
            if following.set_identifier:
                result["NextRecordIdentifier"] = following.set_identifier
        return ActionResult(result)

    Route53.list_resource_record_sets = list_resource_record_sets  # type: ignore[method-assign]
    _INSTALLED = True

"""The task-events Lambda's settings: each one environment variable with one default.

Read once per cold start (:func:`load`), from the function's environment, so a
CloudFormation template is the whole configuration contract. The names of the fixed-record
mode are the original X-Ray Lambda's (``HOSTED_ZONE_ID``, ``RR_NAME``, ``TASK_GROUP``), so
its deployments keep their configuration.

================  ===========  ==================================================================
variable          default      meaning
================  ===========  ==================================================================
DOMAIN            ""           the private hosted zone's name (or give HOSTED_ZONE_ID)
HOSTED_ZONE_ID    ""           the hosted zone's id (wins over DOMAIN)
VPC_ID            ""           with DOMAIN: pick the zone associated with this VPC
RR_NAME           ""           fixed record name, e.g. ``xray.acme.com`` (with TASK_GROUP)
TASK_GROUP        ""           the task group whose task RR_NAME points at (``service:xray``)
ROUTING           weighted     routing policy of every record set: weighted or multivalue
TTL               0            TTL of the records, in seconds
ECS_CLUSTERS      ""           comma-separated cluster names or ARNs to act on; "" = all
SERVICE_RECORDS   true         register SERVICE_<port>_NAME / discovery.service.name services
BRIDGE_RECORDS    true         also for bridge/host-mode tasks on EC2 (turn off where the
                               per-host agent registers them, or both would answer)
DRY_RUN           false        log the changes, make none
LOG_LEVEL         info         logging level
================  ===========  ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ecssd_agent import naming
from ecssd_agent.model import Routing

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class TaskEventConfig:
    domain: str = ""
    hosted_zone_id: str = ""
    vpc_id: str = ""
    rr_name: str = ""
    task_group: str = ""
    routing: Routing = Routing.WEIGHTED
    ttl: int = 0
    clusters: frozenset[str] = frozenset()  # cluster names; empty = every cluster
    service_records: bool = True
    bridge_records: bool = True
    dry_run: bool = False
    log_level: str = "info"

    @property
    def fixed_record(self) -> bool:
        return bool(self.rr_name and self.task_group)

    def watches(self, cluster: str) -> bool:
        """Whether events of this cluster (a name) are ours to act on."""
        return not self.clusters or cluster in self.clusters


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")


def load(environ: Mapping[str, str]) -> TaskEventConfig:
    """Settings from ``environ``; raises :class:`ConfigError` naming the bad variable."""

    def text(name: str) -> str:
        return environ.get(name, "").strip()

    domain, zone_id = text("DOMAIN"), text("HOSTED_ZONE_ID").rsplit("/", 1)[-1]
    if not domain and not zone_id:
        raise ConfigError("set DOMAIN (the private hosted zone's name) or HOSTED_ZONE_ID")
    if domain:
        try:
            naming.zone_fqdn(domain)
        except naming.InvalidName as exc:
            raise ConfigError(f"DOMAIN: {exc}") from exc
    rr_name, task_group = text("RR_NAME").lower(), text("TASK_GROUP")
    if bool(rr_name) != bool(task_group):
        raise ConfigError("RR_NAME and TASK_GROUP go together: set both or neither")
    if rr_name:
        try:
            naming.check_name(rr_name)
        except naming.InvalidName as exc:
            raise ConfigError(f"RR_NAME: {exc}") from exc
    routing = text("ROUTING").lower() or Routing.WEIGHTED.value
    if routing not in {r.value for r in Routing}:
        raise ConfigError(f"ROUTING={routing!r}: use weighted or multivalue")
    ttl_text = text("TTL") or "0"
    if not ttl_text.isdigit() or int(ttl_text) > 2147483647:
        raise ConfigError(f"TTL={ttl_text!r} is not a number of seconds")
    clusters = frozenset(naming.cluster_name(c.strip()) for c in text("ECS_CLUSTERS").split(",")
                         if c.strip())
    return TaskEventConfig(
        domain=domain,
        hosted_zone_id=zone_id,
        vpc_id=text("VPC_ID"),
        rr_name=rr_name,
        task_group=task_group,
        routing=Routing(routing),
        ttl=int(ttl_text),
        clusters=clusters,
        service_records=_flag(environ, "SERVICE_RECORDS", True),
        bridge_records=_flag(environ, "BRIDGE_RECORDS", True),
        dry_run=_flag(environ, "DRY_RUN", False),
        log_level=text("LOG_LEVEL").lower() or "info",
    )

"""The task-events Lambda's settings: each has one attribute, one environment variable, one default.

Read once per execution environment, from the function's environment, so the CloudFormation
template is the whole configuration contract. The fixed-record names (``HOSTED_ZONE_ID``,
``RR_NAME``, ``TASK_GROUP``) are those the X-Ray daemon's address Lambda used, so its
deployments keep their configuration.
"""


from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ecssd_agent.aws.assume_role import ZoneRole, zone_role
from ecssd_agent.config_fields import SettingsError, from_env, setting
from ecssd_agent.core import naming
from ecssd_agent.core.model import Routing


@dataclass(frozen=True)
class TaskEventSettings:
    domain: str = setting("", "the private hosted zone's name", env="DOMAIN")
    hosted_zone_id: str = setting("", "the hosted zone's id (wins over DOMAIN)",
                                  env="HOSTED_ZONE_ID")
    vpc_id: str = setting("", "with DOMAIN: the zone associated with this VPC", env="VPC_ID")
    rr_name: str = setting("", "fixed record name (with TASK_GROUP)", env="RR_NAME")
    task_group: str = setting("", "the task group RR_NAME points at", env="TASK_GROUP")
    routing: Routing = setting(Routing.WEIGHTED, "routing policy of every record set",
                               env="ROUTING", choices=[r.value for r in Routing])
    ttl: int = setting(0, "TTL of the records, in seconds", env="TTL")
    clusters: tuple[str, ...] = setting((), "cluster names or ARNs to act on; empty: all",
                                        env="ECS_CLUSTERS")
    service_records: bool = setting(True, "register SERVICE_<port>_NAME services",
                                    env="SERVICE_RECORDS")
    bridge_records: bool = setting(True, "also for bridge/host-mode tasks on EC2",
                                   env="BRIDGE_RECORDS")
    assume_role_arn: str = setting("", "Route 53 requests are signed as this IAM role",
                                   env="ASSUME_ROLE_ARN")
    assume_role_external_id: str = setting("", "the ExternalId the role's trust policy asks for",
                                           env="ASSUME_ROLE_EXTERNAL_ID")
    health_gate: bool = setting(True, "records only for HEALTHY health-checked containers",
                                env="HEALTH_GATE")
    route53_rate: float = setting(5.0, "Route 53 requests per second one execution "
                                  "environment sends at most (a token bucket)",
                                  env="ROUTE53_RATE")
    route53_burst: int = setting(10, "requests that bucket saves up while idle",
                                 env="ROUTE53_BURST")
    dry_run: bool = setting(False, "log the changes, make none", env="DRY_RUN")
    log_level: str = setting("info", "logging level", env="LOG_LEVEL")

    @property
    def fixed_record(self) -> bool:
        return bool(self.rr_name and self.task_group)

    def zone_role(self) -> ZoneRole | None:
        """The role Route 53 clients assume, or None; raises SettingsError if malformed."""
        return zone_role(self.assume_role_arn, self.assume_role_external_id,
                         "ecssd-task-events", arn_source="ASSUME_ROLE_ARN",
                         external_id_source="ASSUME_ROLE_EXTERNAL_ID")

    def watches(self, cluster: str) -> bool:
        """Whether events of this cluster (a name) are ours to act on."""
        return not self.clusters or cluster in self.clusters


def load(environ: Mapping[str, str]) -> TaskEventSettings:
    """Settings from ``environ``; raises :class:`SettingsError` naming the bad variable."""
    config = from_env(TaskEventSettings, {k: v.strip() for k, v in environ.items()})
    if not config.domain and not config.hosted_zone_id:
        raise SettingsError("set DOMAIN (the private hosted zone's name) or HOSTED_ZONE_ID")
    if config.domain:
        try:
            naming.zone_fqdn(config.domain)
        except naming.InvalidName as exc:
            raise SettingsError(f"DOMAIN: {exc}") from exc
    if bool(config.rr_name) != bool(config.task_group):
        raise SettingsError("RR_NAME and TASK_GROUP go together: set both or neither")
    if config.rr_name:
        try:
            naming.check_name(config.rr_name.lower())
        except naming.InvalidName as exc:
            raise SettingsError(f"RR_NAME: {exc}") from exc
    config.zone_role()
    if not config.route53_rate > 0 or config.route53_burst < 1:
        raise SettingsError(f"ROUTE53_RATE={config.route53_rate!r} must be > 0 and "
                            f"ROUTE53_BURST={config.route53_burst!r} at least 1")
    if not 0 <= config.ttl <= 2147483647:
        raise SettingsError(f"TTL={config.ttl!r} is not a number of seconds")
    return replace(
        config,
        hosted_zone_id=config.hosted_zone_id.rsplit("/", 1)[-1],
        rr_name=config.rr_name.lower(),
        routing=Routing(config.routing),
        clusters=tuple(naming.cluster_name(c) for c in config.clusters),
        log_level=config.log_level.lower(),
    )

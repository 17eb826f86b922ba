"""The health sweep's settings: each has one attribute, one environment variable, one default.

Lambda configuration is environment variables, so the CloudFormation template is the whole
configuration contract; they are read once per execution environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ecssd_agent.aws.assume_role import ZoneRole, zone_role
from ecssd_agent.config_fields import DEFAULT_DOMAIN, SettingsError, from_env, setting


def _env(name: str, default: Any, help: str) -> Any:
    return setting(default, help, env=name)


@dataclass(frozen=True)
class SweepSettings:
    clusters: tuple[str, ...] = _env(
        "ECS_CLUSTERS", (), "comma-separated cluster names or ARNs; empty: every cluster of "
        "the account and region (then hosts in no cluster count as dead)")
    domain: str = _env("DOMAIN", DEFAULT_DOMAIN, "the private hosted zone's name")
    hosted_zone_id: str = _env("HOSTED_ZONE_ID", "", "the hosted zone's id (wins over DOMAIN)")
    check_health: bool = _env("CHECK_HEALTH", True, "HTTP-check every live service instance")
    check_health_path: str = _env("CHECK_HEALTH_PATH", "/health", "path checked when the "
                                  "container definition declares no SERVICE_<port>_CHECK_HTTP")
    check_timeout: float = _env("CHECK_TIMEOUT", 2.0, "seconds per check attempt")
    check_retries: int = _env("CHECK_RETRIES", 3, "attempts per instance before it is "
                              "unhealthy (the first one included)")
    stop_unhealthy: bool = _env("STOP_UNHEALTHY", True, "StopTask an unhealthy instance's task")
    dry_run: bool = _env("DRY_RUN", False, "decide and report everything, change nothing")
    max_delete_fraction: float = _env("MAX_DELETE_FRACTION", 0.5, "if the orphans (records "
                                      "of hosts and tasks ECS and EC2 show gone) are this "
                                      "fraction or more of the record sets the sweep decides "
                                      "on, and more than 2, delete none of them (1 or more "
                                      "disables the guard)")
    check_failures: int = _env("CHECK_FAILURES", 2, "sweeps in a row an instance must fail, "
                               "where the path to it is shown to work, before its records "
                               "are deleted and its task stopped (the count is a tag of the "
                               "task; 1 acts on the first failure)")
    check_concurrency: int = _env("CHECK_CONCURRENCY", 64, "HTTP checks in flight at once")
    grace_seconds: float = _env("GRACE_SECONDS", 60.0, "a task started less than this ago is "
                                "not judged unhealthy")
    assume_role_arn: str = _env("ASSUME_ROLE_ARN", "", "the zone lives in another account: "
                                "Route 53 requests are signed as this IAM role; ECS and EC2 "
                                "stay in this account")
    assume_role_external_id: str = _env("ASSUME_ROLE_EXTERNAL_ID", "", "the ExternalId the "
                                        "role's trust policy asks for")
    log_level: str = _env("LOG_LEVEL", "info", "logging level")
    change_queue_url: str = _env("CHANGE_QUEUE_URL", "", "queued mode: the zone writer's SQS "
                                 "queue, told which hosts' records were deleted so that it "
                                 "reads them again (empty: direct mode, nothing sent)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SweepSettings:
        """Parse every variable; raises :class:`SettingsError` naming the bad one."""
        settings = from_env(cls, environ)
        settings.validate()
        return settings

    def zone_role(self) -> ZoneRole | None:
        """The role Route 53 clients assume, or None; raises SettingsError if malformed."""
        return zone_role(self.assume_role_arn, self.assume_role_external_id, "ecssd-sweep",
                         arn_source="ASSUME_ROLE_ARN",
                         external_id_source="ASSUME_ROLE_EXTERNAL_ID")

    def validate(self) -> None:
        self.zone_role()
        if not self.domain and not self.hosted_zone_id:
            raise SettingsError("set DOMAIN or HOSTED_ZONE_ID")
        if not self.check_health_path.startswith("/"):
            raise SettingsError(f"CHECK_HEALTH_PATH={self.check_health_path!r} must start "
                                "with /")
        for name, value, low in (("CHECK_TIMEOUT", self.check_timeout, 0.001),
                                 ("CHECK_RETRIES", self.check_retries, 1),
                                 ("CHECK_CONCURRENCY", self.check_concurrency, 1),
                                 ("GRACE_SECONDS", self.grace_seconds, 0),
                                 ("MAX_DELETE_FRACTION", self.max_delete_fraction, 0),
                                 ("CHECK_FAILURES", self.check_failures, 1)):
            if value < low:
                raise SettingsError(f"{name}={value} must be at least {low:g}")
        if self.change_queue_url and not self.change_queue_url.startswith(("https://",
                                                                             "http://")):
            raise SettingsError(f"CHANGE_QUEUE_URL={self.change_queue_url!r} is not a queue "
                                "URL (https://sqs...)")
        if self.check_failures > 1000:
            raise SettingsError(f"CHECK_FAILURES={self.check_failures} is more sweeps than a "
                                "task's tag counts (at most 1000)")
        if self.check_concurrency > 512:
            raise SettingsError(f"CHECK_CONCURRENCY={self.check_concurrency} is more threads "
                                "than a Lambda should run (at most 512)")


"""The agent's settings: each has one attribute, one flag, one ``ECSSD_`` variable, one default.

Built once per process from the command line over the environment over the defaults, so the
same agent runs from a systemd unit (flags), an ECS task definition (``ECSSD_*`` variables)
or the reference's service file (``-sync``, ``-remove``, ``-hostname`` are accepted).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ecssd_agent.aws.assume_role import ZoneRole, zone_role
from ecssd_agent.config_fields import (
    DEFAULT_DOMAIN,
    SettingsError,
    build_parser,
    env_name,
    load_cli,
)
from ecssd_agent.config_fields import setting as _opt

__all__ = ["DEFAULT_DOMAIN", "Settings", "SettingsError", "env_name", "load", "parser"]

@dataclass(frozen=True)
class Settings:
    domain: str = _opt(DEFAULT_DOMAIN, "the private hosted zone's name (positional DOMAIN)")
    hosted_zone_id: str = _opt("", "use this hosted zone id instead of looking the zone up "
                                   "by name")
    vpc_id: str = _opt("", "when several private zones share the name, use the one "
                           "associated with this VPC")
    hostname: str = _opt("", "this host's name; its first label names the host's A record and "
                             "owns its records (default: EC2 instance metadata)",
                         legacy=("-hostname",))
    host_ip: str = _opt("", "this host's IP for its A record (default: EC2 instance metadata)")
    routing: str = _opt("weighted", "routing policy of the record sets: weighted (one "
                                    "instance per answer) or multivalue (up to 8 per answer)",
                        choices=("weighted", "multivalue"))
    ttl: int = _opt(0, "TTL of the records in seconds; 0 (the reference's) makes every lookup "
                       "see changes at once, at the cost of a resolver query per connection")
    sync: bool = _opt(False, "reconcile this host's records once and exit", legacy=("-sync",))
    remove: bool = _opt(False, "delete every record this host owns and exit",
                        legacy=("-remove",))
    dry_run: bool = _opt(False, "log the changes that would be made, make none")
    docker_host: str = _opt("", "Docker engine URL (default: DOCKER_HOST, else the local "
                                "socket)")
    imds_endpoint: str = _opt("", "EC2 instance metadata endpoint (default: "
                                  "AWS_EC2_METADATA_SERVICE_ENDPOINT, else 169.254.169.254)")
    region: str = _opt("", "AWS region (default: AWS_REGION, else instance metadata)")
    aws_retry_mode: str = _opt("standard", "botocore retry mode for throttling and "
                                           "PriorRequestNotComplete",
                               choices=("standard", "adaptive", "legacy"))
    aws_max_attempts: int = _opt(8, "botocore's maximum attempts per AWS call")
    assume_role_arn: str = _opt("", "the zone lives in another account: Route 53 requests are "
                                    "signed as this IAM role (STS AssumeRole, refreshed "
                                    "before expiry); DynamoDB, SQS, ECS and EventBridge stay "
                                    "in this account")
    assume_role_external_id: str = _opt("", "the ExternalId the role's trust policy asks for "
                                            "(with --assume-role-arn)")
    log_format: str = _opt("text", "log format; json suits CloudWatch Logs",
                           choices=("text", "json"))
    log_level: str = _opt("info", "log level", choices=("debug", "info", "warning", "error"))
    resync: float = _opt(300.0, "seconds between full resyncs in daemon mode (list the "
                                "containers and the zone, repair drift; jittered by 10%%)")
    coalesce: float = _opt(0.25, "seconds without Docker events before their changes go out "
                                 "in one change request; during a burst of events the "
                                 "window grows (up to 36x) so a burst costs a few requests")
    deregister_on_exit: bool = _opt(False, "on SIGTERM/SIGINT, delete this host's records "
                                           "before exiting when the host is leaving (its ECS "
                                           "container instance draining or deregistering, "
                                           "its Auto Scaling lifecycle state Terminated, a "
                                           "spot interruption notice); a host that stays "
                                           "keeps them for the next agent")
    cw_send_events: bool = _opt(False, "put Task Started/Stopped events on EventBridge (source "
                                       "awslabs.ecs.container, as the reference agent did)")
    ecs_agent_url: str = _opt("http://127.0.0.1:51678", "ECS agent introspection API, for the "
                                                        "task ARN of containers without ECS "
                                                        "labels")
    health_gate: bool = _opt(True, "publish a container that has a Docker HEALTHCHECK only "
                                   "while Docker reports it healthy (withdraw it when "
                                   "unhealthy); --no-health-gate publishes it as soon as it "
                                   "runs. Containers without a health check are not affected")
    drain_check: float = _opt(60.0, "seconds between checks of this host's ECS container "
                                    "instance status (the ECS agent's introspection API, then "
                                    "one DescribeContainerInstances; jittered by 10%%); while "
                                    "it is DRAINING (or deregistering) the host's service "
                                    "records are withdrawn, its A record stays. 0: off")
    status_port: int = _opt(0, "serve /healthz (liveness: 503 only when the agent's loop is "
                               "stuck or Docker has been unreachable for 5 minutes), /readyz "
                               "(200 when the Docker event stream is connected and the last "
                               "reconcile succeeded, else 503) and /metrics (Prometheus) on "
                               "this port (0: off)")
    status_address: str = _opt("127.0.0.1", "address for the status server")
    host_table: str = _opt("", "queued mode (with --change-queue): publish this host's desired "
                               "state to this DynamoDB table and let the zone writer "
                               "(ecssd-writer or its Lambda) apply it; the agent then makes no "
                               "Route 53 request. For fleets beyond ~500 hosts")
    change_queue: str = _opt("", "queued mode (with --host-table): the SQS queue URL the agent "
                                 "hints the zone writer on")

    @property
    def queued(self) -> bool:
        """Queued mode: the zone writer applies this host's records (see ecssd_agent.writer.publish)."""
        if bool(self.host_table) != bool(self.change_queue):
            raise SettingsError("--host-table and --change-queue (ECSSD_HOST_TABLE, "
                                "ECSSD_CHANGE_QUEUE) go together: set both for queued mode, or "
                                "neither")
        return bool(self.host_table)

    def zone_role(self, session_name: str = "ecssd-agent") -> ZoneRole | None:
        """The role Route 53 clients assume, or None; raises SettingsError if malformed."""
        return zone_role(self.assume_role_arn, self.assume_role_external_id, session_name,
                         arn_source="--assume-role-arn / ECSSD_ASSUME_ROLE_ARN",
                         external_id_source="--assume-role-external-id / "
                                            "ECSSD_ASSUME_ROLE_EXTERNAL_ID")

    @property
    def mode(self) -> str:
        if self.sync and self.remove:
            raise SettingsError("--sync and --remove exclude each other")
        return "remove" if self.remove else "sync" if self.sync else "daemon"



def parser() -> argparse.ArgumentParser:
    return build_parser(
        Settings, env_name, DEFAULT_DOMAIN,
        prog="ecssd-agent",
        description="Publish this host's Docker containers' SERVICE_<port>_NAME services as "
                    "SRV records (and the host's A record) in a Route 53 private hosted zone.",
        epilog="Every option can also be set as an ECSSD_<OPTION> environment variable, e.g. "
               "ECSSD_HOSTED_ZONE_ID, ECSSD_ROUTING=multivalue, ECSSD_SYNC=true. Command-line "
               "flags win over the environment. AWS endpoints come from the standard "
               "AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ROUTE53 variables.",
    )


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags over ``ECSSD_*`` variables over defaults; raises SettingsError or SystemExit."""
    settings = load_cli(Settings, parser(), argv, os.environ if environ is None else environ,
                        env_name)
    if settings.ttl < 0 or settings.ttl > 2147483647:
        raise SettingsError(f"--ttl / ECSSD_TTL: {settings.ttl} is out of range")
    if settings.resync <= 0 or settings.coalesce < 0:
        raise SettingsError("--resync must be > 0 and --coalesce >= 0")
    if settings.drain_check < 0:
        raise SettingsError(f"--drain-check / ECSSD_DRAIN_CHECK: {settings.drain_check} must be "
                            ">= 0 seconds (0: off)")
    if not 0 <= settings.status_port <= 65535:
        raise SettingsError(f"--status-port / ECSSD_STATUS_PORT: {settings.status_port} is not "
                            "a port number")
    _ = settings.mode, settings.queued, settings.zone_role()
    return settings

"""``ecssd-dns`` settings, in the agent's style: one attribute, flag, ``ECSSD_`` variable, default.

Flags win over variables, variables over defaults. The names the agent also has
(DOMAIN, ``--hosted-zone-id``, ``--vpc-id``, ``--region``, ``--log-*``) mean the same thing and
read the same variables, so one environment configures both.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ecssd_agent.aws.assume_role import ZoneRole, zone_role
from ecssd_agent.config_fields import DEFAULT_DOMAIN, SettingsError, build_parser, env_name, load_cli
from ecssd_agent.config_fields import setting as _opt


@dataclass(frozen=True)
class DnsSettings:
    domain: str = _opt(DEFAULT_DOMAIN, "the private hosted zone to serve (positional DOMAIN)")
    hosted_zone_id: str = _opt("", "serve this hosted zone id instead of looking the zone up "
                                   "by name")
    vpc_id: str = _opt("", "when several private zones share the name, the one associated "
                           "with this VPC")
    listen: str = _opt("127.0.0.1", "address to listen on, UDP and TCP")
    port: int = _opt(5353, "port to listen on, UDP and TCP (0: any free port, logged)")
    http_port: int = _opt(0, "serve Prometheus HTTP service discovery on this TCP port of the "
                             "listen address: GET /prometheus/targets lists every instance of "
                             "every SRV record with __meta_ecssd_* labels (0: off)")
    refresh: float = _opt(10.0, "seconds between the starts of two listings of the whole "
                                "zone, at least (one request per 300 record sets, paced by "
                                "--route53-rate: 3,000 record sets take 10 s at 1 request/s)")
    route53_rate: float = _opt(1.0, "Route 53 requests per second this server may send, "
                                    "whatever the zone's size and the queries (a token bucket "
                                    "every request waits on)")
    route53_burst: int = _opt(5, "requests the bucket saves up while idle (new names looked "
                                 "up at once)")
    negative_ttl: float = _opt(30.0, "a queried name the zone lacks is looked up (one request) "
                                     "at most once per this many seconds")
    max_udp_size: int = _opt(4096, "largest UDP response, and the EDNS size we advertise; a "
                                   "client's smaller EDNS size (or 512 without EDNS) wins")
    region: str = _opt("", "AWS region for signing (default: AWS_REGION, else us-east-1; "
                           "Route 53 is global)")
    aws_retry_mode: str = _opt("standard", "botocore retry mode",
                               choices=("standard", "adaptive", "legacy"))
    aws_max_attempts: int = _opt(3, "botocore's maximum attempts per AWS call (few: the "
                                    "next refresh is the retry)")
    assume_role_arn: str = _opt("", "the zone lives in another account: list it as this IAM "
                                    "role (STS AssumeRole, refreshed before expiry)")
    assume_role_external_id: str = _opt("", "the ExternalId the role's trust policy asks for "
                                            "(with --assume-role-arn)")
    log_format: str = _opt("text", "log format; json suits CloudWatch Logs",
                           choices=("text", "json"))
    log_level: str = _opt("info", "log level",
                          choices=("debug", "info", "warning", "error"))

    def zone_role(self) -> ZoneRole | None:
        """The role the Route 53 client assumes, or None; raises SettingsError if malformed."""
        return zone_role(self.assume_role_arn, self.assume_role_external_id, "ecssd-dns",
                         arn_source="--assume-role-arn / ECSSD_ASSUME_ROLE_ARN",
                         external_id_source="--assume-role-external-id / "
                                            "ECSSD_ASSUME_ROLE_EXTERNAL_ID")


def parser() -> argparse.ArgumentParser:
    return build_parser(
        DnsSettings, env_name, DEFAULT_DOMAIN,
        prog="ecssd-dns",
        description="Answer DNS queries (UDP and TCP) for a Route 53 private hosted zone as "
                    "Route 53 would: simple, weighted and multivalue routing, SRV with the "
                    "targets' addresses, NXDOMAIN/NODATA with the SOA, EDNS0, TC and TCP.",
        epilog="Every option can also be set as an ECSSD_<OPTION> environment variable (e.g. "
               "ECSSD_HOSTED_ZONE_ID, ECSSD_PORT); flags win. The Route 53 endpoint comes "
               "from AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ROUTE53.",
    )


def load(argv: Sequence[str] | None = None,
         environ: Mapping[str, str] | None = None) -> DnsSettings:
    """Flags over ``ECSSD_*`` variables over defaults; raises SettingsError or SystemExit."""
    settings = load_cli(DnsSettings, parser(), argv, os.environ if environ is None else environ,
                        env_name)
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"--port / ECSSD_PORT: {settings.port} is out of range")
    if not 0 <= settings.http_port <= 65535:
        raise SettingsError(f"--http-port / ECSSD_HTTP_PORT: {settings.http_port} is out of "
                            "range")
    if settings.refresh <= 0:
        raise SettingsError("--refresh must be > 0")
    if settings.route53_rate <= 0 or settings.route53_burst < 1:
        raise SettingsError("--route53-rate must be > 0 and --route53-burst >= 1")
    if settings.negative_ttl < 0:
        raise SettingsError("--negative-ttl must be >= 0")
    if not 512 <= settings.max_udp_size <= 65535:
        raise SettingsError("--max-udp-size must be between 512 and 65535")
    settings.zone_role()
    return settings

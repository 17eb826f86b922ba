"""The zone writer's settings, for both of its entry points.

One dataclass, two spellings: the ``ecssd-writer`` CLI reads flags and ``ECSSD_*`` variables
(as the agent does); the Lambda reads the bare names (``DOMAIN``, ``HOST_TABLE``...), as the
other Lambdas do, so a CloudFormation template configures it like them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ecssd_agent.config_fields import DEFAULT_DOMAIN, SettingsError, build_parser, from_env, load_cli
from ecssd_agent.config_fields import env_name as cli_env_name
from ecssd_agent.config_fields import setting as _opt
from ecssd_agent.core import naming


@dataclass(frozen=True)
class WriterSettings:
    domain: str = _opt(DEFAULT_DOMAIN, "the private hosted zone's name (positional DOMAIN)")
    hosted_zone_id: str = _opt("", "the hosted zone's id (wins over DOMAIN)")
    vpc_id: str = _opt("", "with DOMAIN: the zone associated with this VPC")
    host_table: str = _opt("", "the DynamoDB table of host states the agents publish to")
    change_queue: str = _opt("", "the SQS queue URL of the agents' hints (the CLI polls it; "
                                 "the Lambda is given its messages)")
    batch_window: float = _opt(1.0, "CLI: seconds to gather hints after the first one, so a "
                                    "burst over many hosts goes out in a few requests")
    max_batch: int = _opt(10000, "CLI: at most this many hints per write")
    verify_after: float = _opt(86400.0, "re-read a host's record sets from Route 53 when what "
                                        "the writer knows of them is older than this (s)")
    once: bool = _opt(False, "CLI: write what the queue holds, then exit")
    region: str = _opt("", "AWS region (default: AWS_REGION)")
    aws_max_attempts: int = _opt(10, "maximum attempts per AWS call (standard retries); "
                                     "change requests are retried by the writer itself, "
                                     "with its lease extended before each attempt")
    dry_run: bool = _opt(False, "log the changes that would be made, make none")
    log_format: str = _opt("text", "log format", choices=("text", "json"))
    log_level: str = _opt("info", "log level", choices=("debug", "info", "warning", "error"))

    def validate(self, cli: bool) -> WriterSettings:
        source = "--host-table / ECSSD_HOST_TABLE" if cli else "HOST_TABLE"
        if not self.host_table:
            raise SettingsError(f"{source}: the DynamoDB table of host states is required")
        if cli and not self.change_queue:
            raise SettingsError("--change-queue / ECSSD_CHANGE_QUEUE: the SQS queue URL is "
                                "required")
        if not self.hosted_zone_id:
            try:
                naming.zone_fqdn(self.domain)
            except naming.InvalidName as exc:
                raise SettingsError(f"DOMAIN: {exc}") from exc
        for attribute, bad, rule in (("batch_window", self.batch_window < 0, ">= 0"),
                                     ("max_batch", self.max_batch < 1, ">= 1"),
                                     ("verify_after", self.verify_after <= 0, "> 0"),
                                     ("aws_max_attempts", self.aws_max_attempts < 1, ">= 1")):
            if bad:
                source = (f"--{attribute.replace('_', '-')} / {cli_env_name(attribute)}" if cli
                          else attribute.upper())
                raise SettingsError(f"{source}: {getattr(self, attribute)!r} must be {rule}")
        return self


def parser() -> argparse.ArgumentParser:
    return build_parser(
        WriterSettings, cli_env_name, DEFAULT_DOMAIN, prog="ecssd-writer",
        description="The zone writer of the queued mode: apply the desired states the agents "
                    "publish (DynamoDB table, SQS hints) to the Route 53 zone in few, full "
                    "change requests.")


def load_cli_settings(argv: Sequence[str] | None = None,
                      environ: Mapping[str, str] | None = None) -> WriterSettings:
    env = os.environ if environ is None else environ
    return load_cli(WriterSettings, parser(), argv, env, cli_env_name).validate(cli=True)


def load_lambda_settings(environ: Mapping[str, str]) -> WriterSettings:
    """The Lambda's spelling: ``DOMAIN``, ``HOSTED_ZONE_ID``, ``HOST_TABLE``, ``VERIFY_AFTER``..."""
    return from_env(WriterSettings, environ, lambda name: name.upper()).validate(cli=False)

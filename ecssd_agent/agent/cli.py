"""``ecssd-agent``: wire settings, adapters and the agent; choose sync, remove or daemon mode.

The daemon mode (the default) lives in :mod:`ecssd_agent.agent.daemon`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent import logs
from ecssd_agent.agent import daemon
from ecssd_agent.agent.docker_source import DockerSource, DockerUnavailable
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.settings import Settings, SettingsError, load
from ecssd_agent.aws.change_queue import ChangeQueue
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.aws.imds import Imds, MetadataUnavailable
from ecssd_agent.aws.route53 import Route53Zone, ZoneError, find_zone
from ecssd_agent.core import naming
from ecssd_agent.core.model import Host, Routing
from ecssd_agent.sync.reconcile import NotConverged, Outcome
from ecssd_agent.writer.publish import Publisher

log = logging.getLogger("ecssd_agent")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class StartupError(RuntimeError):
    pass


def resolve_host(settings: Settings) -> tuple[Host, str]:
    """This host's identity and region: from the flags, else instance metadata (IMDSv2)."""
    hostname, ip = settings.hostname, settings.host_ip
    region = settings.region or os.environ.get("AWS_REGION") or os.environ.get(
        "AWS_DEFAULT_REGION", "")
    if not hostname or not ip or (not region and not (hostname and ip)):
        try:
            meta = Imds(settings.imds_endpoint or None).instance()
        except MetadataUnavailable as exc:
            raise StartupError(
                f"cannot determine this host's name and IP ({exc}); pass --hostname and "
                "--host-ip (or ECSSD_HOSTNAME and ECSSD_HOST_IP)") from exc
        hostname, ip, region = hostname or meta.hostname, ip or meta.ip, region or meta.region
    try:
        label = naming.host_label(hostname)
    except naming.InvalidName as exc:
        raise StartupError(f"--hostname: {exc}") from exc
    return Host(label=label, ip=ip), region or "us-east-1"


def build_agent(settings: Settings, clients: Clients | None = None) -> tuple[Agent, Clients]:
    host, region = resolve_host(settings)
    clients = clients or Clients(region=region, retry_mode=settings.aws_retry_mode,
                                 max_attempts=settings.aws_max_attempts)
    if settings.queued:
        try:
            zone_name = naming.zone_fqdn(settings.domain)
        except naming.InvalidName as exc:
            raise StartupError(f"DOMAIN: {exc}") from exc
        publisher = Publisher(HostStore(clients.client("dynamodb"), settings.host_table),
                              ChangeQueue(clients.client("sqs"), settings.change_queue),
                              host.label, zone_name)
        log.info("host %s (%s), zone %s, queued mode: publishing to %s for the zone writer",
                 host.label, host.ip, zone_name, settings.host_table)
        agent = Agent(None, DockerSource(settings.docker_host or None), host,
                      routing=Routing(settings.routing), ttl=settings.ttl,
                      dry_run=settings.dry_run, publisher=publisher)
        return agent, clients
    route53 = clients.client("route53")
    zone = find_zone(route53, settings.domain, settings.hosted_zone_id or None,
                     settings.vpc_id or None)
    log.info("host %s (%s), zone %s (%s), routing %s, ttl %d", host.label, host.ip, zone.name,
             zone.id, settings.routing, settings.ttl)
    # The daemon retries a throttled write itself, re-planned with everything pending (see
    # daemon.THROTTLED_RETRY_MAX); one-shot modes keep botocore's retries.
    writer = clients.client("route53", max_attempts=1) if settings.mode == "daemon" else None
    agent = Agent(Route53Zone(route53, zone, write_client=writer),
                  DockerSource(settings.docker_host or None), host,
                  routing=Routing(settings.routing), ttl=settings.ttl, dry_run=settings.dry_run)
    return agent, clients


def summarize(mode: str, outcome: Outcome, clients: Clients, queued: bool = False) -> None:
    requests = clients.stats.by_operation()
    if queued:
        log.info("%s done: published this host's desired state for the zone writer; AWS "
                 "requests %s", mode, requests, extra={"mode": mode, "aws_requests": requests})
        return
    log.info("%s done: %d change(s) in %d change request(s); AWS requests %s", mode,
             len(outcome.changes), outcome.requests, requests,
             extra={"mode": mode, "changes": len(outcome.changes),
                    "change_requests": outcome.requests, "aws_requests": requests})


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"ecssd-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(settings.log_format, settings.log_level)
    try:
        if settings.mode == "daemon":
            return daemon.serve(settings, build_agent)
        agent, clients = build_agent(settings)
        if settings.mode == "sync":
            summarize("sync", agent.sync(), clients, settings.queued)
            return EXIT_OK
        summarize("remove", agent.remove(), clients, settings.queued)
        return EXIT_OK
    except (StartupError, ZoneError, DockerUnavailable, NotConverged) as exc:
        log.error("%s", exc)
    except (ClientError, BotoCoreError) as exc:
        log.error("AWS error: %s", exc)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

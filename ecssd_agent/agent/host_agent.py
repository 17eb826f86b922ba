"""The agent: this host's containers -> the record sets it should own -> converge the zone.

Level-triggered: every reconcile re-reads the containers and the zone and plans from both,
so a missed event, a restart or a hand-made change is repaired by the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ecssd_agent.agent.docker_source import DockerSource
from ecssd_agent.aws.route53 import Route53Zone
from ecssd_agent.core.metadata import Problem, service_instances
from ecssd_agent.core.model import Container, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.naming import owned_by_host
from ecssd_agent.core.records import host_records
from ecssd_agent.sync.reconcile import Outcome, Read, converge
from ecssd_agent.writer.publish import Publisher

log = logging.getLogger(__name__)

__all__ = ["Agent", "owned_by_host"]


class Agent:
    """One host's agent. Direct mode: converges its records in the zone itself (``zone``).
    Queued mode: publishes its desired state for the zone writer (``publisher``) and makes no
    Route 53 request at all (see :mod:`ecssd_agent.writer.publish`)."""

    def __init__(
        self,
        zone: Route53Zone | None,
        docker: DockerSource,
        host: Host,
        routing: Routing = Routing.WEIGHTED,
        ttl: int = 0,
        dry_run: bool = False,
        *,
        publisher: Publisher | None = None,
    ) -> None:
        if publisher is not None:
            self.zone_name = publisher.zone
        elif zone is not None:
            self.zone_name = zone.zone.name
        else:
            raise ValueError("an agent needs a zone to write to or a publisher")
        self._zone = zone
        self.publisher = publisher
        self.docker = docker
        self.host = host
        self.routing = routing
        self.ttl = ttl
        self.dry_run = dry_run
        self.owns = owned_by_host(host.label)
        self._reported: set[str] = set()

    @property
    def zone(self) -> Route53Zone:
        if self._zone is None:
            raise RuntimeError("queued mode: this agent does not talk to Route 53")
        return self._zone

    def instances(self, containers: Iterable[Container]) -> list[ServiceInstance]:
        """Service instances of the containers; each new problem is logged once."""
        found: list[ServiceInstance] = []
        problems: list[Problem] = []
        for container in containers:
            instances, bad = service_instances(container)
            found.extend(instances)
            problems.extend(bad)
        self._report(problems)
        return found

    def desired(self, containers: Iterable[Container]) -> list[RecordSet]:
        records, problems = host_records(
            self.host, self.instances(containers), self.zone_name, self.routing, self.ttl
        )
        self._report(problems)
        return records

    def _report(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            text = str(problem)
            if text not in self._reported:
                self._reported.add(text)
                log.warning("skipped %s", text, extra={"container_id": problem.container_id[:12],
                                                        "variable": problem.variable})

    def sync(self, read: Read | None = None) -> Outcome:
        """Reconcile every record of this host with the running containers (queued mode:
        publish them; the outcome then counts no change, the writer makes them)."""
        desired = self.desired(self.docker.containers())
        if self.publisher is not None:
            if not self.dry_run:
                self.publisher.publish(desired, force=True)
            return Outcome()
        return converge(self.zone, desired, self.owns, read=read, dry_run=self.dry_run)

    def remove(self, read: Read | None = None) -> Outcome:
        """Delete every record set this host owns (and nothing else)."""
        if self.publisher is not None:
            if not self.dry_run:
                self.publisher.publish([], force=True, verify=True)
            return Outcome()
        return converge(self.zone, [], self.owns, read=read, dry_run=self.dry_run)

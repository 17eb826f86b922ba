"""The agent: this host's containers -> the record sets it should own -> converge the zone.

Level-triggered: every reconcile re-reads the containers and the zone and plans from both,
so a missed event, a restart or a hand-made change is repaired by the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ecssd_agent import naming
from ecssd_agent.aws.route53 import Route53Zone
from ecssd_agent.docker_source import DockerSource
from ecssd_agent.metadata import Problem, service_instances
from ecssd_agent.model import Container, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.plan import Owns
from ecssd_agent.reconcile import Outcome, Read, converge
from ecssd_agent.records import host_records

log = logging.getLogger(__name__)


def owned_by_host(label: str) -> Owns:
    """The ownership test of one host: the SetIdentifier parses and names this host exactly."""

    def owns(record: RecordSet) -> bool:
        owner = naming.parse_set_identifier(record.set_identifier)
        return owner is not None and owner.kind == "h" and owner.host == label

    return owns


class Agent:
    def __init__(
        self,
        zone: Route53Zone,
        docker: DockerSource,
        host: Host,
        routing: Routing = Routing.WEIGHTED,
        ttl: int = 0,
        dry_run: bool = False,
    ) -> None:
        self.zone = zone
        self.docker = docker
        self.host = host
        self.routing = routing
        self.ttl = ttl
        self.dry_run = dry_run
        self.owns = owned_by_host(host.label)
        self._reported: set[str] = set()

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
            self.host, self.instances(containers), self.zone.zone.name, self.routing, self.ttl
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
        """Reconcile every record of this host with the running containers."""
        return converge(self.zone, self.desired(self.docker.containers()), self.owns,
                        read=read, dry_run=self.dry_run)

    def remove(self, read: Read | None = None) -> Outcome:
        """Delete every record set this host owns (and nothing else)."""
        return converge(self.zone, [], self.owns, read=read, dry_run=self.dry_run)

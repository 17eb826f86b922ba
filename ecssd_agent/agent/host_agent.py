"""The agent: this host's containers -> the record sets it should own -> its sink.

Level-triggered: every reconcile re-reads the containers and delivers the host's whole desired
state, so a missed event, a restart or a hand-made change is repaired by the next one. Where
the state goes (Route 53 itself, or the zone writer) is the sink's business
(:mod:`ecssd_agent.agent.sink`): the agent never asks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ecssd_agent.agent.docker_source import DockerSource
from ecssd_agent.agent.sink import Delivery, Sink
from ecssd_agent.core.metadata import Problem, service_instances
from ecssd_agent.core.model import Container, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import owned_by_host
from ecssd_agent.core.records import host_records

log = logging.getLogger(__name__)

__all__ = ["Agent"]


class Agent:
    """One host's agent: its containers' desired records, delivered to ``sink`` (direct mode:
    :class:`~ecssd_agent.agent.sink.DirectSink`; queued mode:
    :class:`~ecssd_agent.agent.sink.QueuedSink`)."""

    def __init__(
        self,
        sink: Sink,
        docker: DockerSource,
        host: Host,
        routing: Routing = Routing.WEIGHTED,
        ttl: int = 0,
        dry_run: bool = False,
    ) -> None:
        self.sink = sink
        self.zone_name = sink.zone_name
        self.docker = docker
        self.host = host
        self.routing = routing
        self.ttl = ttl
        self.dry_run = dry_run
        self.owns = owned_by_host(host.label)
        self._reported: set[str] = set()
        self._withheld: dict[str, str] = {}  # container id -> health, while not published

    def instances(self, containers: Iterable[Container]) -> list[ServiceInstance]:
        """Service instances of the publishable containers (the health gate: no health check,
        or healthy); each new problem and each change of a container's gate is logged once."""
        found: list[ServiceInstance] = []
        problems: list[Problem] = []
        withheld: dict[str, str] = {}
        for container in containers:
            if not container.publishable:
                withheld[container.id] = container.health
                continue
            instances, bad = service_instances(container)
            found.extend(instances)
            problems.extend(bad)
        self._report(problems)
        self._gate(withheld)
        return found

    @property
    def withheld(self) -> int:
        """Running containers the health gate holds back (as of the last desired state)."""
        return len(self._withheld)

    def _gate(self, withheld: dict[str, str]) -> None:
        """Log the containers the health gate holds back, when that changes."""
        for container_id, health in withheld.items():
            if self._withheld.get(container_id) != health:
                log.info("container %s is %s: its records wait until Docker reports it "
                         "healthy", container_id[:12], health,
                         extra={"container_id": container_id[:12], "health": health})
        self._withheld = withheld

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

    def sync(self) -> Delivery:
        """Deliver every record of this host, as the running containers want them."""
        return self.sink.sync(self.desired(self.docker.containers()), self.owns,
                              dry_run=self.dry_run)

    def remove(self) -> Delivery:
        """Delete every record set this host owns (and nothing else)."""
        return self.sink.remove(self.owns, dry_run=self.dry_run)

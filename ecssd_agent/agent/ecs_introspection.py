"""The ECS container agent's introspection API: which task a Docker container belongs to,
and which container instance this host is.

Containers started by ECS carry the task ARN as a label (``com.amazonaws.ecs.task-arn``);
this API is the fallback for the rest (older agents, containers whose labels were stripped).
It only ever serves the EventBridge task events, never registration: a record's ownership
must not depend on a local HTTP service being up. ``/v1/metadata`` names this host's
cluster and container instance, for the drain watch (:mod:`ecssd_agent.agent.drain`), which
treats an agent that does not answer as "status unknown": nothing changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:51678"


class IntrospectionUnavailable(RuntimeError):
    """The ECS agent did not answer (not an ECS host, agent restarting): the ARN is unknown."""


@dataclass(frozen=True)
class InstanceIdentity:
    """This host as ECS knows it: its cluster and its container instance ARN."""

    cluster: str
    container_instance_arn: str


class EcsIntrospection:
    """``GET <url>/v1/tasks?dockerid=<id>`` -> the task ARN of a container."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 2.0,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()
        self._session.trust_env = False  # the agent is local: never via a proxy

    def task_arn(self, docker_id: str) -> str | None:
        """The task ARN, or None when the agent knows no task for this container.

        Raises :class:`IntrospectionUnavailable` when the agent cannot be asked.
        """
        found = self._get("/v1/tasks", {"dockerid": docker_id}, absent=(400, 404))
        arn = found.get("Arn") if isinstance(found, dict) else None
        return arn if isinstance(arn, str) and arn.startswith("arn:") else None

    def instance(self) -> InstanceIdentity:
        """This host's cluster and container instance ARN (``GET /v1/metadata``).

        Raises :class:`IntrospectionUnavailable` when the agent cannot be asked or has not
        registered the instance yet (it answers without an ARN until it has).
        """
        body = self._get("/v1/metadata", {})
        cluster = body.get("Cluster") if isinstance(body, dict) else None
        arn = body.get("ContainerInstanceArn") if isinstance(body, dict) else None
        if not isinstance(cluster, str) or not cluster or not isinstance(arn, str) \
                or not arn.startswith("arn:"):
            raise IntrospectionUnavailable(
                f"ECS agent at {self.url} names no cluster and container instance yet: {body!r}")
        return InstanceIdentity(cluster, arn)

    def _get(self, path: str, params: dict[str, str], absent: tuple[int, ...] = ()) -> Any:
        """The JSON body of ``path``; None for an ``absent`` status; raises when unknown."""
        try:
            response = self._session.get(f"{self.url}{path}", params=params,
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            raise IntrospectionUnavailable(f"ECS agent at {self.url}: {exc}") from exc
        if response.status_code in absent:  # the agent's answers for "no such container"
            return None
        if response.status_code != 200:
            raise IntrospectionUnavailable(
                f"ECS agent at {self.url} answered {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise IntrospectionUnavailable(f"ECS agent at {self.url}: not JSON: {exc}") from exc

    def close(self) -> None:
        self._session.close()

"""The ECS container agent's introspection API: which task a Docker container belongs to.

Containers started by ECS carry the task ARN as a label (``com.amazonaws.ecs.task-arn``);
this API is the fallback for the rest (older agents, containers whose labels were stripped).
It only ever serves the EventBridge task events, never registration: a record's ownership
must not depend on a local HTTP service being up.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:51678"


class IntrospectionUnavailable(RuntimeError):
    """The ECS agent did not answer (not an ECS host, agent restarting): the ARN is unknown."""


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
        try:
            response = self._session.get(f"{self.url}/v1/tasks", params={"dockerid": docker_id},
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            raise IntrospectionUnavailable(f"ECS agent at {self.url}: {exc}") from exc
        if response.status_code in (400, 404):  # the agent's answers for "no such container"
            return None
        if response.status_code != 200:
            raise IntrospectionUnavailable(
                f"ECS agent at {self.url} answered {response.status_code}")
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise IntrospectionUnavailable(f"ECS agent at {self.url}: not JSON: {exc}") from exc
        arn = body.get("Arn") if isinstance(body, dict) else None
        return arn if isinstance(arn, str) and arn.startswith("arn:") else None

    def close(self) -> None:
        self._session.close()

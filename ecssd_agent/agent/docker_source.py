"""Docker: the running containers of this host, as :class:`~ecssd_agent.core.model.Container` values.

An engine that cannot be reached raises :class:`DockerUnavailable`; it never looks like "no
containers", which would make the agent delete every record of the host.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import requests

from ecssd_agent.core.metadata import environment_list
from ecssd_agent.core.model import Container

log = logging.getLogger(__name__)


class DockerUnavailable(RuntimeError):
    """The engine did not answer: the state of the containers is unknown, not empty."""


def to_container(inspect: Mapping[str, Any]) -> Container:
    """``docker inspect`` output -> Container."""
    config = inspect.get("Config") or {}
    state = inspect.get("State") or {}
    host_config = inspect.get("HostConfig") or {}
    ports: dict[str, tuple[int, ...]] = {}
    for spec, bindings in ((inspect.get("NetworkSettings") or {}).get("Ports") or {}).items():
        host_ports = {int(b["HostPort"]) for b in bindings or [] if str(b.get("HostPort", "")).isdigit()}
        ports[spec] = tuple(sorted(host_ports))
    running = bool(state.get("Running")) and not state.get("Paused") and not state.get("Restarting")
    return Container(
        id=inspect["Id"],
        name=str(inspect.get("Name", "")).lstrip("/"),
        env=environment_list(config.get("Env")),
        labels=dict(config.get("Labels") or {}),
        ports=ports,
        network_mode=str(host_config.get("NetworkMode") or "bridge"),
        running=running,
    )


class DockerSource:
    """Reads containers from one engine (``unix:///var/run/docker.sock`` by default)."""

    def __init__(self, base_url: str | None = None, timeout: int = 30) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: Any = None

    @property
    def api(self) -> Any:
        """The low-level API client, created on first use."""
        if self._client is None:
            if self.base_url:
                self._client = docker.APIClient(base_url=self.base_url, timeout=self.timeout)
            else:
                self._client = docker.APIClient(timeout=self.timeout,
                                                **docker.utils.kwargs_from_env())
        return self._client

    def containers(self) -> list[Container]:
        """Every running container; one vanishing between list and inspect is skipped."""
        try:
            listed = self.api.containers(filters={"status": "running"})
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise DockerUnavailable(f"cannot list containers: {exc}") from exc
        found = []
        for summary in listed:
            container = self.inspect(summary["Id"])
            if container is not None and container.running:
                found.append(container)
        return found

    def inspect(self, container_id: str) -> Container | None:
        """The container, or None when the engine says it does not exist (any more)."""
        try:
            return to_container(self.api.inspect_container(container_id))
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise DockerUnavailable(f"cannot inspect container {container_id[:12]}: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

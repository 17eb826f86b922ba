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


def health_status(inspect: Mapping[str, Any]) -> str:
    """Docker's health status of a container; "" when it has no health check.

    ``State.Health`` is what the engine reports. A check disabled with ``--no-healthcheck``
    (``Test: ["NONE"]``) still leaves a ``State.Health`` stuck at "starting", so the config
    is asked first; a configured check the state does not show yet counts as "starting".
    """
    test = ((inspect.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    if test and test[0] == "NONE":
        return ""
    health = (inspect.get("State") or {}).get("Health")
    if isinstance(health, Mapping):
        return str(health.get("Status") or "starting")
    return "starting" if test else ""


def to_container(inspect: Mapping[str, Any], health_gate: bool = True) -> Container:
    """``docker inspect`` output -> Container (``health`` left "" without the health gate)."""
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
        health=health_status(inspect) if health_gate else "",
    )


class DockerSource:
    """Reads containers from one engine (``unix:///var/run/docker.sock`` by default).

    ``health_gate``: report each container's health status, so that one with a health
    check is published only while healthy (see ``Container.publishable``).
    """

    def __init__(self, base_url: str | None = None, timeout: int = 30,
                 health_gate: bool = True) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.health_gate = health_gate
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
            return to_container(self.api.inspect_container(container_id), self.health_gate)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise DockerUnavailable(f"cannot inspect container {container_id[:12]}: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

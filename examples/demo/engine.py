"""Which Docker engine the demo uses: one that already answers, else a private dockerd.

The private engine is the test suite's (tests/support/dockerd.py: own bridge, vfs storage,
no iptables changes, stopped and removed afterwards), so there is one way to start an
engine in this repository, not two.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from tests.support.dockerd import DockerEngine, EngineUnavailable, start_private_engine

log = logging.getLogger("examples.demo")

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


@dataclass
class Engine:
    engine: DockerEngine
    private: bool

    @property
    def url(self) -> str:
        return self.engine.base_url

    def close(self) -> None:
        if self.private:
            self.engine.close()


def candidates(explicit: str | None, environ: dict[str, str] | None = None) -> list[str]:
    """Engines to try, in order: the flag, DOCKER_HOST, ECSSD_DOCKER_HOST, the default socket."""
    env = dict(os.environ) if environ is None else environ
    urls = [explicit or "", env.get("DOCKER_HOST", ""), env.get("ECSSD_DOCKER_HOST", ""),
            DEFAULT_SOCKET]
    return list(dict.fromkeys(u for u in urls if u))


def connect(explicit: str | None = None, environ: dict[str, str] | None = None) -> Engine:
    """The first engine that answers; a private one when none does (needs root)."""
    for url in candidates(explicit, environ):
        if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
            continue
        engine = DockerEngine(url)
        if engine.answers():
            log.info("using the Docker engine at %s", url)
            return Engine(engine, private=False)
        if url == explicit:
            raise EngineUnavailable(f"the Docker engine at {url} does not answer")
    log.info("no Docker engine answers: starting a private dockerd")
    engine = start_private_engine()
    log.info("private Docker engine at %s", engine.base_url)
    return Engine(engine, private=True)

"""The Docker engine stops and starts again under a running agent: it reconnects and converges.

Needs a private engine (the ``docker_engine`` fixture's own dockerd): an engine shared
through ECSSD_TEST_DOCKER_HOST cannot be stopped, and the test skips. Run it alone:
``env -u ECSSD_TEST_DOCKER_HOST python3 -m pytest tests/integration/test_daemon_engine.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.daemon_world import (
    HOST,
    AgentProcess,
    Zone,
    agents,
    service_env,
    start_agent,
    zone,
)
from tests.support.images import Containers, host_port
from tests.support.poll import wait_for

__all__ = ["agents", "zone"]  # fixtures


def test_engine_restart_reconnects_and_converges(aws: Any, zone: Zone, docker_engine: Any,
                                                 containers: Containers,
                                                 agents: list[AgentProcess]) -> None:
    if not docker_engine.restartable:
        pytest.skip("the engine is shared (ECSSD_TEST_DOCKER_HOST): it cannot be stopped")
    agent = start_agent(agents, aws, docker_engine)
    # One container the engine brings back after its restart, one it does not.
    back = containers.run(env=service_env("back"), ports=["127.0.0.1::8081"],
                          extra_args=["--restart", "always"])
    gone = containers.run(env=service_env("gone"), ports=["127.0.0.1::8081"])
    wait_for(lambda: {back[:12], gone[:12]} <= set(zone.srv(HOST)), timeout=15,
             what="both records")

    docker_engine.stop()
    wait_for(lambda: agent.readyz()[0] == 503, timeout=15, what="/readyz to say 503")
    _code, reason = agent.readyz()
    assert "docker" in reason, reason
    assert agent.alive()
    # alive all the same: an engine restart is far below the bound that fails /healthz
    code, body = agent.healthz()
    assert code == 200 and "not ready: docker" in body, body

    docker_engine.start()
    wait_for(lambda: docker_engine.cli("inspect", "-f", "{{.State.Running}}", back,
                                       check=False).stdout.strip() == "true",
             timeout=30, what="the restart-always container to run again")
    port = host_port(docker_engine, back)
    wait_for(agent.ready, timeout=45, what="/readyz to say 200 again")

    def converged() -> bool:
        srv = zone.srv(HOST)
        return gone[:12] not in srv and srv.get(back[:12], "").split()[2:3] == [str(port)]

    wait_for(converged, timeout=30, what="back's record at its new port and gone's removed")
    assert len([i for i in zone.owned(HOST) if back[:12] in i]) == 1  # no duplicate
    assert agent.alive()
    assert agent.metrics()[("ecssd_docker_connected", ())] == 1

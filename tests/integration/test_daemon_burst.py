"""A burst of 50 containers started together: all registered in a handful of change requests.

The count is the agent's own (``ecssd_aws_requests_total`` on its /metrics: every HTTP
request botocore sent), so it is the number of requests Route 53 would have seen.
"""

from __future__ import annotations

import time
from typing import Any

from tests.integration.daemon_world import (
    HOST,
    AgentProcess,
    Zone,
    agents,
    create_containers,
    remove_containers,
    remove_labelled,
    start_agent,
    start_containers,
    zone,
)
from tests.support.poll import wait_for

__all__ = ["agents", "zone"]  # fixtures


def test_burst_of_50_containers_takes_a_handful_of_change_requests(
        aws: Any, zone: Zone, docker_engine: Any, busybox_image: str,
        agents: list[AgentProcess]) -> None:
    agent = start_agent(agents, aws, docker_engine)
    api = docker_engine.client().api
    ids = create_containers(api, busybox_image, 50, label="daemon-burst")
    try:
        before = agent.change_requests()
        started = time.monotonic()
        start_containers(api, ids)
        mine = {c[:12] for c in ids}  # (the engine may be shared: count this test's only)
        wait_for(lambda: set(zone.srv(HOST)) & mine == mine, timeout=90, what="50 SRV records")
        elapsed = time.monotonic() - started
        burst = agent.change_requests() - before
        print(f"\nburst of 50 starts: {burst} change request(s), all registered after "
              f"{elapsed:.1f}s")
        assert burst <= 6, f"{burst} change requests for a burst of 50"
        before = agent.change_requests()
        started = time.monotonic()
        remove_containers(api, ids, workers=16)
        wait_for(lambda: not set(zone.srv(HOST)) & mine, timeout=60, what="50 records to go")
        elapsed = time.monotonic() - started
        removals = agent.change_requests() - before
        print(f"burst of 50 removals: {removals} change request(s) in {elapsed:.1f}s")
        # removals are not held back for a burst: at most about one request per second
        assert removals <= min(elapsed + 2, 25)
    finally:
        remove_labelled(api, "daemon-burst")

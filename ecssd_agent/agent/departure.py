"""Is this host going away? The question ``--deregister-on-exit`` asks when the agent stops.

An agent stops for two kinds of reasons. The host stays (the agent's image is updated, it
crashed, was restarted, or got SIGTERM on an ACTIVE instance): the next agent on this host
takes over the same records, so deleting them would only make every service on the host
unreachable until it has re-created them. Or the host leaves: then its records must go now,
not at the next health sweep.

A host is leaving when one of these says so, asked in this order:

1. ECS: the container instance is DRAINING, DEREGISTERING or INACTIVE (the drain watch's last
   answer; else one fresh DescribeContainerInstances without retries);
2. instance metadata (IMDSv2, local): the Auto Scaling target lifecycle state
   (``autoscaling/target-lifecycle-state``) is ``Terminated`` or a warm pool's
   (``Warmed:*``: stopped, hibernated or terminated), or a spot interruption notice
   (``spot/instance-action``) is present.

Nothing saying so, or nothing answering (no ECS agent, no instance metadata: a host outside
EC2), means the host stays: its records are kept. A host that disappears without any of these
(a crash, an instance terminated outside its Auto Scaling group) loses its records to the
health sweep's host-gone cleanup; a host outside ECS removes its own with
``ecssd-agent --remove`` in its shutdown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ecssd_agent.agent.drain import LEAVING, DrainWatch
from ecssd_agent.aws.imds import Imds, MetadataUnavailable

log = logging.getLogger(__name__)

TARGET_LIFECYCLE_STATE = "meta-data/autoscaling/target-lifecycle-state"
SPOT_INSTANCE_ACTION = "meta-data/spot/instance-action"


@dataclass(frozen=True)
class Departure:
    """The verdict: ``leaving`` and what said so (or what was seen, when it stays)."""

    leaving: bool
    reason: str


def leaving_lifecycle_state(state: str) -> bool:
    """Auto Scaling target lifecycle states of an instance leaving service: ``Terminated`` and
    the warm pool's (``Warmed:Stopped``, ``Warmed:Hibernated``, ...). ``InService``,
    ``Standby`` and ``Detached`` keep running."""
    return state == "Terminated" or state.startswith("Warmed:")


class DepartureCheck:
    """Asks ECS and instance metadata whether this host is leaving (see the module doc)."""

    def __init__(self, drain: DrainWatch | None, imds: Imds | None,
                 ecs_once: Callable[[], Any] | None = None) -> None:
        self.drain = drain
        self.imds = imds
        self.ecs_once = ecs_once  # an ECS client factory without retries, for the exit read

    def check(self) -> Departure:
        seen: list[str] = []
        for source in (self._ecs, self._metadata):
            departure = source(seen)
            if departure is not None:
                return departure
        return Departure(False, "; ".join(seen) or "nothing says this host is leaving")

    def _ecs(self, seen: list[str]) -> Departure | None:
        if self.drain is None:
            return None
        status = self.drain.last_status
        if status not in LEAVING:
            status = self.drain.read_status(self.ecs_once) or ""
        if status in LEAVING:
            return Departure(True, f"its ECS container instance is {status}")
        seen.append(f"container instance {status}" if status
                    else "container instance status unknown")
        return None

    def _metadata(self, seen: list[str]) -> Departure | None:
        if self.imds is None:
            return None
        try:
            notice = self.imds.find(SPOT_INSTANCE_ACTION)
            state = self.imds.find(TARGET_LIFECYCLE_STATE)
        except MetadataUnavailable as exc:
            seen.append(f"instance metadata unavailable ({exc})")
            return None
        if notice is not None:
            return Departure(True, f"a spot interruption notice: {_describe_notice(notice)}")
        if state is not None and leaving_lifecycle_state(state):
            return Departure(True, f"its Auto Scaling target lifecycle state is {state}")
        seen.append(f"Auto Scaling target lifecycle state {state}" if state is not None
                    else "not in an Auto Scaling group")
        seen.append("no spot interruption notice")
        return None


def _describe_notice(text: str) -> str:
    """``{"action": "terminate", "time": "..."}`` -> "terminate at ..." (else the text)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and body.get("action"):
        return f"{body['action']} at {body.get('time', '?')}"
    return text

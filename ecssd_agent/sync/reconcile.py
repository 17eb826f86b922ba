"""Converge: read the zone, plan against what we own, apply; on rejection, read and plan again.

Every writer of the system (agent, task-events Lambda, health sweep) goes through here, so
invariant 2 of the architecture holds everywhere: each write comes from a plan computed on a
fresh read, and a batch Route 53 rejects is never blindly sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ecssd_agent.aws.route53 import BatchRejected, Route53Zone
from ecssd_agent.core.model import Change, RecordSet
from ecssd_agent.core.plan import Owns, plan

log = logging.getLogger(__name__)

Read = Callable[[], Iterable[RecordSet]]


class NotConverged(RuntimeError):
    """Route 53 kept rejecting our batches: someone else keeps changing the same records."""


@dataclass
class Outcome:
    changes: list[Change] = field(default_factory=list)  # what was applied (or would be)
    requests: int = 0  # ChangeResourceRecordSets requests made
    attempts: int = 0  # read-plan-apply rounds (more than 1 after a rejected batch)


def converge(
    zone: Route53Zone,
    desired: Sequence[RecordSet],
    owns: Owns,
    *,
    read: Read | None = None,
    attempts: int = 3,
    dry_run: bool = False,
) -> Outcome:
    """Make the owned part of the zone equal ``desired``; raises :class:`NotConverged`."""
    outcome = Outcome()
    reader = read or zone.records
    last_error: BatchRejected | None = None
    for attempt in range(1, attempts + 1):
        outcome.attempts = attempt
        changes = plan(reader(), desired, owns)
        try:
            outcome.requests += zone.apply(changes, dry_run=dry_run)
        except BatchRejected as exc:
            last_error = exc
            log.warning("%s; reading the zone again and re-planning (attempt %d of %d)",
                        exc, attempt, attempts)
            continue
        outcome.changes = changes
        return outcome
    raise NotConverged(str(last_error))

"""Converge: read the zone, plan against what we own, apply; on rejection, read and plan again.

The agent's direct mode and the task-events Lambda write through here, so each of their
writes comes from a plan on a fresh enough read, and a batch Route 53 rejects is never sent
again as it was: the zone is read and the plan made again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ecssd_agent.aws.route53 import BatchRejected, Route53Zone
from ecssd_agent.core.model import Change, RecordSet
from ecssd_agent.core.ownership import Owns
from ecssd_agent.core.plan import plan

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
    delete: bool = True,
) -> Outcome:
    """Make the owned part of the zone equal ``desired`` (with ``delete=False``: add and
    correct ``desired``, delete nothing else); raises :class:`NotConverged`."""
    outcome = Outcome()
    reader = read or zone.records
    last_error: BatchRejected | None = None
    for attempt in range(1, attempts + 1):
        outcome.attempts = attempt
        changes = plan(reader(), desired, owns, delete=delete)
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


def first_then(first: Sequence[RecordSet], reread: Read) -> Read:
    """A reader that returns ``first`` once (the listing the caller's decisions used), then
    reads the zone afresh (after a rejected batch)."""
    pending = [first]

    def read() -> Iterable[RecordSet]:
        return pending.pop() if pending else reread()

    return read

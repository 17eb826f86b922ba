"""The sweep's word to the zone writer of the queued mode: "I deleted records of these hosts".

Why: in queued mode one zone writer applies what the agents publish, planning each host
against what it knows it applied, and reads the zone for a host only when that knowledge is
missing or a day old. When the sweep deletes a record of a host that is still alive (an
unhealthy instance with STOP_UNHEALTHY=false, a StopTask that failed, a container without a
task, an instance that recovered), the host's agent keeps publishing the same state and the
writer, still believing the record is there, sees nothing to do: the record would stay
missing for up to a day. So after its deletions the sweep sends, per host, a verify hint
naming the names it deleted under (:func:`ecssd_agent.aws.change_queue.verify_hints`); the
writer reads them and the agent's next publication re-creates what it still wants.

Only host-owned record sets (``ecssd:h:...``) are the writer's; a task's records (``t``) are
the task-events Lambda's, which reads the zone every time. Hints are sent for every deletion
the sweep sent (even when Route 53 answered with an error: part of it may have landed); a
needless hint costs the writer one name-scoped read, a missing one a day of a missing record.
A failure to send is reported in the summary's errors and never stops the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.aws.change_queue import ChangeQueue, Hint, QueueError, verify_hints
from ecssd_agent.core import ownership
from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Kind

log = logging.getLogger(__name__)


def hints_for(zone: str, deleted: Iterable[RecordSet]) -> list[Hint]:
    """One verify hint per host (more for a host with many names) for ``deleted``."""
    names: dict[str, set[str]] = {}
    for record in deleted:
        owner = ownership.parse_set_identifier(record.set_identifier)
        if owner is not None and owner.kind is Kind.HOST:
            names.setdefault(owner.host, set()).add(record.name)
    return verify_hints(zone, names)


def send(sqs: Any, queue_url: str, zone: str, deleted: Iterable[RecordSet],
         summary: dict[str, Any]) -> None:
    """Hint the zone writer about ``deleted`` (SendMessageBatch, 10 hints per request).

    Fills ``summary["writer_hints"]`` (hosts hinted) and, when SQS fails, appends to
    ``summary["errors"]``; raises nothing an AWS call can raise.
    """
    hints = hints_for(zone, deleted)
    hosts = len({h.host for h in hints})
    summary["writer_hints"] = 0
    if not hints:
        return
    try:
        ChangeQueue(sqs, queue_url).notify_many(hints)
    except (ClientError, BotoCoreError, QueueError) as exc:
        log.error("could not ask the zone writer to read the records of %d host(s) again "
                  "(they stay missing until its next full verification): %s", hosts, exc)
        summary["errors"].append(f"verify hints to the zone writer ({hosts} host(s)) not "
                                 f"sent: {exc}")
        return
    log.info("asked the zone writer to read the records of %d host(s) again", hosts)
    summary["writer_hints"] = hosts

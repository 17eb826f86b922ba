"""The sweep's word to the queued mode's zone writer: "I deleted records of these hosts".

The writer plans each host against what it knows it applied, so a record the sweep deleted of
a host that lives on (an unhealthy instance not stopped, a StopTask that failed) would stay
missing until its next full verification. After its deletions the sweep therefore sends, per
host, a verify hint naming the names it deleted under; the writer reads them, and the agent's
next publication re-creates what it still wants. Only host records (``ecssd:h:...``) are the
writer's. A failure to send is reported in the summary and never stops the sweep.
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

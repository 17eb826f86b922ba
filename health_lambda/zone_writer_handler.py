"""Lambda entry point of the zone writer: ``health_lambda.zone_writer_handler.lambda_handler``.

Fed by an SQS event source mapping (batch size up to 10,000, a batching window of a few
seconds, ``ReportBatchItemFailures``): the mapping gathers the hints of many hosts into one
invocation, so one write carries a whole burst. On an AWS error every hint of the batch is
reported failed and SQS delivers it again; a message that is not a hint is logged and dropped
(delivering it again cannot help). The health sweep's verify hints come on the same queue
(see :mod:`ecssd_agent.writer.zone_writer`). The writer, its settings and clients are built on
the first invocation (:mod:`health_lambda.runtime`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.aws.change_queue import ChangeQueue, QueueError
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import StoreError
from ecssd_agent.writer.cli import build_writer
from ecssd_agent.writer.settings import load_lambda_settings
from ecssd_agent.writer.zone_writer import WriterInterrupted, ZoneWriter, read_hints
from health_lambda import runtime as lambda_runtime

log = logging.getLogger("health_lambda.zone_writer")
summary_log = logging.getLogger("health_lambda.zone_writer.summary")

#: Seconds of the invocation kept after the last change request starts: the request (with
#: botocore's retries), saving the applied states and handing back the unfinished hosts.
#: A short timeout keeps a quarter of itself instead, so that the writer still gets to work.
FINISH_MARGIN = 60.0
FINISH_SHARE = 0.25

@dataclass(frozen=True)
class WriterRuntime:
    writer: ZoneWriter
    queue: ChangeQueue | None  # CHANGE_QUEUE: where unfinished hosts are handed back


def build() -> WriterRuntime:
    """The writer, its clients and its queue, from the function's settings; a configuration
    error raises (the Lambda fails loudly: SQS delivers the hints again once it is fixed)."""
    settings = load_lambda_settings(os.environ)
    lambda_runtime.setup_logging(settings.log_level)
    clients = Clients(region=settings.region or lambda_runtime.region(),
                      max_attempts=settings.aws_max_attempts,
                      zone_role=settings.zone_role(cli=False))
    queue = (ChangeQueue(clients.client("sqs"), settings.change_queue)
             if settings.change_queue else None)
    return WriterRuntime(build_writer(settings, clients), queue)


runtime: lambda_runtime.Lazy[WriterRuntime] = lambda_runtime.Lazy(build)


def _deadline(context: Any) -> float | None:
    seconds = lambda_runtime.remaining_seconds(context)
    if seconds is None:
        return None
    return time.time() + seconds - min(FINISH_MARGIN, seconds * FINISH_SHARE)


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    records = event.get("Records", []) if isinstance(event, dict) else []
    bodies = {str(r.get("messageId", i)): str(r.get("body", "")) for i, r in enumerate(records)
              if isinstance(r, dict)}
    rt = runtime.get()  # a configuration error raises: the Lambda fails loudly
    writer, queue = rt.writer, rt.queue
    zone = writer.zone.zone.name
    hints = read_hints(bodies, zone)
    try:
        outcome = writer.write(hints.hosts, deadline=_deadline(context), verify=hints.verify)
    except WriterInterrupted as exc:
        # Hand the unfinished hosts back now (with CHANGE_QUEUE set), not after the queue's
        # visibility timeout; without a queue, their messages are reported failed.
        if queue is not None:
            try:
                queue.notify_many(exc.hand_back(zone))
            except (ClientError, BotoCoreError, QueueError) as sqs_exc:
                log.error("%s; handing hosts back failed too: %s", exc, sqs_exc)
            else:
                log.warning("%s: %d host(s) handed back to the queue", exc,
                            len(exc.unfinished | set(exc.verify)))
                return {"batchItemFailures": []}
        return {"batchItemFailures": [{"itemIdentifier": mid}
                                      for mid in hints.messages_of(exc.unfinished
                                                                   | set(exc.verify))]}
    except (ClientError, BotoCoreError, StoreError) as exc:
        log.error("write failed; %d hint(s) will be delivered again: %s",
                  len(bodies) - len(hints.bad), exc)
        return {"batchItemFailures": [{"itemIdentifier": mid} for mid in bodies
                                      if mid not in hints.bad]}
    summary = outcome.summary()
    summary["hints"] = len(bodies)
    summary["bad_hints"] = len(hints.bad)
    summary_log.info(json.dumps(summary, sort_keys=True))
    return {"batchItemFailures": []}

"""Lambda entry point of the zone writer: ``health_lambda.zone_writer_handler.lambda_handler``.

Fed by an SQS event source mapping (batch size up to 10,000, a batching window of a few
seconds, ``ReportBatchItemFailures``): the mapping gathers the hints of many hosts into one
invocation, so one write carries a whole burst. On an AWS error every hint of the batch is
reported failed and SQS delivers it again; a message that is not a hint is logged and dropped
(delivering it again cannot help). Settings and clients are built on first use, never at
import time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent import logs
from ecssd_agent.aws.change_queue import ChangeQueue, Hint, QueueError
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import StoreError
from ecssd_agent.writer.cli import build_writer
from ecssd_agent.writer.settings import load_lambda_settings
from ecssd_agent.writer.zone_writer import WriterInterrupted, ZoneWriter, read_hints

log = logging.getLogger("health_lambda.zone_writer")
summary_log = logging.getLogger("health_lambda.zone_writer.summary")

#: Seconds of the invocation kept after the last change request starts: the request (with
#: botocore's retries), saving the applied states and handing back the unfinished hosts.
#: A short timeout keeps a quarter of itself instead, so that the writer still gets to work.
FINISH_MARGIN = 60.0
FINISH_SHARE = 0.25

_lock = threading.Lock()
_writer: tuple[ZoneWriter, ChangeQueue | None] | None = None


def _build() -> tuple[ZoneWriter, ChangeQueue | None]:
    global _writer
    with _lock:
        if _writer is None:
            settings = load_lambda_settings(os.environ)
            if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
                logs.setup("json", settings.log_level)
            clients = Clients(region=settings.region or os.environ.get("AWS_REGION"),
                              max_attempts=settings.aws_max_attempts)
            queue = (ChangeQueue(clients.client("sqs"), settings.change_queue)
                     if settings.change_queue else None)
            _writer = (build_writer(settings, clients), queue)
        return _writer


def reset() -> None:
    """Forget the cached writer (tests, or a changed configuration)."""
    global _writer
    with _lock:
        _writer = None


def _deadline(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        millis = float(remaining())
    except (TypeError, ValueError):
        return None
    seconds = max(0.0, millis / 1000.0)
    return time.time() + seconds - min(FINISH_MARGIN, seconds * FINISH_SHARE)


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    records = event.get("Records", []) if isinstance(event, dict) else []
    bodies = {str(r.get("messageId", i)): str(r.get("body", "")) for i, r in enumerate(records)
              if isinstance(r, dict)}
    writer, queue = _build()  # a configuration error raises: the Lambda fails loudly
    zone = writer.zone.zone.name
    hints = read_hints(bodies, zone)
    try:
        outcome = writer.write(hints.hosts, deadline=_deadline(context))
    except WriterInterrupted as exc:
        # Hand the unfinished hosts back now (with CHANGE_QUEUE set), not after the queue's
        # visibility timeout; without a queue, their messages are reported failed.
        if queue is not None:
            try:
                queue.notify_many(Hint(h, zone, 0) for h in sorted(exc.unfinished))
            except (ClientError, BotoCoreError, QueueError) as sqs_exc:
                log.error("%s; handing hosts back failed too: %s", exc, sqs_exc)
            else:
                log.warning("%s: %d host(s) handed back to the queue", exc, len(exc.unfinished))
                return {"batchItemFailures": []}
        return {"batchItemFailures": [{"itemIdentifier": mid}
                                      for mid in hints.messages_of(exc.unfinished)]}
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

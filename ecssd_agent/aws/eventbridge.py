"""EventBridge "Task Started" / "Task Stopped" events (``--cw-send-events``), sent in the background.

The events are a side channel: the daemon hands them over without waiting
(:meth:`TaskEventSender.notify` never blocks), a thread resolves task ARNs and sends up to 10
entries per PutEvents (the API's limit), and every failure is logged and counted, never
allowed to delay or break registration. The entries have the shape the original ECS service
discovery agent's rules match: source ``awslabs.ecs.container``, detail-type
``Task Started`` / ``Task Stopped``, detail ``{"dockerId": ..., "TaskArn": ...}``, resources
``[<hostname>]``.
"""


from __future__ import annotations

import json
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.core.metadata import ECS_TASK_ARN

log = logging.getLogger(__name__)

SOURCE = "awslabs.ecs.container"
STARTED = "Task Started"
STOPPED = "Task Stopped"
MAX_ENTRIES_PER_CALL = 10  # PutEvents' limit
_ARN_CACHE_SIZE = 4096

ResolveArn = Callable[[str], "str | None"]


@dataclass(frozen=True)
class TaskEvent:
    detail_type: str  # STARTED | STOPPED
    docker_id: str
    task_arn: str
    hostname: str
    time: datetime


def to_entry(event: TaskEvent) -> dict[str, Any]:
    """TaskEvent -> a PutEvents request entry."""
    return {
        "Source": SOURCE,
        "DetailType": event.detail_type,
        "Detail": json.dumps({"dockerId": event.docker_id, "TaskArn": event.task_arn}),
        "Resources": [event.hostname],
        "Time": event.time,
    }


def put_events(client: Any, events: Sequence[TaskEvent]) -> tuple[int, list[str]]:
    """PutEvents in calls of at most 10 entries; returns (accepted, per-entry errors).

    Raises ClientError/BotoCoreError when a call fails as a whole (after botocore's retries).
    """
    accepted = 0
    errors: list[str] = []
    for start in range(0, len(events), MAX_ENTRIES_PER_CALL):
        chunk = events[start:start + MAX_ENTRIES_PER_CALL]
        response = client.put_events(Entries=[to_entry(e) for e in chunk])
        for event, result in zip(chunk, response.get("Entries", []), strict=False):
            if result.get("ErrorCode"):
                errors.append(f"{event.detail_type} {event.docker_id[:12]}: "
                              f"{result['ErrorCode']} {result.get('ErrorMessage', '')}".strip())
            else:
                accepted += 1
    return accepted, errors


@dataclass(frozen=True)
class _Pending:
    detail_type: str
    docker_id: str
    labels: Mapping[str, str]
    time: datetime


class TaskEventSender:
    """A background sender of task events; feed it with :meth:`notify`.

    ``client`` is a callable returning the boto3 events client (created on first use, in the
    sender's thread). ``resolve_arn`` maps a container id to its task ARN when the container
    has no ECS label (the ECS agent's introspection API); it may raise, which is logged.
    ``on_result(outcome, n)`` counts entries: outcome is "sent", "failed" or "dropped".
    """

    def __init__(
        self,
        client: Callable[[], Any],
        hostname: str,
        resolve_arn: ResolveArn | None = None,
        *,
        on_result: Callable[[str, int], None] | None = None,
        max_queue: int = 10000,
        linger: float = 0.2,
    ) -> None:
        self._client = client
        self.hostname = hostname
        self._resolve_arn = resolve_arn
        self._on_result = on_result or (lambda outcome, n: None)
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queue)
        self._linger = linger
        self._arns: OrderedDict[str, str] = OrderedDict()
        self._thread: threading.Thread | None = None

    # --- the daemon's side -------------------------------------------------------------

    def notify(self, action: str, docker_id: str, labels: Mapping[str, str],
               time_ns: int = 0) -> None:
        """A container event; queued if it is a start or a die. Never blocks."""
        detail_type = {"start": STARTED, "die": STOPPED}.get(action)
        if detail_type is None:
            return
        when = (datetime.fromtimestamp(time_ns / 1e9, timezone.utc) if time_ns
                else datetime.now(timezone.utc))
        try:
            self._queue.put_nowait(_Pending(detail_type, docker_id, dict(labels), when))
        except queue.Full:
            self._on_result("dropped", 1)
            log.error("task event queue full: dropped %s of %s", detail_type, docker_id[:12])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Send what is queued (within ``timeout``), then end the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    # --- the sender thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, done = self._gather(first)
            events = [e for e in (self._resolve(p) for p in batch) if e is not None]
            if events:
                self._send(events)
            if done:
                return

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """Up to 10 queued events, waiting ``linger`` seconds for more to fill the call."""
        batch = [first]
        while len(batch) < MAX_ENTRIES_PER_CALL:
            try:
                item = self._queue.get(timeout=self._linger)
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _resolve(self, pending: _Pending) -> TaskEvent | None:
        arn = pending.labels.get(ECS_TASK_ARN) or self._arns.get(pending.docker_id)
        if not arn and self._resolve_arn is not None:
            arn = self._resolve_arn(pending.docker_id)
        if not arn:
            log.debug("container %s belongs to no ECS task: no %s event",
                      pending.docker_id[:12], pending.detail_type)
            return None
        self._remember(pending.docker_id, arn)
        return TaskEvent(pending.detail_type, pending.docker_id, arn, self.hostname, pending.time)

    def _remember(self, docker_id: str, arn: str) -> None:
        """A die after the ECS agent forgot the task still gets the ARN its start had."""
        self._arns[docker_id] = arn
        self._arns.move_to_end(docker_id)
        while len(self._arns) > _ARN_CACHE_SIZE:
            self._arns.popitem(last=False)

    def _send(self, events: list[TaskEvent]) -> None:
        try:
            accepted, errors = put_events(self._client(), events)
        except (ClientError, BotoCoreError) as exc:
            self._on_result("failed", len(events))
            log.error("PutEvents failed, %d task event(s) lost: %s", len(events), exc)
            return
        self._on_result("sent", accepted)
        if errors:
            self._on_result("failed", len(errors))
            for error in errors:
                log.error("PutEvents rejected %s", error)
        log.info("sent %d task event(s) to EventBridge", accepted,
                 extra={"task_events": accepted})

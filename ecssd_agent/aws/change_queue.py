"""SQS: the hints of the queued mode, "host X published a new desired state".

A hint carries no records (those are in :mod:`ecssd_agent.aws.host_store`), so SQS's
at-least-once, unordered delivery is harmless: the writer dedupes hints by host and always
reads the newest desired state. A lost hint (the agent died between its PutItem and its
SendMessage) is repaired by the agent's next resync, which publishes and hints again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: SQS's limits: ReceiveMessage and DeleteMessageBatch take at most 10 messages.
SQS_BATCH = 10


class QueueError(RuntimeError):
    """SQS answered but did not take every message."""


class BadHint(ValueError):
    """A message that is not an ecssd hint; the message says what was wrong with it."""


@dataclass(frozen=True)
class Hint:
    host: str
    zone: str
    seq: int


@dataclass(frozen=True)
class Message:
    id: str
    receipt: str
    body: str


def hint_body(hint: Hint) -> str:
    return json.dumps({"host": hint.host, "zone": hint.zone, "seq": hint.seq},
                      separators=(",", ":"), sort_keys=True)


def parse_hint(body: str) -> Hint:
    """The hint in a message body; raises :class:`BadHint` naming what is wrong."""
    if not isinstance(body, str):
        raise BadHint(f"not a text body: {type(body).__name__}")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadHint(f"not JSON: {body[:80]!r}") from exc
    if not isinstance(data, Mapping):
        raise BadHint(f"not a JSON object: {body[:80]!r}")
    host, zone, seq = data.get("host"), data.get("zone"), data.get("seq")
    if not isinstance(host, str) or not host:
        raise BadHint(f"no host in {body[:80]!r}")
    if not isinstance(zone, str) or not zone:
        raise BadHint(f"no zone in {body[:80]!r}")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise BadHint(f"no integer seq in {body[:80]!r}")
    return Hint(host, zone, seq)


class ChangeQueue:
    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url

    def notify(self, hint: Hint) -> None:
        self.client.send_message(QueueUrl=self.url, MessageBody=hint_body(hint))

    def notify_many(self, hints: Iterable[Hint]) -> None:
        """Send hints in batches of 10 (a writer handing back hosts it did not finish)."""
        batch = list(hints)
        for start in range(0, len(batch), SQS_BATCH):
            part = batch[start:start + SQS_BATCH]
            answer = self.client.send_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "MessageBody": hint_body(h)} for i, h in enumerate(part)])
            failed = answer.get("Failed") or []
            if failed:
                raise QueueError(f"SQS refused {len(failed)} hint(s): "
                                 f"{failed[0].get('Message', failed[0].get('Code', '?'))}")

    def receive(self, wait: float, limit: int = SQS_BATCH) -> list[Message]:
        """Up to ``limit`` (<= 10) messages, waiting up to ``wait`` s (long poll) for the first."""
        answer = self.client.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=max(1, min(limit, SQS_BATCH)),
            WaitTimeSeconds=max(0, min(int(wait), 20)))
        return [Message(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""))
                for m in answer.get("Messages", [])]

    def delete(self, messages: Iterable[Message]) -> None:
        """Acknowledge messages (done with); failures are left to be redelivered."""
        batch = list(messages)
        for start in range(0, len(batch), SQS_BATCH):
            part = batch[start:start + SQS_BATCH]
            self.client.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(part)])

"""SQS: the hints of the queued mode, "host X published a new desired state".

A hint carries no records (those are in :mod:`ecssd_agent.aws.host_store`), so SQS's
at-least-once, unordered delivery is harmless: the writer dedupes hints by host and always
reads the newest desired state. A lost hint (the agent died between its PutItem and its
SendMessage) is repaired by the agent's next resync, which publishes and hints again.

A *verify* hint (``verify``: names) comes from the health sweep, not from an agent: "record
sets of this host under these names were deleted behind the writer's back". The writer plans
from what it knows it applied and would otherwise not read the zone for a day; such a hint
makes it read those names (and only those) for that host. It carries names, not record
sets: the writer trusts a read, never a message, about what the zone holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: SQS's limits: ReceiveMessage and DeleteMessageBatch take at most 10 messages.
SQS_BATCH = 10
#: Names per verify hint: 10 hints of 50 names of up to 255 bytes stay far below the 256 KiB
#: a SendMessageBatch request may carry; a host with more names gets several hints.
VERIFY_NAMES = 50


class QueueError(RuntimeError):
    """SQS answered but did not take every message."""


class BadHint(ValueError):
    """A message that is not an ecssd hint; the message says what was wrong with it."""


@dataclass(frozen=True)
class Hint:
    host: str
    zone: str
    seq: int
    #: Names to read again for this host before its next plan (a verify hint); empty for
    #: an agent's "I published" hint.
    verify: tuple[str, ...] = ()


@dataclass(frozen=True)
class Message:
    id: str
    receipt: str
    body: str


def hint_body(hint: Hint) -> str:
    data: dict[str, object] = {"host": hint.host, "zone": hint.zone, "seq": hint.seq}
    if hint.verify:  # an agent's hint stays exactly what it always was
        data["verify"] = sorted(hint.verify)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def verify_hints(zone: str, names_by_host: Mapping[str, Iterable[str]]) -> list[Hint]:
    """Verify hints for each host's names, at most :data:`VERIFY_NAMES` names per hint."""
    hints: list[Hint] = []
    for host in sorted(names_by_host):
        names = sorted(set(names_by_host[host]))
        for start in range(0, len(names), VERIFY_NAMES):
            hints.append(Hint(host, zone, 0, tuple(names[start:start + VERIFY_NAMES])))
    return hints


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
    verify = data.get("verify", [])
    if not isinstance(verify, list) or not all(isinstance(n, str) and n for n in verify):
        raise BadHint(f"verify is not a list of names in {body[:80]!r}")
    return Hint(host, zone, seq, tuple(verify))


class ChangeQueue:
    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url

    def notify(self, hint: Hint) -> None:
        self.client.send_message(QueueUrl=self.url, MessageBody=hint_body(hint))

    def notify_many(self, hints: Iterable[Hint]) -> None:
        """Send hints in batches of 10 (a writer handing back hosts it did not finish, the
        sweep asking for a read of what it deleted); stops at the first batch SQS refuses."""
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

"""The queued mode's AWS resources as the quickstart stack creates them, for tests and
benchmarks: the host-state table (partition ``host``, sort ``kind``) and the hint queue."""

from __future__ import annotations

from typing import Any


def create_host_table(dynamodb: Any, name: str) -> str:
    dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "host", "KeyType": "HASH"},
                   {"AttributeName": "kind", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "host", "AttributeType": "S"},
                              {"AttributeName": "kind", "AttributeType": "S"}])
    return name


def create_hint_queue(sqs: Any, name: str = "ecssd-hints") -> str:
    """The queue's URL."""
    return str(sqs.create_queue(QueueName=name)["QueueUrl"])


class FixedClock:
    """A wall clock that moves only when a test sets ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

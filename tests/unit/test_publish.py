"""The agent's side of the queued mode: the Publisher and the SQS hints (in-process moto).

What matters: a publication is stored before its hint is sent, seq only grows, an unchanged
state costs nothing, and an AWS error leaves the Publisher exactly as before (the next
publish retries it). A hint is tiny and strict: anything else on the queue is a BadHint that
says what is wrong with it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ecssd_agent.aws.change_queue import (
    SQS_BATCH,
    BadHint,
    ChangeQueue,
    Hint,
    Message,
    QueueError,
    hint_body,
    parse_hint,
)
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.core.model import Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.records import host_records
from ecssd_agent.writer.publish import Publisher
from tests.support.queued import create_host_table

ZONE = "sd.internal."
TABLE = "hosts"
HOST = Host("ip-10-0-0-1", "10.0.0.1")


def desired(*names: str) -> list[RecordSet]:
    instances = [ServiceInstance(name, "tcp", 8081, 31000 + i, f"{i:012x}" + "0" * 52)
                 for i, name in enumerate(names)]
    records, problems = host_records(HOST, instances, ZONE, Routing.MULTIVALUE, 0)
    assert problems == []
    return records


# --- parse_hint ----------------------------------------------------------------------------

def test_hint_body_round_trips() -> None:
    hint = Hint(HOST.label, ZONE, 1_700_000_000_123_456_789)
    assert parse_hint(hint_body(hint)) == hint
    assert json.loads(hint_body(hint)) == {"host": HOST.label, "zone": ZONE,
                                           "seq": 1_700_000_000_123_456_789}


@pytest.mark.parametrize(("body", "problem"), [
    ("", "not JSON"),
    ("host=ip-1", "not JSON"),
    ('{"host": "ip-1", ', "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ("null", "not a JSON object"),
    ('"ip-1"', "not a JSON object"),
    ("42", "not a JSON object"),
    ("{}", "no host"),
    ('{"zone": "sd.internal.", "seq": 1}', "no host"),
    ('{"host": "", "zone": "sd.internal.", "seq": 1}', "no host"),
    ('{"host": 7, "zone": "sd.internal.", "seq": 1}', "no host"),
    ('{"host": ["ip-1"], "zone": "sd.internal.", "seq": 1}', "no host"),
    ('{"host": "ip-1", "seq": 1}', "no zone"),
    ('{"host": "ip-1", "zone": "", "seq": 1}', "no zone"),
    ('{"host": "ip-1", "zone": null, "seq": 1}', "no zone"),
    ('{"host": "ip-1", "zone": "sd.internal."}', "no integer seq"),
    ('{"host": "ip-1", "zone": "sd.internal.", "seq": "1"}', "no integer seq"),
    ('{"host": "ip-1", "zone": "sd.internal.", "seq": 1.5}', "no integer seq"),
    ('{"host": "ip-1", "zone": "sd.internal.", "seq": true}', "no integer seq"),
    ('{"host": "ip-1", "zone": "sd.internal.", "seq": null}', "no integer seq"),
])
def test_every_malformed_body_is_a_bad_hint_naming_the_problem(body: str, problem: str) -> None:
    with pytest.raises(BadHint) as caught:
        parse_hint(body)
    assert str(caught.value).startswith(problem)
    assert body[:20] in str(caught.value) or not body  # the message quotes the body


def test_a_bad_hint_quotes_only_the_start_of_a_huge_body() -> None:
    with pytest.raises(BadHint) as caught:
        parse_hint("x" * 100_000)
    assert len(str(caught.value)) < 200


# --- ChangeQueue against moto ----------------------------------------------------------------

@pytest.fixture
def aws() -> Iterator[tuple[HostStore, ChangeQueue, Clients]]:
    with mock_aws():
        clients = Clients(region="us-east-1")
        ddb = clients.client("dynamodb")
        create_host_table(ddb, TABLE)
        sqs = clients.client("sqs")
        url = sqs.create_queue(QueueName="hints")["QueueUrl"]
        yield HostStore(ddb, TABLE), ChangeQueue(sqs, url), clients


def drain(queue: ChangeQueue) -> list[Message]:
    out: list[Message] = []
    while batch := queue.receive(0):
        out.extend(batch)
    return out


def queue_counts(queue: ChangeQueue) -> tuple[int, int]:
    attrs = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])
    return (int(attrs["Attributes"]["ApproximateNumberOfMessages"]),
            int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]))


def test_notify_receive_and_delete_in_batches_of_ten(aws) -> None:
    _, queue, clients = aws
    hints = [Hint(f"ip-10-0-1-{i}", ZONE, i) for i in range(23)]
    for hint in hints:
        queue.notify(hint)
    first = queue.receive(0, limit=50)  # SQS takes at most 10
    assert len(first) == SQS_BATCH
    messages = first + drain(queue)
    assert sorted((parse_hint(m.body) for m in messages), key=lambda h: h.seq) == hints
    assert len({m.receipt for m in messages}) == 23
    assert queue_counts(queue) == (0, 23)

    before = clients.stats.attempts("DeleteMessageBatch")
    queue.delete(messages)

    assert clients.stats.attempts("DeleteMessageBatch") - before == 3  # 10 + 10 + 3
    assert queue_counts(queue) == (0, 0)


def test_delete_of_nothing_makes_no_request(aws) -> None:
    _, queue, clients = aws
    queue.delete([])
    assert clients.stats.attempts("DeleteMessageBatch") == 0


def test_notify_many_sends_batches_of_ten(aws: tuple[HostStore, ChangeQueue, Clients]) -> None:
    """A writer handing back the hosts it did not finish: 23 hints, 3 SendMessageBatch."""
    _, queue, clients = aws
    hints = [Hint(f"ip-10-0-2-{i}", ZONE, 0) for i in range(23)]

    queue.notify_many(iter(hints))  # any iterable, consumed once

    assert clients.stats.attempts("SendMessageBatch") == 3
    assert clients.stats.attempts("SendMessage") == 0
    assert sorted((parse_hint(m.body) for m in drain(queue)), key=lambda h: h.host) == sorted(
        hints, key=lambda h: h.host)


def test_notify_many_of_nothing_makes_no_request(aws: tuple[HostStore, ChangeQueue, Clients]) -> None:
    _, queue, clients = aws
    queue.notify_many([])
    assert clients.stats.attempts("SendMessageBatch") == 0


def test_notify_many_raises_when_sqs_refuses_part_of_a_batch(
        aws: tuple[HostStore, ChangeQueue, Clients]) -> None:
    """SendMessageBatch answers 200 with per-entry failures: those hints are not on the queue,
    so the caller must not acknowledge the messages they stand for."""
    _, queue, _ = aws
    answers: list[dict[str, Any]] = []

    class PartlyRefusing:
        def __init__(self, client: Any) -> None:
            self._client = client

        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
            kept, refused = Entries[:-1], Entries[-1]
            answer = dict(self._client.send_message_batch(QueueUrl=QueueUrl, Entries=kept))
            answer["Failed"] = [{"Id": refused["Id"], "SenderFault": False,
                                 "Code": "InternalError", "Message": "try again"}]
            answers.append(answer)
            return answer

    flaky = ChangeQueue(PartlyRefusing(queue.client), queue.url)
    with pytest.raises(QueueError, match=r"refused 1 hint\(s\): try again"):
        flaky.notify_many(Hint(f"ip-10-0-3-{i}", ZONE, 0) for i in range(15))
    assert len(answers) == 1  # it stops at the first refusal
    assert len(drain(queue)) == 9


def test_receive_asks_sqs_within_its_limits() -> None:
    sent: list[dict[str, Any]] = []

    class Recorder:
        def receive_message(self, **kwargs: Any) -> dict[str, Any]:
            sent.append(kwargs)
            return {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1"}]}

    queue = ChangeQueue(Recorder(), "https://queue")
    assert queue.receive(99.7, limit=0) == [Message("m1", "r1", "")]  # a body-less message
    queue.receive(2.9, limit=3)
    assert [(s["MaxNumberOfMessages"], s["WaitTimeSeconds"]) for s in sent] == [(1, 20), (3, 2)]


# --- Publisher -------------------------------------------------------------------------------

class Clock:
    """Nanosecond wall clock under test control: it may go backwards."""

    def __init__(self, *times: int) -> None:
        self.times = list(times)

    def __call__(self) -> int:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def stored(store: HostStore) -> Any:
    return store.load([HOST.label])[0].get(HOST.label)


def test_first_publication_asks_for_verification_and_hints_the_stored_seq(aws) -> None:
    store, queue, _ = aws
    publisher = Publisher(store, queue, HOST.label, ZONE, clock=Clock(1000))
    records = desired("calc", "time")

    assert publisher.publish(records)

    pub = stored(store)
    assert pub.verify is True and pub.seq == 1000 and pub.zone == ZONE
    assert set(pub.records) == set(records)
    [message] = drain(queue)
    assert parse_hint(message.body) == Hint(HOST.label, ZONE, 1000)

    assert publisher.publish(desired("calc"))
    assert stored(store).verify is False  # only the first one, or when asked
    assert publisher.publications == 2


def test_an_unchanged_state_is_not_published_again_unless_forced_or_verified(aws) -> None:
    store, queue, clients = aws
    publisher = Publisher(store, queue, HOST.label, ZONE)
    records = desired("calc", "time")
    assert publisher.publish(records)
    puts, sends = clients.stats.attempts("PutItem"), clients.stats.attempts("SendMessage")

    assert not publisher.publish(list(reversed(records)))  # same set, other order
    assert (clients.stats.attempts("PutItem"), clients.stats.attempts("SendMessage")) == (puts, sends)

    assert publisher.publish(records, force=True)  # a resync re-sends a possibly lost hint
    assert stored(store).verify is False
    assert publisher.publish(records, verify=True)
    assert stored(store).verify is True
    assert (clients.stats.attempts("PutItem"), clients.stats.attempts("SendMessage")) == (
        puts + 2, sends + 2)
    assert len(drain(queue)) == 3


def test_seq_strictly_increases_even_when_the_clock_goes_back(aws) -> None:
    store, queue, _ = aws
    publisher = Publisher(store, queue, HOST.label, ZONE, clock=Clock(5000, 4000, 4000, 9000))
    seqs = []
    for names in (("a",), ("b",), ("c",), ("d",)):
        assert publisher.publish(desired(*names))
        seqs.append(stored(store).seq)
    assert seqs == [5000, 5001, 5002, 9000]
    assert sorted(parse_hint(m.body).seq for m in drain(queue)) == seqs


def test_concurrent_publications_never_share_a_seq(aws) -> None:
    store, queue, _ = aws
    publisher = Publisher(store, queue, HOST.label, ZONE, clock=lambda: 7)
    threads = [threading.Thread(target=publisher.publish, args=(desired(f"s{i}"),))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    seqs = sorted(parse_hint(m.body).seq for m in drain(queue))
    assert seqs == list(range(7, 15))
    assert stored(store).seq == 14  # the store holds the newest


class FailingOnce:
    """A boto3 client whose ``operation`` fails once with a real ClientError, then works."""

    def __init__(self, client: Any, operation: str) -> None:
        self._client = client
        self._operation = operation
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        if name == self._operation and self.failures == 0:
            def fail(**_kwargs: Any) -> Any:
                self.failures += 1
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                             "Message": "slow down"}}, name)
            return fail
        return getattr(self._client, name)


def test_a_failed_put_leaves_nothing_remembered_and_the_next_publish_retries(aws) -> None:
    store, queue, _ = aws
    flaky = HostStore(FailingOnce(store.client, "put_item"), TABLE)
    publisher = Publisher(flaky, queue, HOST.label, ZONE, clock=Clock(100, 200))
    records = desired("calc")

    with pytest.raises(ClientError):
        publisher.publish(records)

    assert stored(store) is None and drain(queue) == []  # no hint without its state
    assert publisher.publications == 0
    assert publisher.publish(records)  # not "unchanged": it was never published
    pub = stored(store)
    assert pub.verify is True and pub.seq == 200  # still the first publication
    assert [parse_hint(m.body).seq for m in drain(queue)] == [200]


def test_a_failed_hint_makes_the_next_publish_of_the_same_state_send_again(aws) -> None:
    store, queue, _ = aws
    flaky = ChangeQueue(FailingOnce(queue.client, "send_message"), queue.url)
    publisher = Publisher(store, flaky, HOST.label, ZONE, clock=Clock(100, 100, 300))
    records = desired("calc")

    with pytest.raises(ClientError):
        publisher.publish(records)
    assert stored(store).seq == 100  # stored, but the writer was never told

    assert publisher.publish(records)
    assert stored(store).seq == 101  # newer than the state already stored
    assert [parse_hint(m.body).seq for m in drain(queue)] == [101]

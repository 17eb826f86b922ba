"""The zone writer's entry points: settings, the Lambda handler and the ``ecssd-writer`` poller.

In-process moto (Route 53, DynamoDB, SQS). The handler and ``main`` build their own clients
from the environment, as in AWS; the agents' side is the real Publisher, and the Lambda's
event is made from the messages SQS really delivered. What matters: a bad message never
holds up the good ones, an AWS error leaves every good hint to be delivered again (never
acknowledged), and a configuration error names the flag or variable to fix. Hosts a write
could not finish (lease busy, deadline) go back on the queue at once (CHANGE_QUEUE), or
else exactly their messages are reported failed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ecssd_agent import logs
from ecssd_agent.aws.change_queue import ChangeQueue, Hint, Message, hint_body, parse_hint
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import LEASE_HOST, HostStore
from ecssd_agent.aws.route53 import Route53Zone, ZoneError, find_zone
from ecssd_agent.config_fields import SettingsError
from ecssd_agent.core import ownership
from ecssd_agent.core.model import Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind
from ecssd_agent.core.records import host_records
from ecssd_agent.writer.cli import Poller, build_writer, main
from ecssd_agent.writer.publish import Publisher
from ecssd_agent.writer.settings import WriterSettings, load_cli_settings, load_lambda_settings
from health_lambda import zone_writer_handler
from tests.support.queued import create_host_table

ZONE = "sd.internal."
TABLE = "ecssd-hosts"
SESSION = boto3.session.Session()  # caches service models across tests


# --- settings --------------------------------------------------------------------------------

CLI_OK = ["--host-table", "t", "--change-queue", "https://sqs/q"]


def cli_error(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as caught:
        load_cli_settings(argv, env or {})
    return str(caught.value)


def lambda_error(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_lambda_settings(env)
    return str(caught.value)


def test_cli_settings_from_flags_over_variables_over_defaults() -> None:
    settings = load_cli_settings(
        ["--batch-window", "0.25", "--once", "--change-queue", "https://sqs/flag", "sd.internal"],
        {"ECSSD_HOST_TABLE": "hosts", "ECSSD_CHANGE_QUEUE": "https://sqs/env",
         "ECSSD_VERIFY_AFTER": "60", "ECSSD_DRY_RUN": "yes"})
    assert (settings.domain, settings.host_table, settings.change_queue) == (
        "sd.internal", "hosts", "https://sqs/flag")
    assert (settings.batch_window, settings.once, settings.verify_after, settings.dry_run) == (
        0.25, True, 60.0, True)
    assert (settings.max_batch, settings.aws_max_attempts) == (10000, 10)


def test_cli_needs_the_table_and_the_queue_and_names_them() -> None:
    assert cli_error(["sd.internal"]).startswith("--host-table / ECSSD_HOST_TABLE:")
    assert cli_error(["--host-table", "t"]).startswith("--change-queue / ECSSD_CHANGE_QUEUE:")
    assert cli_error([], {"ECSSD_HOST_TABLE": "t"}).startswith("--change-queue")


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["bad..domain"], {}, "DOMAIN"),
    ([], {"ECSSD_DOMAIN": "-bad-"}, "DOMAIN"),
    (["--batch-window", "soon"], {}, "--batch-window"),
    (["--batch-window", "-1"], {}, "--batch-window / ECSSD_BATCH_WINDOW"),
    (["--max-batch", "0"], {}, "--max-batch / ECSSD_MAX_BATCH"),
    ([], {"ECSSD_VERIFY_AFTER": "0"}, "--verify-after / ECSSD_VERIFY_AFTER"),
    ([], {"ECSSD_VERIFY_AFTER": "nan"}, "ECSSD_VERIFY_AFTER"),
    (["--aws-max-attempts", "0"], {}, "--aws-max-attempts / ECSSD_AWS_MAX_ATTEMPTS"),
    ([], {"ECSSD_DRY_RUN": "perhaps"}, "ECSSD_DRY_RUN"),
])
def test_cli_errors_name_the_flag_or_variable(argv: list[str], env: dict[str, str],
                                              named: str) -> None:
    assert cli_error(CLI_OK + argv, env).startswith(named + ":")


def test_a_zone_id_spares_the_domain_its_check() -> None:
    settings = load_cli_settings([*CLI_OK, "--hosted-zone-id", "Z123", "not..a..name"], {})
    assert settings.hosted_zone_id == "Z123"


def test_lambda_settings_use_the_bare_names_and_need_no_queue() -> None:
    settings = load_lambda_settings({
        "HOST_TABLE": "hosts", "DOMAIN": "sd.internal", "HOSTED_ZONE_ID": "Z1", "VPC_ID": "vpc-1",
        "VERIFY_AFTER": "3600", "DRY_RUN": "true", "AWS_MAX_ATTEMPTS": "4", "LOG_LEVEL": "debug",
        "ECSSD_HOST_TABLE": "not-this-one"})
    assert (settings.host_table, settings.domain, settings.hosted_zone_id, settings.vpc_id) == (
        "hosts", "sd.internal", "Z1", "vpc-1")
    assert (settings.verify_after, settings.dry_run, settings.aws_max_attempts,
            settings.log_level, settings.change_queue) == (3600.0, True, 4, "debug", "")
    assert load_lambda_settings({"HOST_TABLE": "t"}).domain == "servicediscovery.internal"


@pytest.mark.parametrize(("env", "named"), [
    ({}, "HOST_TABLE"),
    ({"ECSSD_HOST_TABLE": "t"}, "HOST_TABLE"),  # the CLI's spelling is not the Lambda's
    ({"HOST_TABLE": "t", "DOMAIN": "bad..domain"}, "DOMAIN"),
    ({"HOST_TABLE": "t", "VERIFY_AFTER": "daily"}, "VERIFY_AFTER"),
    ({"HOST_TABLE": "t", "VERIFY_AFTER": "-5"}, "VERIFY_AFTER"),
    ({"HOST_TABLE": "t", "AWS_MAX_ATTEMPTS": "0"}, "AWS_MAX_ATTEMPTS"),
    ({"HOST_TABLE": "t", "DRY_RUN": "sometimes"}, "DRY_RUN"),
    ({"HOST_TABLE": "t", "LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
])
def test_lambda_errors_name_the_variable(env: dict[str, str], named: str) -> None:
    assert lambda_error(env).startswith(named + ":")


# --- the AWS world ---------------------------------------------------------------------------

@dataclass
class World:
    clients: Clients
    store: HostStore
    queue: ChangeQueue
    zone_id: str

    def publisher(self, h: Host) -> Publisher:
        return Publisher(self.store, self.queue, h.label, ZONE)

    def owned(self, *hosts: Host) -> dict[str, set[RecordSet]]:
        route53 = self.clients.client("route53")
        out: dict[str, set[RecordSet]] = {h.label: set() for h in hosts}
        for record in Route53Zone(route53, find_zone(route53, ZONE)).records():
            owner = ownership.parse_set_identifier(record.set_identifier)
            if owner is not None and owner.kind is Kind.HOST and owner.host in out:
                out[owner.host].add(record)
        return out

    def in_queue(self) -> tuple[int, int]:
        """(visible, in flight) messages: in flight = received, not deleted."""
        attrs = self.queue.client.get_queue_attributes(QueueUrl=self.queue.url,
                                                       AttributeNames=["All"])["Attributes"]
        return (int(attrs["ApproximateNumberOfMessages"]),
                int(attrs["ApproximateNumberOfMessagesNotVisible"]))

    def receive_all(self) -> list[Message]:
        out: list[Message] = []
        while batch := self.queue.receive(0):
            out.extend(batch)
        return out

    def drop_table(self) -> None:
        self.clients.client("dynamodb").delete_table(TableName=TABLE)


def host(i: int) -> Host:
    return Host(f"ip-10-0-0-{i}", f"10.0.0.{i}")


def desired(h: Host, *names: str) -> list[RecordSet]:
    instances = [ServiceInstance(n, "tcp", 8081, 31000 + i, f"{i:02d}{h.ip}".replace(".", "")
                                 .ljust(64, "0")) for i, n in enumerate(names)]
    records, problems = host_records(h, instances, ZONE, Routing.MULTIVALUE, 0)
    assert problems == []
    return records


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("DOMAIN", ZONE)
    monkeypatch.setenv("HOST_TABLE", TABLE)
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "HOSTED_ZONE_ID", "VPC_ID", "VERIFY_AFTER",
                 "DRY_RUN", "REGION", "AWS_MAX_ATTEMPTS", "LOG_LEVEL", "LOG_FORMAT",
                 "CHANGE_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    zone_writer_handler.runtime.reset()
    with mock_aws():
        clients = Clients(region="us-east-1", session=SESSION)
        r53 = clients.client("route53")
        zone_id = r53.create_hosted_zone(
            Name=ZONE, CallerReference="1", HostedZoneConfig={"PrivateZone": True},
            VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-1"})["HostedZone"]["Id"]
        ddb = clients.client("dynamodb")
        create_host_table(ddb, TABLE)
        sqs = clients.client("sqs")
        url = sqs.create_queue(QueueName="ecssd-hints")["QueueUrl"]
        yield World(clients, HostStore(ddb, TABLE), ChangeQueue(sqs, url), zone_id)
    zone_writer_handler.runtime.reset()


def sqs_event(messages: list[Message]) -> dict[str, Any]:
    """What an SQS event source mapping hands the Lambda."""
    return {"Records": [{
        "messageId": m.id, "receiptHandle": m.receipt, "body": m.body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "eventSource": "aws:sqs", "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ecssd-hints"} for m in messages]}


def raw_message(world: World, body: str) -> None:
    world.queue.client.send_message(QueueUrl=world.queue.url, MessageBody=body)


# --- the Lambda handler ----------------------------------------------------------------------

def test_the_handler_writes_every_hinted_host_and_reports_no_failure(world: World) -> None:
    hosts = [host(i) for i in range(1, 6)]
    for h in hosts:
        world.publisher(h).publish(desired(h, "calc", "time"))
    messages = world.receive_all()
    assert len(messages) == 5

    result = zone_writer_handler.lambda_handler(sqs_event(messages), None)

    assert result == {"batchItemFailures": []}
    assert world.owned(*hosts) == {h.label: set(desired(h, "calc", "time")) for h in hosts}


def test_a_bad_message_is_dropped_while_the_good_ones_are_written(world: World) -> None:
    good = [host(1), host(2)]
    for h in good:
        world.publisher(h).publish(desired(h, "calc"))
    raw_message(world, "this is not a hint")
    raw_message(world, hint_body(Hint(host(3).label, "other.internal.", 1)))  # another zone
    raw_message(world, '{"host": "ip-10-0-0-4", "zone": "sd.internal."}')  # no seq
    messages = world.receive_all()
    assert len(messages) == 5

    result = zone_writer_handler.lambda_handler(sqs_event(messages), None)

    assert result == {"batchItemFailures": []}  # retrying a bad message cannot help
    assert world.owned(*good) == {h.label: set(desired(h, "calc")) for h in good}


def test_an_aws_error_reports_every_good_hint_for_redelivery(world: World) -> None:
    good = [host(1), host(2), host(3)]
    for h in good:
        world.publisher(h).publish(desired(h, "calc"))
    raw_message(world, "garbage")
    messages = world.receive_all()
    bad_id = next(m.id for m in messages if m.body == "garbage")
    world.drop_table()

    result = zone_writer_handler.lambda_handler(sqs_event(messages), None)

    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        m.id for m in messages if m.id != bad_id)
    assert world.owned(*good) == {h.label: set() for h in good}


def test_a_route53_error_after_a_warm_start_reports_every_good_hint(world: World) -> None:
    a = host(1)
    world.publisher(a).publish(desired(a))
    assert zone_writer_handler.lambda_handler(sqs_event(world.receive_all()), None) == {
        "batchItemFailures": []}
    writer = zone_writer_handler.runtime.current
    # The zone is deleted under the warm writer (its records first, as Route 53 demands).
    r53 = world.clients.client("route53")
    r53.change_resource_record_sets(HostedZoneId=world.zone_id, ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": dict(r.listed or {})}
        for r in world.owned(a)[a.label]]})
    r53.delete_hosted_zone(Id=world.zone_id)
    b = host(2)
    world.publisher(b).publish(desired(b, "calc"))
    messages = world.receive_all()

    result = zone_writer_handler.lambda_handler(sqs_event(messages), None)

    assert zone_writer_handler.runtime.current is writer  # built once per cold start
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [m.id for m in messages]


def test_a_configuration_error_fails_the_invocation_loudly(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.publisher(host(1)).publish(desired(host(1)))
    event = sqs_event(world.receive_all())
    monkeypatch.delenv("HOST_TABLE")
    with pytest.raises(SettingsError, match="HOST_TABLE"):
        zone_writer_handler.lambda_handler(event, None)
    monkeypatch.setenv("HOST_TABLE", TABLE)
    monkeypatch.setenv("DOMAIN", "nozone.internal")
    with pytest.raises(ZoneError):
        zone_writer_handler.lambda_handler(event, None)


def test_an_empty_or_odd_event_writes_nothing(world: World) -> None:
    assert zone_writer_handler.lambda_handler({"Records": []}, None) == {"batchItemFailures": []}
    assert zone_writer_handler.lambda_handler({}, None) == {"batchItemFailures": []}


# --- the handler: hosts it could not finish ---------------------------------------------------

@dataclass
class Context:
    """The Lambda context's one method the handler uses."""

    remaining_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


#: A short invocation keeps FINISH_SHARE of itself for the end of its work: these leave the
#: writer half a second to wait for the lease, or no time to start a change request at all.
HALF_A_SECOND = Context(int(0.5 / (1 - zone_writer_handler.FINISH_SHARE) * 1000) + 1)
NO_TIME = Context(0)


@pytest.mark.parametrize(("remaining_s", "kept_s"), [(900.0, 60.0), (300.0, 60.0),
                                                     (60.0, 15.0), (2.0, 0.5), (0.0, 0.0)])
def test_the_handler_keeps_a_margin_a_short_invocation_can_afford(
        remaining_s: float, kept_s: float) -> None:
    """A 60 s timeout must still leave the writer time to work (it used to leave none)."""
    now = time.time()
    deadline = zone_writer_handler._deadline(Context(int(remaining_s * 1000)))
    assert deadline is not None
    assert deadline - now == pytest.approx(remaining_s - kept_s, abs=0.05)


def hold_lease(world: World) -> None:
    """Another zone writer is at work (its lease runs ten minutes)."""
    assert world.store.acquire("another-writer", 600.0)


def lease_holder(world: World) -> str | None:
    item = world.store.client.get_item(
        TableName=TABLE, Key={"host": {"S": LEASE_HOST}, "kind": {"S": "lease"}},
        ConsistentRead=True).get("Item")
    return None if item is None else str(item["owner"]["S"])


def hinted(messages: list[Message]) -> list[str]:
    hints = [parse_hint(m.body) for m in messages]
    assert {h.zone for h in hints} <= {ZONE}
    return sorted(h.host for h in hints)


def test_with_a_queue_a_busy_lease_hands_every_host_back_and_fails_nothing(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGE_QUEUE", world.queue.url)
    hosts = [host(i) for i in range(1, 4)]
    for h in hosts:
        world.publisher(h).publish(desired(h, "calc"))
    messages = world.receive_all()
    hold_lease(world)

    result = zone_writer_handler.lambda_handler(sqs_event(messages), HALF_A_SECOND)

    assert result == {"batchItemFailures": []}  # the mapping deletes them: handed back
    handed = world.receive_all()
    assert hinted(handed) == sorted(h.label for h in hosts)
    assert {m.id for m in handed}.isdisjoint(m.id for m in messages)  # new messages
    assert world.owned(*hosts) == {h.label: set() for h in hosts}
    assert world.store.load([h.label for h in hosts])[1] == {}  # nothing saved as applied
    assert lease_holder(world) == "another-writer"

    world.store.release("another-writer")  # the other writer is done
    assert zone_writer_handler.lambda_handler(sqs_event(handed), HALF_A_SECOND) == {
        "batchItemFailures": []}
    assert world.owned(*hosts) == {h.label: set(desired(h, "calc")) for h in hosts}
    assert world.receive_all() == [] and lease_holder(world) is None


def test_with_a_queue_a_deadline_hands_back_only_the_hosts_left_to_do(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGE_QUEUE", world.queue.url)
    done, new = host(1), [host(2), host(3)]
    world.publisher(done).publish(desired(done, "calc"))
    zone_writer_handler.lambda_handler(sqs_event(world.receive_all()), None)
    world.publisher(done).publish(desired(done, "calc"), force=True)  # nothing to change
    for h in new:
        world.publisher(h).publish(desired(h, "calc"))
    messages = world.receive_all()
    before = world.clients.stats.attempts("ChangeResourceRecordSets")

    result = zone_writer_handler.lambda_handler(sqs_event(messages), NO_TIME)

    assert result == {"batchItemFailures": []}
    assert hinted(world.receive_all()) == sorted(h.label for h in new)
    assert world.clients.stats.attempts("ChangeResourceRecordSets") == before  # none started
    assert world.owned(*new) == {h.label: set() for h in new}
    assert lease_holder(world) is None  # given back


def test_without_a_queue_the_unfinished_hosts_messages_are_reported_failed(
        world: World) -> None:
    a, b, done = host(1), host(2), host(3)
    world.publisher(done).publish(desired(done, "calc"))
    zone_writer_handler.lambda_handler(sqs_event(world.receive_all()), None)
    publisher_a = world.publisher(a)
    publisher_a.publish(desired(a))
    publisher_a.publish(desired(a, "calc"))  # two hints for a
    world.publisher(b).publish(desired(b, "time"))
    world.publisher(done).publish(desired(done, "calc"), force=True)  # nothing to change
    raw_message(world, "garbage")
    raw_message(world, hint_body(Hint(host(4).label, "other.internal.", 1)))
    messages = world.receive_all()
    assert len(messages) == 6

    result = zone_writer_handler.lambda_handler(sqs_event(messages), NO_TIME)

    # a's two messages and b's: SQS delivers them again after the visibility timeout. Not
    # the bad ones (delivering them again cannot help), nor one for a host with nothing to do.
    expected = [m.id for m in messages
                if m.body.startswith("{") and parse_hint(m.body).zone == ZONE
                and parse_hint(m.body).host in (a.label, b.label)]
    assert len(expected) == 3
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(expected)
    assert world.receive_all() == []  # nothing handed back: there is no queue to hand to
    assert world.owned(a, b) == {a.label: set(), b.label: set()}


def test_without_a_queue_a_busy_lease_reports_every_good_message_failed(world: World) -> None:
    hosts = [host(1), host(2)]
    for h in hosts:
        world.publisher(h).publish(desired(h, "calc"))
    raw_message(world, "garbage")
    messages = world.receive_all()
    hold_lease(world)

    result = zone_writer_handler.lambda_handler(sqs_event(messages), HALF_A_SECOND)

    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        m.id for m in messages if m.body != "garbage")
    assert world.owned(*hosts) == {h.label: set() for h in hosts}


def test_a_failed_hand_back_falls_back_to_reporting_the_messages(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGE_QUEUE", world.queue.url + "-deleted")
    a = host(1)
    world.publisher(a).publish(desired(a, "calc"))
    messages = world.receive_all()
    hold_lease(world)

    result = zone_writer_handler.lambda_handler(sqs_event(messages), HALF_A_SECOND)

    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0].id}]}


# --- the ecssd-writer poller -----------------------------------------------------------------

def poller(world: World, **overrides: Any) -> Poller:
    settings = replace(WriterSettings(domain=ZONE, host_table=TABLE,
                                      change_queue=world.queue.url, once=True, batch_window=0.0),
                       **overrides)
    writer = build_writer(settings, world.clients)
    return Poller(writer, world.queue, settings, threading.Event())


def test_once_drains_the_queue_in_one_window_writes_and_deletes(world: World) -> None:
    hosts = [host(i) for i in range(1, 26)]
    for h in hosts:
        world.publisher(h).publish(desired(h, "calc"))
    raw_message(world, "not a hint")  # acknowledged too: delivering it again cannot help
    before = world.clients.stats.attempts("ChangeResourceRecordSets")
    run = poller(world, batch_window=1.0)

    assert run.run() == 0

    assert world.in_queue() == (0, 0)
    assert run.writes == 1  # 26 messages gathered within one batch window
    assert world.clients.stats.attempts("ChangeResourceRecordSets") - before == 1
    assert world.owned(*hosts) == {h.label: set(desired(h, "calc")) for h in hosts}


def test_once_respects_max_batch(world: World) -> None:
    hosts = [host(i) for i in range(1, 26)]
    for h in hosts:
        world.publisher(h).publish(desired(h))
    run = poller(world, max_batch=10, batch_window=1.0)
    assert run.run() == 0
    assert run.writes == 3 and world.in_queue() == (0, 0)
    assert world.owned(*hosts) == {h.label: set(desired(h)) for h in hosts}


def test_a_write_error_leaves_every_message_on_the_queue(world: World) -> None:
    hosts = [host(i) for i in range(1, 4)]
    for h in hosts:
        world.publisher(h).publish(desired(h, "calc"))
    run = poller(world)
    world.drop_table()

    assert run.run() == 1  # --once reports the failure

    assert world.in_queue() == (0, 3)  # received, never deleted: SQS delivers them again
    assert run.writes == 0


def test_a_running_poller_retries_until_the_write_succeeds(world: World) -> None:
    """Without --once an error is waited out; the hints, delivered again, are written."""
    a = host(1)
    world.publisher(a).publish(desired(a, "calc"))
    world.queue.client.set_queue_attributes(QueueUrl=world.queue.url,
                                            Attributes={"VisibilityTimeout": "1"})
    run = poller(world, once=False)
    real_write = run.writer.write
    calls: list[set[str]] = []

    def write(hosts: Any, **kwargs: Any) -> Any:
        calls.append(set(hosts))
        if len(calls) == 1:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}},
                              "BatchGetItem")
        outcome = real_write(hosts, **kwargs)
        run.stop.set()
        return outcome

    run.writer.write = write  # type: ignore[method-assign, assignment]
    thread = threading.Thread(target=run.run, daemon=True)
    thread.start()
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert calls == [{a.label}, {a.label}] and run.writes == 1
    assert world.in_queue() == (0, 0)
    assert world.owned(a) == {a.label: set(desired(a, "calc"))}


def three_hosts_behind_a_held_lease(world: World) -> tuple[list[Host], Poller]:
    """Three published hosts, another writer's lease, and a poller that waits 0.3 s for it."""
    hosts = [host(i) for i in range(1, 4)]
    for h in hosts:
        world.publisher(h).publish(desired(h, "calc"))
    hold_lease(world)
    run = poller(world)
    run.writer.lock_wait = 0.3  # instead of minutes
    return hosts, run


def test_a_poller_hands_back_what_it_could_not_write_and_deletes_the_messages(
        world: World) -> None:
    hosts, run = three_hosts_behind_a_held_lease(world)
    run.queue = ChangeQueue(world.queue.client, world.queue.url)

    assert run.run() == 1  # --once: not done, so not a success (and not a loop on its hints)

    assert run.writes == 0
    assert world.in_queue() == (3, 0)  # the originals deleted, one new hint per host
    assert world.owned(*hosts) == {h.label: set() for h in hosts}
    world.store.release("another-writer")
    assert poller(world).run() == 0  # the hints it handed back
    assert world.in_queue() == (0, 0)
    assert world.owned(*hosts) == {h.label: set(desired(h, "calc")) for h in hosts}


class RefusingSends:
    """An SQS client that takes no SendMessageBatch entry (every one reported Failed)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        return {"Successful": [], "Failed": [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "down"}
            for e in Entries]}


def test_a_poller_whose_hand_back_fails_leaves_the_messages_to_be_delivered_again(
        world: World) -> None:
    _, run = three_hosts_behind_a_held_lease(world)
    run.queue = ChangeQueue(RefusingSends(world.queue.client), world.queue.url)

    assert run.run() == 1  # --once: the pass failed

    assert world.in_queue() == (0, 3)  # received, not deleted: delivered again later


# --- the ecssd-writer process entry point ----------------------------------------------------

@pytest.fixture
def process_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """main() installs signal handlers and logging for the process: not for pytest's."""
    monkeypatch.setattr(signal, "signal", lambda *_args: None)
    monkeypatch.setattr(logs, "setup", lambda *_args: None)
    yield


def test_main_exits_2_naming_a_missing_setting(
        process_globals: None, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ECSSD_HOST_TABLE", "ECSSD_CHANGE_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--change-queue", "https://sqs/q", ZONE]) == 2
    assert "--host-table / ECSSD_HOST_TABLE" in capsys.readouterr().err


def test_main_exits_1_without_the_zone(world: World, process_globals: None,
                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["--host-table", TABLE, "--change-queue", world.queue.url, "--once",
                     "nozone.internal"]) == 1
    assert "no private hosted zone named nozone.internal." in caplog.text


def test_main_once_writes_the_queue_and_exits_0(world: World, process_globals: None) -> None:
    hosts = [host(1), host(2)]
    for h in hosts:
        world.publisher(h).publish(desired(h, "calc"))
    assert main(["--host-table", TABLE, "--change-queue", world.queue.url, "--once",
                 "--batch-window", "0", ZONE]) == 0
    assert world.in_queue() == (0, 0)
    assert world.owned(*hosts) == {h.label: set(desired(h, "calc")) for h in hosts}

"""The quickstart's two write modes: queued (the default) and direct (``AgentWriteMode``).

Queued mode adds a DynamoDB table of host states, an SQS queue of hints with its
dead-letter queue, and the zone writer Lambda fed by the queue; the agents then publish
instead of writing Route 53. Direct mode has none of these and the agents write the zone.

Checked here, on top of test_cloudformation.py (lint, IAM tables, the whole stack in moto):
- the template: the parameter and its conditions, the table/queue/mapping settings the
  writer relies on (key schema, TTL attribute and item keys against the code that writes
  them, visibility timeout against the function timeout, batch settings), each role's exact
  actions in each mode;
- cfn-lint with ``direct`` as the default too;
- moto: both modes deploy, with the resources (and only those) of the mode, as far as moto
  keeps their settings (it drops a table's TimeToLiveSpecification: checked on the
  template); and "least privilege is enough privilege" for the queued agent and the zone
  writer: the real agent CLI and the real handler run against the stack through a recording
  proxy, and every call they make must be allowed by their role.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from ecssd_agent.aws.change_queue import ChangeQueue, Message
from ecssd_agent.aws.host_store import LEASE_HOST, HostStore
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.host_state import Published
from ecssd_agent.sweep.settings import SweepSettings
from ecssd_agent.writer.settings import load_lambda_settings
from health_lambda import zone_writer_handler
from tests.integration.test_cloudformation import (
    TEMPLATE,
    Call,
    RecordingProxy,
    Stack,
    _function_env,
    active_resources,
    agent_task_env,
    check_calls,
    condition_values,
    deploy,
    iam_actions,
    load_template,
    proxy,
    refs,
    resolve_ifs,
    role_actions,
    run_agent,
    statements,
)
from tests.support.dockerd import DockerEngine
from tests.support.env import FAKE_AWS_ENV, REGION
from tests.support.moto_server import MotoServer
from tests.support.poll import wait_for

#: What AgentWriteMode=queued adds, and nothing else depends on a mode.
QUEUED_ONLY = {"HostTable", "ChangeQueue", "ChangeDeadLetterQueue", "ZoneWriterLogGroup",
               "ZoneWriterRole", "ZoneWriterFunction", "ZoneWriterEventSource"}
QUEUED_OUTPUTS = {"HostTableName", "ChangeQueueUrl", "ChangeDeadLetterQueueUrl",
                  "ZoneWriterFunctionName"}
ROUTE53_WRITE = {"route53:GetHostedZone", "route53:ListResourceRecordSets",
                 "route53:ChangeResourceRecordSets"}
WRITER_ACTIONS = ROUTE53_WRITE | {
    "logs:CreateLogStream", "logs:PutLogEvents",
    "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",
    # the writers' lease item only (condition dynamodb:LeadingKeys)
    "dynamodb:PutItem", "dynamodb:DeleteItem",
    # the event source mapping's poller, with the function's role
    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
    # handing back the hosts an invocation did not finish (SendMessageBatch)
    "sqs:SendMessage"}
HOST = "ip-127-0-0-1"
HOST_A = (f"{HOST}.servicediscovery.internal.", "A")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def props(template: dict[str, Any], logical: str) -> dict[str, Any]:
    return dict(template["Resources"][logical]["Properties"])


__all__ = ["proxy"]  # a fixture

# --- the template --------------------------------------------------------------------------


def test_queued_is_the_default_and_direct_a_parameter(template: dict[str, Any]) -> None:
    mode = template["Parameters"]["AgentWriteMode"]
    assert mode["Default"] == "queued" and sorted(mode["AllowedValues"]) == ["direct", "queued"]
    conditioned = {k: v["Condition"] for k, v in template["Resources"].items()
                   if "Condition" in v}
    # The zone is the stack's own unless it lives in another account (ZoneRoleArn).
    assert conditioned == {**dict.fromkeys(QUEUED_ONLY, "Queued"), "HostedZone": "LocalZone"}
    outputs = {k: v.get("Condition") for k, v in template["Outputs"].items()}
    assert {k for k, c in outputs.items() if c} == QUEUED_OUTPUTS
    assert all(outputs[k] == "Queued" for k in QUEUED_OUTPUTS)
    for value, queued in (("queued", True), ("direct", False)):
        conditions = condition_values(template, {"AgentWriteMode": value})
        assert (conditions["Queued"], conditions["Direct"]) == (queued, not queued)
        active = set(active_resources(template, conditions))
        assert (active & QUEUED_ONLY) == (QUEUED_ONLY if queued else set())


class _RecordingDynamo:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []

    def put_item(self, TableName: str, Item: dict[str, Any], **_conditions: Any) -> None:
        self.items.append(Item)  # boto3's names

    def delete_item(self, TableName: str, Key: dict[str, Any], **_conditions: Any) -> None:
        self.deleted.append(Key)


def test_table_keys_and_ttl_are_what_the_code_writes(template: dict[str, Any]) -> None:
    table = props(template, "HostTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "host", "KeyType": "HASH"},
                                  {"AttributeName": "kind", "KeyType": "RANGE"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "host", "AttributeType": "S"},
                                             {"AttributeName": "kind", "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    # The item the agent's HostStore really puts: the key attributes are strings of the
    # schema's names, and the TTL attribute is a number (DynamoDB ignores any other type).
    client = _RecordingDynamo()
    HostStore(client, "t", clock=lambda: 1000.0).publish(
        Published(HOST, "servicediscovery.internal.", 1, (), True))
    (item,) = client.items
    assert set(item["host"]) == set(item["kind"]) == {"S"}
    assert int(item["expires"]["N"]) > 1000
    # The writers' lease: an item of the same table, with a number in the TTL attribute too
    # (an old lease is removed by TTL; an expired one is taken over at once anyway).
    writer = HostStore(client, "t", clock=lambda: 1000.0)
    assert writer.acquire("w1", 60.0)
    writer.release("w1")
    lease, released = client.items[-1], client.deleted[-1]
    assert lease["host"] == released["host"] == {"S": LEASE_HOST}
    assert lease["kind"] == released["kind"] == {"S": "lease"}
    assert float(lease["expires"]["N"]) == 1060.0


def lease_keys(template: dict[str, Any]) -> list[str]:
    """The partition keys the zone writer may put and delete items under."""
    found = [s for s in statements(template, condition_values(template, {}))
             if s.role == "ZoneWriterRole"
             and {"dynamodb:PutItem", "dynamodb:DeleteItem"} & set(s.actions)]
    (lease,) = found
    assert set(lease.actions) == {"dynamodb:PutItem", "dynamodb:DeleteItem"}
    assert lease.resources == ({"Fn::GetAtt": ["HostTable", "Arn"]},)
    (test,) = lease.condition.items()
    assert test[0] == "ForAllValues:StringEquals" and set(test[1]) == {"dynamodb:LeadingKeys"}
    return list(test[1]["dynamodb:LeadingKeys"])


def test_the_writer_may_put_and_delete_only_the_lease_item(template: dict[str, Any]) -> None:
    """PutItem and DeleteItem on the host table would let the writer overwrite or delete the
    agents' desired states: the role allows them on the lease item's partition key only,
    the very key the code uses."""
    assert lease_keys(template) == [LEASE_HOST]


def test_queue_mapping_and_writer_settings(template: dict[str, Any]) -> None:
    queue, dlq = props(template, "ChangeQueue"), props(template, "ChangeDeadLetterQueue")
    writer, mapping = props(template, "ZoneWriterFunction"), props(template,
                                                                   "ZoneWriterEventSource")
    # AWS: a queue feeding a Lambda mapping keeps messages invisible >= 6 x the timeout.
    assert queue["VisibilityTimeout"] >= 6 * writer["Timeout"] == 1800
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["ChangeDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5}
    # A moved message keeps its first enqueue time: the DLQ must keep messages longer.
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert "RedrivePolicy" not in dlq
    assert mapping["FunctionName"] == {"Ref": "ZoneWriterFunction"}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["ChangeQueue", "Arn"]}
    assert (mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"]) == (10000, 2)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    # The agents start after the mapping and stop before it (stack deletion): the empty
    # states they publish on SIGTERM still reach the writer.
    assert "ZoneWriterEventSource" in refs(template["Resources"]["AgentService"])
    # The writer: the shared code package, outside the VPC (AWS APIs only).
    assert writer["Handler"] == "health_lambda.zone_writer_handler.lambda_handler"
    assert writer["Code"] == {"S3Bucket": {"Ref": "LambdaCodeBucket"},
                              "S3Key": {"Ref": "LambdaCodeKey"}}
    assert writer["Timeout"] == 300 and writer["MemorySize"] >= 512
    assert "VpcConfig" not in writer
    env = writer["Environment"]["Variables"]
    assert env["HOSTED_ZONE_ID"] == {"Fn::If": ["LocalZone", {"Ref": "HostedZone"},
                                                {"Ref": "ZoneId"}]}
    assert env["HOST_TABLE"] == {"Ref": "HostTable"}
    assert env["CHANGE_QUEUE"] == {"Ref": "ChangeQueue"}  # a queue's Ref is its URL
    # The writer's own settings loader accepts the configuration (names and values).
    queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/ecssd-ChangeQueue-X"
    fake = {"HostedZone": "Z0000000000000", "HostTable": "ecssd-hosts", "ChangeQueue": queue_url,
            "ZoneName": "servicediscovery.internal", "ZoneRoleArn": "",
            "ZoneRoleExternalId": ""}
    local_zone = {k: {"Ref": "HostedZone"} if isinstance(v, dict) and "Fn::If" in v else v
                  for k, v in env.items()}
    settings = load_lambda_settings({k: fake[v["Ref"]] if isinstance(v, dict) else v
                                     for k, v in local_zone.items()})
    assert (settings.hosted_zone_id, settings.host_table, settings.change_queue) == (
        "Z0000000000000", "ecssd-hosts", queue_url)
    # The sweep hints the same queue in queued mode, and nothing in direct mode.
    sweep_env = props(template, "SweepFunction")["Environment"]["Variables"]
    for mode, expected in (("queued", {"Ref": "ChangeQueue"}), ("direct", "")):
        (value,) = resolve_ifs(sweep_env["CHANGE_QUEUE_URL"],
                               condition_values(template, {"AgentWriteMode": mode}))
        assert value == expected, mode
    assert SweepSettings.from_env({"HOSTED_ZONE_ID": "Z0000000000000",
                                   "CHANGE_QUEUE_URL": queue_url}).change_queue_url == queue_url


@pytest.mark.parametrize("send_events", ["false", "true"])
def test_each_role_has_exactly_what_its_mode_needs(template: dict[str, Any],
                                                   send_events: str) -> None:
    events = {"events:PutEvents"} if send_events == "true" else set()
    queued = condition_values(template, {"AgentSendEvents": send_events})
    direct = condition_values(template, {"AgentSendEvents": send_events,
                                         "AgentWriteMode": "direct"})
    # Both modes: the drain watch reads this host's container instance status and, during a
    # drain, which of its tasks a service started.
    drain = {"ecs:DescribeContainerInstances", "ecs:DescribeTasks"}
    # Queued: the agent makes no Route 53 request, it publishes (one item, one message).
    assert role_actions(template, "AgentTaskRole", queued) == {
        "dynamodb:PutItem", "sqs:SendMessage"} | events | drain
    assert role_actions(template, "AgentTaskRole", direct) == ROUTE53_WRITE | events | drain
    assert role_actions(template, "ZoneWriterRole", queued) == WRITER_ACTIONS
    # The sweep tells the zone writer which hosts' records it deleted (queued mode only).
    sweep_queued = role_actions(template, "SweepRole", queued)
    assert "sqs:SendMessage" in sweep_queued
    assert sweep_queued - role_actions(template, "SweepRole", direct) == {"sqs:SendMessage"}
    # The writer is given HOSTED_ZONE_ID: no role needs to look zones up by name ("*").
    every = {a for role in ("AgentTaskRole", "ZoneWriterRole", "SweepRole", "TaskEventsRole")
             for a in role_actions(template, role)}
    assert "route53:ListHostedZonesByName" not in every


def _lint(path: Path) -> list[str]:
    exe = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(exe) if exe.exists() else shutil.which("cfn-lint") or "cfn-lint",
           "--format", "json", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    matches = json.loads(proc.stdout or "[]")
    # The exit code is a bit mask of what was found (2 errors, 4 warnings, 8 informational);
    # bit 1 means cfn-lint itself failed.
    assert proc.returncode & 1 == 0, proc.stderr
    return [f"{m['Rule']['Id']} {m['Location']['Path']}: {m['Message']}" for m in matches]


def test_cfn_lint_is_clean_with_direct_as_the_default(tmp_path: Path) -> None:
    """test_cloudformation.py lints the template as it is (queued default); here the other
    default, so the conditions are linted from both sides."""
    text, count = re.subn(r"(\n  AgentWriteMode:\n    Type: String\n    Default: )queued\n",
                          r"\1direct\n", TEMPLATE.read_text())
    assert count == 1
    variant = tmp_path / "quickstart-direct.yaml"
    variant.write_text(text)
    assert _lint(variant) == []
    # The linter does fail here: a visibility timeout below the function timeout is E3505.
    broken = tmp_path / "quickstart-broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("VisibilityTimeout: 1800",
                                                   "VisibilityTimeout: 60"))
    assert any(m.startswith("E3505") for m in _lint(broken))


# --- in moto -------------------------------------------------------------------------------


def test_queued_stack_in_moto(aws: MotoServer, tmp_path: Path) -> None:
    stack = deploy(aws, tmp_path)
    phys, out = stack.physical, stack.outputs
    assert set(phys) >= QUEUED_ONLY
    assert out["AgentWriteMode"] == "queued"
    assert out["HostTableName"] == phys["HostTable"]
    assert out["ChangeQueueUrl"] == phys["ChangeQueue"]

    table = stack.client("dynamodb").describe_table(TableName=out["HostTableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "host", "KeyType": "HASH"},
                                  {"AttributeName": "kind", "KeyType": "RANGE"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    sqs = stack.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=out["ChangeQueueUrl"],
                                          AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=out["ChangeDeadLetterQueueUrl"],
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert attributes["VisibilityTimeout"] == "1800"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5

    lam = stack.client("lambda")
    writer = lam.get_function_configuration(FunctionName=out["ZoneWriterFunctionName"])
    assert writer["Handler"] == "health_lambda.zone_writer_handler.lambda_handler"
    assert (writer["Timeout"], writer["MemorySize"]) == (300, 1024)
    assert writer["Environment"]["Variables"]["HOST_TABLE"] == out["HostTableName"]
    assert writer["Environment"]["Variables"]["HOSTED_ZONE_ID"] == out["HostedZoneId"]
    assert writer["Environment"]["Variables"]["CHANGE_QUEUE"] == out["ChangeQueueUrl"]
    (mapping,) = lam.list_event_source_mappings(
        FunctionName=out["ZoneWriterFunctionName"])["EventSourceMappings"]
    assert mapping["UUID"] == phys["ZoneWriterEventSource"]
    assert mapping["EventSourceArn"] == attributes["QueueArn"]
    assert mapping["FunctionArn"] == writer["FunctionArn"]
    assert (mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"]) == (10000, 2)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}

    env = _agent_env_in_moto(stack)
    assert env["ECSSD_HOST_TABLE"] == out["HostTableName"]
    assert env["ECSSD_CHANGE_QUEUE"] == out["ChangeQueueUrl"]
    assert env["ECSSD_HOSTED_ZONE_ID"] == ""
    assert env == agent_task_env(stack)  # what the agent tests run with


def test_direct_stack_in_moto_has_no_table_queue_or_writer(aws: MotoServer,
                                                           tmp_path: Path) -> None:
    stack = deploy(aws, tmp_path, AgentWriteMode="direct")
    assert not QUEUED_ONLY & set(stack.physical)
    assert not QUEUED_OUTPUTS & set(stack.outputs)
    assert stack.outputs["AgentWriteMode"] == "direct"
    assert stack.client("dynamodb").list_tables()["TableNames"] == []
    # No change queue: only the task-events Lambda's on-failure queue, in both modes.
    (queue,) = stack.client("sqs").list_queues().get("QueueUrls", [])
    assert queue.rsplit("/", 1)[-1] == stack.outputs["TaskEventsFailureQueueUrl"].rsplit("/", 1)[-1]
    lam = stack.client("lambda")
    assert lam.list_event_source_mappings()["EventSourceMappings"] == []
    functions = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert functions == {stack.physical["SweepFunction"], stack.physical["TaskEventsFunction"]}
    env = _agent_env_in_moto(stack)
    assert env["ECSSD_HOSTED_ZONE_ID"] == stack.outputs["HostedZoneId"]
    assert env["ECSSD_HOST_TABLE"] == env["ECSSD_CHANGE_QUEUE"] == ""


def _agent_env_in_moto(stack: Stack) -> dict[str, str]:
    ecs = stack.client("ecs")
    (service,) = ecs.describe_services(cluster=stack.outputs["ClusterName"],
                                       services=[stack.physical["AgentService"]])["services"]
    taskdef = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])[
        "taskDefinition"]
    (container,) = taskdef["containerDefinitions"]
    # moto keeps a number as given (ECS would give "8053"): compare as text.
    return {e["name"]: str(e["value"]) for e in container["environment"]}


# --- least privilege is also enough privilege, in queued mode ------------------------------




def _proxied(service: str, proxy: RecordingProxy) -> Any:
    return boto3.client(service, endpoint_url=proxy.url, region_name=REGION,  # type: ignore[call-overload, unused-ignore]
                        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


def absolute_zone_name(zone_id: str) -> None:
    """moto 5.2 keeps a CloudFormation-created zone's Name as given ("x.internal") where
    Route 53, and moto's own CreateHostedZone, answer with the absolute name ("x.internal.").
    The writer compares the hints' zone with the name GetHostedZone gives, so the moto
    server (in this process) is made to answer as Route 53 does."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.route53.models import route53_backends

    zone = route53_backends[DEFAULT_ACCOUNT_ID]["aws"].get_hosted_zone(zone_id)
    if not zone.name.endswith("."):
        zone.name += "."


def _sqs_event(messages: list[Message], queue_arn: str) -> dict[str, Any]:
    """The event the SQS event source mapping gives the function (documented shape)."""
    return {"Records": [{
        "messageId": m.id, "receiptHandle": m.receipt, "body": m.body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": REGION,
    } for m in messages]}


class _Context:
    """A Lambda context with ``remaining_ms`` left of the invocation."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def check_leading_keys(calls: list[Call], allowed: list[str]) -> None:
    """dynamodb:LeadingKeys, evaluated as IAM does: each PutItem / DeleteItem names an item
    whose partition key is one of ``allowed``."""
    for call in calls:
        if call.action in ("dynamodb:PutItem", "dynamodb:DeleteItem"):
            key = call.params.get("Item") or call.params.get("Key") or {}
            assert key.get("host", {}).get("S") in allowed, call.params


def test_queued_agent_and_zone_writer_need_no_more_than_their_roles_allow(
        aws: MotoServer, proxy: RecordingProxy, tmp_path: Path, docker_engine: DockerEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent CLI publishes (no Route 53 call); the event source mapping's part (receive,
    delete) and the writer handler, configured as the stack configures the function, apply
    the host's records; then the agent's --remove takes them away the same way. Once, another
    writer holds the lease: the handler hands the host back to the queue (CHANGE_QUEUE)."""
    stack = deploy(aws, tmp_path)
    conditions = condition_values(stack.template, stack.parameters)
    zone_id = stack.outputs["HostedZoneId"]
    absolute_zone_name(zone_id)
    route53 = stack.client("route53")
    assert route53.get_hosted_zone(Id=zone_id)["HostedZone"]["Name"] == (
        "servicediscovery.internal.")
    # moto would run the function itself on SendMessage (in a Lambda container pulled from a
    # registry): the mapping is disabled and this test plays its part.
    stack.client("lambda").update_event_source_mapping(
        UUID=stack.physical["ZoneWriterEventSource"], Enabled=False)
    queue_url = stack.outputs["ChangeQueueUrl"]
    queue_arn = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    zone = Route53Zone(route53, find_zone(route53, "", zone_id))
    agent_role = role_actions(stack.template, "AgentTaskRole", conditions)
    writer_role = role_actions(stack.template, "ZoneWriterRole", conditions)
    writer_keys = lease_keys(stack.template)
    table = stack.client("dynamodb")  # not through the proxy: the test's own calls
    lease = {"host": {"S": LEASE_HOST}, "kind": {"S": "lease"}}
    for key, value in _function_env(stack, "ZoneWriterFunction").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)

    def host_records() -> set[tuple[str, str]]:
        return {(r.name, r.type) for r in zone.records()
                if (r.set_identifier or "").startswith(f"ecssd:h:{HOST}")}

    def agent(mode: str) -> None:
        run_agent(stack, docker_engine, proxy.url, mode)
        calls = iam_actions(proxy.take())
        check_calls(calls, agent_role, zone_id, "")
        assert {c.action for c in calls} == {"dynamodb:PutItem", "sqs:SendMessage"}

    def writer() -> None:
        """One round of the mapping: receive, invoke the handler, delete the batch."""
        hints = ChangeQueue(_proxied("sqs", proxy), queue_url)
        messages = wait_for(lambda: hints.receive(wait=0), timeout=10, what="the agent's hint")
        zone_writer_handler.runtime.reset()
        result = zone_writer_handler.lambda_handler(_sqs_event(messages, queue_arn), None)
        assert result == {"batchItemFailures": []}
        hints.delete(messages)
        calls = iam_actions(proxy.take())
        check_calls(calls, writer_role, zone_id, "")
        check_leading_keys(calls, writer_keys)
        assert {"route53:ChangeResourceRecordSets", "dynamodb:BatchGetItem",
                "dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem",
                "sqs:ReceiveMessage", "sqs:DeleteMessage"} <= {c.action for c in calls}

    def busy_writer() -> None:
        """Another writer holds the lease, and this invocation has no time to wait for it:
        the host goes back on the queue, and the mapping deletes the original hint."""
        hints = ChangeQueue(_proxied("sqs", proxy), queue_url)
        messages = wait_for(lambda: hints.receive(wait=0), timeout=10, what="the agent's hint")
        table.put_item(TableName=stack.outputs["HostTableName"], Item={
            **lease, "owner": {"S": "another-writer"}, "expires": {"N": str(time.time() + 600)}})
        zone_writer_handler.runtime.reset()
        half_a_second = _Context(int(0.5 / (1 - zone_writer_handler.FINISH_SHARE) * 1000) + 1)
        result = zone_writer_handler.lambda_handler(_sqs_event(messages, queue_arn),
                                                    half_a_second)
        assert result == {"batchItemFailures": []}
        hints.delete(messages)
        calls = iam_actions(proxy.take())
        check_calls(calls, writer_role, zone_id, "")
        check_leading_keys(calls, writer_keys)
        actions = {c.action for c in calls}
        assert {"dynamodb:PutItem", "sqs:SendMessage"} <= actions  # the lease, the hand-back
        assert "route53:ChangeResourceRecordSets" not in actions
        table.delete_item(TableName=stack.outputs["HostTableName"], Key=lease)

    try:
        agent("--sync")
        assert HOST_A not in host_records()  # the agent wrote nothing to Route 53 itself
        busy_writer()
        assert HOST_A not in host_records()
        writer()  # the hint handed back
        assert HOST_A in host_records()
        items = stack.client("dynamodb").query(
            TableName=stack.outputs["HostTableName"],
            KeyConditionExpression="host = :h", ExpressionAttributeValues={":h": {"S": HOST}},
        )["Items"]
        assert sorted(i["kind"]["S"] for i in items) == ["applied", "desired"]

        agent("--remove")
        writer()
        assert host_records() == set()
        left = aws.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                                "ApproximateNumberOfMessagesNotVisible"])
        assert set(left["Attributes"].values()) == {"0"}, left
    finally:
        zone_writer_handler.runtime.reset()

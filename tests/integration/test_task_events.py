"""The task-events Lambda against a moto server: real boto3 calls over HTTP, events in the
documented shape built from DescribeTasks output, the handler called as Lambda would."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from botocore.stub import Stubber

from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.ecs import EcsReadError
from ecssd_agent.core.model import Routing
from ecssd_agent.events.handle import TaskStateUnknown
from ecssd_agent.events.settings import TaskEventSettings
from health_lambda import task_events
from tests.integration.test_task_events_world import (
    CLUSTER,
    XRAY_GROUP,
    XRAY_NAME,
    Lambda,
    World,
    env,
    fixed_lambda,
    task_id,
    task_name,
    world,
)
from tests.support.env import REGION

__all__ = ["world"]  # the fixture

TIME = "time.sd.internal."
SAMPLE = json.loads((Path(__file__).resolve().parents[1] / "events" /
                     "ecs_task_running_fargate.json").read_text())
WEB = "simple-service.sd.internal."


def time_service(world: World) -> str:
    return world.task_definition("time", [{
        "name": "time", "image": "time:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "environment": env(SERVICE_8080_NAME="time", SERVICE_8080_CHECK_HTTP="/health"),
    }])


def eni_ip(world: World, task: dict) -> str:
    event = world.event(task["taskArn"])
    details = event["detail"]["attachments"][0]["details"]
    return next(d["value"] for d in details if d["name"] == "privateIPv4Address")


# --- service records ---------------------------------------------------------------------

def test_running_registers_an_awsvpc_task(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    task = world.run_fargate("time")
    ip = eni_ip(world, task)

    summary = handler(world.event(task["taskArn"]))

    assert summary["status"] == "ok" and summary["reason"] == "register"
    assert summary["requests"] == handler.change_requests() == 1  # one batch for all records
    assert world.answers(task_name(task), "A") == {ip}
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(task)}"}
    assert world.answers(TIME, "A") == {ip}
    assert {r["SetIdentifier"] for r in world.records()} == {
        f"ecssd:t:{CLUSTER}:{task_id(task)}:", f"ecssd:t:{CLUSTER}:{task_id(task)}:8080/tcp"}


def test_duplicate_running_event_is_a_no_op(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    task = world.run_fargate("time")
    event = world.event(task["taskArn"])
    handler(event)
    before, records = handler.change_requests(), world.records()

    again = handler(event)
    redelivered = handler({**event, "id": "another-delivery"})
    fresh = handler(world.event(task["taskArn"]))

    assert [again["changes"], redelivered["changes"], fresh["changes"]] == [0, 0, 0]
    assert handler.change_requests() == before  # zero ChangeResourceRecordSets
    assert world.records() == records


@pytest.mark.parametrize("draining", [True, False], ids=["desired-stopped", "last-stopped"])
def test_stopped_removes_the_tasks_records(world: World, draining: bool) -> None:
    handler = Lambda(world)
    time_service(world)
    task, other = world.run_fargate("time"), world.run_fargate("time")
    handler(world.event(task["taskArn"]))
    handler(world.event(other["taskArn"]))
    assert len(world.answers(TIME, "SRV")) == 2

    if draining:  # desiredStatus STOPPED while still RUNNING: clients must stop coming
        event = world.event(task["taskArn"], desiredStatus="STOPPED")
    else:
        world.stop(task["taskArn"])
        event = world.event(task["taskArn"])
        assert event["detail"]["lastStatus"] == "STOPPED"
    summary = handler(event)

    assert summary["reason"] == "remove" and summary["changes"] == 3
    assert task_id(task) not in {r["SetIdentifier"].split(":")[3] for r in world.records()}
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(other)}"}  # the other stays
    assert world.answers(TIME, "A") == {eni_ip(world, other)}
    before = handler.change_requests()
    assert handler(event)["changes"] == 0 and handler.change_requests() == before


def test_stale_running_after_stopped_does_not_resurrect(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    task = world.run_fargate("time")
    running = world.event(task["taskArn"])
    handler(running)
    world.stop(task["taskArn"])
    handler(world.event(task["taskArn"]))
    assert world.records() == []
    before = handler.change_requests()

    summary = handler(running)  # delivered late, after the STOPPED one

    assert summary["reason"] == "remove"  # DescribeTasks says STOPPED: act on that
    assert world.records() == [] and handler.change_requests() == before


def test_running_event_processed_after_the_task_stopped_removes_instead(world: World) -> None:
    """The STOPPED event is not handled yet (or was lost): the late RUNNING one cleans up."""
    handler = Lambda(world)
    time_service(world)
    task = world.run_fargate("time")
    running = world.event(task["taskArn"])
    handler(running)
    world.stop(task["taskArn"])

    summary = handler(running)

    assert summary["reason"] == "remove" and summary["changes"] == 3
    assert world.records() == []


def test_label_based_service_is_a_weighted_a_record_per_task(world: World) -> None:
    handler = Lambda(world)
    world.task_definition("simple", [{
        "name": "app", "image": "app:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
        "dockerLabels": {"discovery.service.name": "simple-service"},
    }])
    tasks = [world.run_fargate("simple") for _ in range(2)]
    for task in tasks:
        handler(world.event(task["taskArn"]))

    a_sets = [r for r in world.records() if r["Name"] == WEB and r["Type"] == "A"]
    assert len(a_sets) == 2 and {r["Weight"] for r in a_sets} == {1}
    assert world.answers(WEB, "A") == {eni_ip(world, t) for t in tasks}
    assert world.answers(WEB, "SRV") == {f"1 1 80 {task_name(t)}" for t in tasks}


def test_env_based_services_in_multivalue_mode(world: World) -> None:
    handler = Lambda(world, routing=Routing.MULTIVALUE)
    world.task_definition("calc", [{
        "name": "calc", "image": "calc:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 7000, "protocol": "tcp"}],
        "environment": env(SERVICE_7000_NAME="_calc._tcp"),
    }])
    task = world.run_fargate("calc")
    handler(world.event(task["taskArn"]))

    calc = [r for r in world.records() if r["Name"] == "_calc._tcp.sd.internal."]
    assert [(r["Type"], r["ResourceRecords"][0]["Value"], r.get("MultiValueAnswer")) for r in calc] == [
        ("SRV", f"1 1 7000 {task_name(task)}", True)]  # no A record at an SRV-style name


def test_bridge_task_on_ec2_uses_the_host_ip_and_bound_port(world: World) -> None:
    handler = Lambda(world)
    world.container_instance("127.0.0.2")
    world.task_definition("web", [{
        "name": "web", "image": "web:1", "memory": 128,
        "portMappings": [{"containerPort": 8081, "hostPort": 0, "protocol": "tcp"}],
        "environment": env(SERVICE_8081_NAME="web"),
    }], mode="bridge")
    task = world.start_on("127.0.0.2", "web")
    bindings = {"web": [{"bindIP": "0.0.0.0", "containerPort": 8081, "hostPort": 32771,
                         "protocol": "tcp"}]}

    handler(world.event(task["taskArn"], bindings))

    assert world.answers("web.sd.internal.", "SRV") == {f"1 1 32771 {task_name(task)}"}
    assert world.answers(task_name(task), "A") == {"127.0.0.2"}  # not the agent's host record
    assert world.answers("web.sd.internal.", "A") == set()


def test_bridge_records_can_be_left_to_the_host_agent(world: World) -> None:
    handler = Lambda(world, bridge_records=False)
    world.container_instance("127.0.0.2")
    world.task_definition("web", [{"name": "web", "image": "web:1", "memory": 128,
                                   "environment": env(SERVICE_8081_NAME="web")}], mode="bridge")
    task = world.start_on("127.0.0.2", "web")
    summary = handler(world.event(task["taskArn"]))
    assert summary["status"] == "ignored" and world.records() == []
    assert handler.clients.stats.attempts(service="route53") == 0


# --- the fixed record --------------------------------------------------------------------

def xray_daemon(world: World) -> None:
    world.task_definition("xray-daemon", [{
        "name": "xray-daemon", "image": "public.ecr.aws/xray/aws-xray-daemon", "memory": 256,
        "cpu": 128,
        "portMappings": [{"containerPort": 2000, "hostPort": 2000, "protocol": "udp"},
                         {"containerPort": 2000, "hostPort": 2000, "protocol": "tcp"}],
    }], mode="bridge")


def test_fixed_record_follows_a_replaced_xray_daemon(world: World) -> None:
    handler = fixed_lambda(world, service_records=False)
    world.container_instance("127.0.0.2")
    world.container_instance("127.0.0.3")
    xray_daemon(world)
    old = world.start_on("127.0.0.2", "xray-daemon", group=XRAY_GROUP)
    handler(world.event(old["taskArn"]))
    assert world.answers(XRAY_NAME, "A") == {"127.0.0.2"}
    assert world.owners(XRAY_NAME, "A") == {task_id(old)}

    new = world.start_on("127.0.0.3", "xray-daemon", group=XRAY_GROUP)  # the replacement
    handler(world.event(new["taskArn"]))
    assert world.answers(XRAY_NAME, "A") == {"127.0.0.3"}
    assert world.owners(XRAY_NAME, "A") == {task_id(new)}  # exactly one record set
    assert len(world.records()) == 1

    world.stop(old["taskArn"])
    before = handler.change_requests()
    for event in (world.event(old["taskArn"], desiredStatus="STOPPED", lastStatus="RUNNING"),
                  world.event(old["taskArn"])):
        assert handler(event)["changes"] == 0  # the newer task owns it: untouched
    assert handler.change_requests() == before
    assert world.answers(XRAY_NAME, "A") == {"127.0.0.3"}

    world.stop(new["taskArn"])
    handler(world.event(new["taskArn"]))
    assert world.records() == []  # no daemon left: no record pointing at a dead one


def test_fixed_record_is_repointed_when_its_task_stops_and_another_runs(world: World) -> None:
    handler = fixed_lambda(world, service_records=False)
    world.container_instance("127.0.0.2")
    world.container_instance("127.0.0.3")
    xray_daemon(world)
    first = world.start_on("127.0.0.2", "xray-daemon", group=XRAY_GROUP)
    second = world.start_on("127.0.0.3", "xray-daemon", group=XRAY_GROUP)
    # Only the second task's RUNNING event: the successor is found through ECS, not from
    # an earlier event. (Also, moto 5.2 refuses to CREATE a record set identical to one it
    # created and deleted before while any record sorts after it; Route 53 does not.)
    handler(world.event(second["taskArn"]))
    assert world.owners(XRAY_NAME, "A") == {task_id(second)}

    world.stop(second["taskArn"])
    summary = handler(world.event(second["taskArn"]))

    assert summary["requests"] == 1  # delete and create in one atomic batch
    assert world.answers(XRAY_NAME, "A") == {"127.0.0.2"}
    assert world.owners(XRAY_NAME, "A") == {task_id(first)}


def test_fixed_record_for_an_awsvpc_task_uses_its_eni_ip_and_other_groups_are_ignored(
        world: World) -> None:
    handler = fixed_lambda(world, service_records=False)
    world.task_definition("xray-fargate", [{"name": "d", "image": "xray", "cpu": 256, "memory": 512}])
    other = world.run_fargate("xray-fargate", group="service:something-else")
    summary = handler(world.event(other["taskArn"]))
    assert summary["status"] == "ignored" and summary["reason"] == "other group"

    task = world.run_fargate("xray-fargate", group=XRAY_GROUP)
    handler(world.event(task["taskArn"]))
    assert world.answers(XRAY_NAME, "A") == {eni_ip(world, task)}


def test_fixed_record_and_service_records_together(world: World) -> None:
    handler = fixed_lambda(world)
    world.container_instance("127.0.0.2")
    world.task_definition("xray-daemon", [{
        "name": "xray-daemon", "image": "xray", "memory": 256,
        "portMappings": [{"containerPort": 2000, "hostPort": 2000, "protocol": "udp"}],
        "environment": env(SERVICE_2000_NAME="_xray._udp"),
    }], mode="bridge")
    task = world.start_on("127.0.0.2", "xray-daemon", group=XRAY_GROUP)
    bindings = {"xray-daemon": [{"containerPort": 2000, "hostPort": 2000, "protocol": "udp"}]}

    summary = handler(world.event(task["taskArn"], bindings))

    assert summary["requests"] == 1
    assert world.answers(XRAY_NAME, "A") == {"127.0.0.2"}
    assert world.answers("_xray._udp.sd.internal.", "SRV") == {f"1 1 2000 {task_name(task)}"}
    world.stop(task["taskArn"])
    handler(world.event(task["taskArn"]))
    assert world.records() == []


# --- what is ignored, what raises --------------------------------------------------------

@pytest.mark.parametrize("event", [
    None,
    "ECS Task State Change",
    {"source": "aws.ecs", "detail-type": "ECS Task State Change"},
    {"source": "aws.ecs", "detail-type": "ECS Container Instance State Change", "detail": {}},
    {"source": "aws.ecs", "detail-type": "ECS Task State Change",
     "detail": {"taskArn": "arn:aws:ecs:us-east-1:1:task/apps/abc", "lastStatus": "RUNNING"}},
    *({**SAMPLE, "detail": {**SAMPLE["detail"], key: value}} for key, value in (
        ("containers", 5), ("containers", "FargateApp"), ("containers", [{"name": "a"}, 3]),
        ("containers", [{"name": "a", "networkBindings": 80}]), ("attachments", {"eni": 1}),
        ("attachments", [{"type": "eni", "details": [7]}]), ("overrides", "none"),
        ("overrides", {"containerOverrides": {"name": "a"}}), ("startedAt", []),
        ("version", 4.5))),
])
def test_malformed_events_are_logged_and_ignored(event: object, caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One logged refusal naming what is wrong, no traceback, not a single AWS request."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    clients = Clients(region=REGION)
    task_events.runtime.set(task_events.build(TaskEventSettings(hosted_zone_id="Z0NOTUSED"), clients))
    try:
        summary = task_events.lambda_handler(event, None)
    finally:
        task_events.runtime.reset()
    assert summary["status"] == "ignored" and summary["reason"].startswith("malformed")
    (refusal,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "ignored an event" in refusal.getMessage() and refusal.exc_info is None
    assert summary["reason"] == f"malformed: {refusal.getMessage().split(': ', 1)[1]}"
    assert clients.stats.snapshot() == {}  # not a single AWS request


def test_a_malformed_event_leaves_every_record_alone(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    registered, other = world.run_fargate("time"), world.run_fargate("time")
    handler(world.event(registered["taskArn"]))
    records = world.records()
    before = handler.clients.stats.snapshot()

    for broken in ({"containers": [{"name": "time"}, "sidecar"]}, {"desiredStatus": 0},
                   {"attachments": 7}):
        for task in (registered, other):
            summary = handler(world.event(task["taskArn"], **broken))
            assert summary["status"] == "ignored", summary
    assert world.records() == records and handler.clients.stats.snapshot() == before

    handler(world.event(other["taskArn"]))  # its next good event registers it as usual
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(t)}" for t in (registered, other)}


def test_other_clusters_and_pending_tasks_are_ignored(world: World) -> None:
    handler = Lambda(world, clusters=frozenset({"elsewhere"}))
    time_service(world)
    task = world.run_fargate("time")
    assert handler(world.event(task["taskArn"]))["reason"] == "other cluster"
    handler = Lambda(world)
    assert handler(world.event(task["taskArn"], lastStatus="PENDING"))["reason"] == "task is PENDING"
    assert handler.clients.stats.snapshot() == {} and world.records() == []


def test_an_aws_error_raises_so_lambda_retries(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    task = world.run_fargate("time")
    event = world.event(task["taskArn"])
    event["detail"]["clusterArn"] = "arn:aws:ecs:us-east-1:123456789012:cluster/no-such-cluster"
    with pytest.raises(EcsReadError):
        handler(event)
    assert world.records() == []


def test_dry_run_changes_nothing(world: World) -> None:
    handler = Lambda(world, dry_run=True)
    time_service(world)
    task = world.run_fargate("time")
    summary = handler(world.event(task["taskArn"]))
    assert summary["changes"] == 3 and summary["requests"] == 0
    assert world.records() == [] and handler.change_requests() == 0


def test_a_task_declaring_nothing_costs_no_route53_request(world: World) -> None:
    handler = Lambda(world)
    world.task_definition("plain", [{"name": "plain", "image": "plain:1", "cpu": 256, "memory": 512}])
    task = world.run_fargate("plain")
    for event in (world.event(task["taskArn"]), world.event(task["taskArn"], desiredStatus="STOPPED")):
        assert handler(event)["reason"] == "no services declared"
    assert handler.clients.stats.attempts(service="route53") == 0
    assert handler.clients.stats.attempts("DescribeTaskDefinition") == 1  # cached by ARN


# --- what DescribeTasks says decides (a stubbed ECS: moto has no task versions) ------------

def stubbed_describe(handler: Lambda, event: dict, **answer: object) -> Stubber:
    stub = Stubber(handler.clients.client("ecs"))
    stub.add_response("describe_tasks", answer,
                      {"cluster": CLUSTER, "tasks": [event["detail"]["taskArn"]]})
    stub.activate()
    return stub


def test_a_describe_lagging_behind_the_event_raises_for_a_retry(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    event = world.event(world.run_fargate("time")["taskArn"], version=4)
    detail = event["detail"]
    behind = {"taskArn": detail["taskArn"], "clusterArn": detail["clusterArn"],
              "lastStatus": "PENDING", "desiredStatus": "RUNNING", "version": 3}
    with stubbed_describe(handler, event, tasks=[behind], failures=[]) as stub:
        with pytest.raises(TaskStateUnknown, match="version 3, older than the event's 4"):
            handler(event)
        stub.assert_no_pending_responses()
    assert world.records() == []


def test_a_task_ecs_no_longer_knows_is_left_alone(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    event = world.event(world.run_fargate("time")["taskArn"])
    missing = [{"arn": event["detail"]["taskArn"], "reason": "MISSING"}]
    with stubbed_describe(handler, event, tasks=[], failures=missing):
        assert handler(event)["reason"] == "task is gone"
    assert world.records() == [] and handler.clients.stats.attempts(service="route53") == 0

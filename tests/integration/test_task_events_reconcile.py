"""The task-events Lambda's periodic reconcile against a moto server: the function invoked by
its EventBridge schedule gives RUNNING tasks whose events were lost their records, in one
change request for many tasks, deletes only what the health gate withdraws from tasks it has
just seen running, never brings back the records of a task that stopped while it ran, and
changes nothing when run again."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.ecs import DESCRIBE_BATCH
from ecssd_agent.events.handle import TaskEvents
from ecssd_agent.events.reconcile import ReconcileIncomplete
from ecssd_agent.events.settings import TaskEventSettings
from health_lambda import task_events
from tests.integration.test_task_events_world import (
    CLUSTER,
    XRAY_GROUP,
    XRAY_NAME,
    ZONE,
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

TIME = f"time.{ZONE}"


def schedule(**detail: str) -> dict[str, Any]:
    """What an EventBridge schedule rule sends its target (the health follow-up's rule sends
    ``detail`` ``{"reconcile": "health"}`` as its constant input)."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-01-01T00:00:00Z",
            "region": REGION, "detail": detail,
            "resources": [f"arn:aws:events:{REGION}:123456789012:rule/task-reconcile"]}


def time_service(world: World) -> None:
    world.task_definition("time", [{
        "name": "time", "image": "time:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "environment": env(SERVICE_8080_NAME="time"),
    }])


def run_many(world: World, family: str, count: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    while len(tasks) < count:
        tasks += world.ecs.run_task(
            cluster=CLUSTER, taskDefinition=family, launchType="FARGATE",
            count=min(10, count - len(tasks)),  # RunTask's limit
            networkConfiguration={"awsvpcConfiguration": {"subnets": [world.subnet],
                                                          "securityGroups": []}},
        )["tasks"]
    return tasks


def requests(handler: Lambda, operation: str) -> int:
    return handler.clients.stats.attempts(operation)


def test_running_tasks_whose_events_were_lost_get_their_records(world: World) -> None:
    handler = Lambda(world)
    time_service(world)
    world.task_definition("plain", [{"name": "plain", "image": "p:1", "cpu": 256, "memory": 512}])
    world.container_instance("127.0.0.2")
    world.task_definition("hostweb", [{
        "name": "web", "image": "web:1", "memory": 128,
        "portMappings": [{"containerPort": 8081, "hostPort": 8081, "protocol": "tcp"}],
        "environment": env(SERVICE_8081_NAME="hostweb"),
    }], mode="host")
    world.task_definition("clock", [{
        "name": "clock", "image": "time:1", "cpu": 256, "memory": 512,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "environment": env(SERVICE_8080_NAME="clock"),
    }])
    seen = world.run_fargate("time")
    handler(world.event(seen["taskArn"]))  # this one's event arrived
    seen_records = world.records()
    # Theirs were all lost: more than one DescribeTasks call's worth, over two services (Route
    # 53 takes at most 100 weighted record sets of one name and type).
    lost_time = run_many(world, "time", 50)
    lost_clock = run_many(world, "clock", DESCRIBE_BATCH + 5 - 50)
    lost = [*lost_time, *lost_clock]
    world.run_fargate("plain")  # declares nothing: no records, no change
    on_host = world.start_on("127.0.0.2", "hostweb")
    before = handler.clients.stats.snapshot()

    summary = handler(schedule())

    assert summary["status"] == "ok" and summary["reason"] == "reconcile", summary
    assert summary["running"] == len(lost) + 3 and summary["with_records"] == len(lost) + 2
    assert summary["skipped"] == [] and summary["errors"] == []
    assert set(summary["actions"]) == {"CREATE"}  # only what was missing
    # 105 tasks x 3 record sets + the host-mode task's 3: one change request for them all.
    assert summary["changes"] == 3 * (len(lost) + 1) and summary["requests"] == 1
    made = {op: requests(handler, op) - sum(n for (_, o, outcome), n in before.items()
                                            if o == op and outcome == "attempt")
            for op in ("ChangeResourceRecordSets", "DescribeTasks", "DescribeTaskDefinition",
                       "DescribeContainerInstances")}
    assert made == {"ChangeResourceRecordSets": 1,
                    # 100 a call: to list them, then the 106 to register, just before the
                    # write and once more after it
                    "DescribeTasks": 2 + 2 + 2,
                    "DescribeTaskDefinition": 3,  # clock, plain, hostweb; time's was cached
                    "DescribeContainerInstances": 1}
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(t)}" for t in [seen, *lost_time]}
    assert world.answers(f"clock.{ZONE}", "SRV") == {f"1 1 8080 {task_name(t)}" for t in lost_clock}
    assert len(world.answers(TIME, "A")) == len(lost_time) + 1  # one weighted set per task's ENI
    assert world.answers(task_name(on_host), "A") == {"127.0.0.2"}
    assert world.answers(f"hostweb.{ZONE}", "SRV") == {f"1 1 8081 {task_name(on_host)}"}
    assert all(r in world.records() for r in seen_records)  # untouched

    records = world.records()
    changes_before = requests(handler, "ChangeResourceRecordSets")
    again = handler(schedule())
    assert again["changes"] == 0 and again["requests"] == 0
    assert requests(handler, "ChangeResourceRecordSets") == changes_before  # zero requests
    assert world.records() == records


def test_records_of_tasks_it_does_not_see_running_are_left_to_the_sweep(world: World) -> None:
    """Records of a task whose STOPPED event was lost stay: removing them is the sweep's call
    (it knows the task is gone). Foreign records are not looked at."""
    handler = Lambda(world)
    time_service(world)
    stopped, running = world.run_fargate("time"), world.run_fargate("time")
    handler(world.event(stopped["taskArn"]))
    world.stop(stopped["taskArn"])  # its STOPPED event is lost
    hand_made = {"Name": TIME, "Type": "SRV", "TTL": 60, "SetIdentifier": "hand-made",
                 "Weight": 1, "ResourceRecords": [{"Value": "1 1 9 somewhere.example."}]}
    world.route53.change_resource_record_sets(HostedZoneId=world.zone_id, ChangeBatch={
        "Changes": [{"Action": "CREATE", "ResourceRecordSet": hand_made}]})

    summary = handler(schedule())

    assert summary["running"] == 1 and summary["changes"] == 3
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(t)}" for t in (stopped, running)}
    listed = world.route53.list_resource_record_sets(HostedZoneId=world.zone_id)
    assert hand_made in listed["ResourceRecordSets"]


def test_a_cluster_that_cannot_be_read_deletes_nothing_and_fails_the_run(world: World) -> None:
    handler = Lambda(world, clusters=("no-such-cluster", CLUSTER))
    time_service(world)
    kept = world.run_fargate("time")
    handler(world.event(kept["taskArn"]))
    world.stop(kept["taskArn"])  # gone, but a reconcile is no evidence for anything
    lost = world.run_fargate("time")

    with pytest.raises(ReconcileIncomplete, match="no-such-cluster"):
        handler(schedule())

    # The cluster that could be read was reconciled; nothing anywhere was deleted.
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(t)}" for t in (kept, lost)}


def test_a_task_whose_records_route53_refuses_does_not_keep_the_others_out(world: World) -> None:
    """Route 53 refuses every batch holding one task's records (a record set someone made by
    hand conflicts with them): the batch of all tasks fails, so the tasks are applied one by
    one; the others get their records, the refused one fails the run."""
    handler = Lambda(world)
    time_service(world)
    poisoned, *others = run_many(world, "time", 3)
    route53 = handler.clients.client("route53")
    refused: list[int] = []

    def refuse(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if task_id(poisoned).encode() not in params["body"]:
            return None  # sent to the moto server as usual
        refused.append(1)
        message = (f"RRSet of type A with DNS name {TIME} is not permitted because a "
                   f"conflicting RRSet of type CNAME with the same DNS name already exists")
        return (AWSResponse("", 400, {}, None),
                {"Error": {"Code": "InvalidChangeBatch", "Message": message},
                 "ResponseMetadata": {"HTTPStatusCode": 400}})

    route53.meta.events.register("before-call.route53.ChangeResourceRecordSets", refuse)

    with pytest.raises(ReconcileIncomplete, match=f"task {task_id(poisoned)}"):
        handler(schedule())

    assert len(refused) == 3 + 3  # all tasks' batch, 3 tries; then its own, 3 tries
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(t)}" for t in others}
    assert task_id(poisoned) not in {r["SetIdentifier"].split(":")[3] for r in world.records()}


def test_a_missing_fixed_name_points_at_the_newest_running_task_of_its_group(
        world: World) -> None:
    handler = fixed_lambda(world, service_records=False)
    world.container_instance("127.0.0.2")
    world.container_instance("127.0.0.3")
    world.task_definition("xray-daemon", [{"name": "xray-daemon", "image": "xray", "memory": 256,
                                           "cpu": 128}], mode="bridge")
    world.start_on("127.0.0.2", "xray-daemon", group="service:something-else")
    world.start_on("127.0.0.3", "xray-daemon", group=XRAY_GROUP)  # its RUNNING event is lost

    summary = handler(schedule())

    assert summary["changes"] == summary["requests"] == 1, summary
    assert world.answers(XRAY_NAME, "A") == {"127.0.0.3"}
    again = handler(schedule())
    assert again["changes"] == 0 and again["requests"] == 0

    # A name someone holds is the event path's: a newer daemon whose event is lost too does
    # not take it over here (the one holding it still runs and serves).
    world.start_on("127.0.0.2", "xray-daemon", group=XRAY_GROUP)
    assert handler(schedule())["changes"] == 0
    assert world.answers(XRAY_NAME, "A") == {"127.0.0.3"}


# --- racing the events: what stopped meanwhile keeps nothing ------------------------------

def stopped_elsewhere(world: World, task: dict[str, Any]) -> dict[str, Any]:
    """ECS stops the task and another execution environment of the Lambda handles its
    STOPPED event (its own runtime and clients)."""
    world.stop(task["taskArn"])
    other = TaskEvents(task_events.build(TaskEventSettings(hosted_zone_id=world.zone_id),
                                         Clients(region=REGION)))
    return other.handle(world.event(task["taskArn"]))


def once(client: Any, event_name: str, action: Any) -> list[Any]:
    """Run ``action`` the first time ``client`` emits ``event_name``; returns what it gave."""
    done: list[Any] = []

    def hook(**_: Any) -> None:
        if not done:
            done.append(action())

    client.meta.events.register(event_name, hook)
    return done


def test_a_task_stopped_between_the_listing_and_the_zone_read_gets_nothing_back(
        world: World) -> None:
    """The reconcile lists the task RUNNING; before it reads the zone, the task stops and its
    STOPPED event removes its records. What the reconcile then finds missing must not come
    back: it asks ECS again just before it writes."""
    handler = Lambda(world)
    time_service(world)
    racing, steady = world.run_fargate("time"), world.run_fargate("time")
    for task in (racing, steady):
        handler(world.event(task["taskArn"]))
    route53 = handler.clients.client("route53")
    stop = once(route53, "before-call.route53.ListResourceRecordSets",
                lambda: stopped_elsewhere(world, racing))

    summary = handler(schedule())

    assert stop and stop[0]["reason"] == "remove" and stop[0]["changes"] == 3
    assert summary["changes"] == 0, summary
    assert world.answers(TIME, "SRV") == {f"1 1 8080 {task_name(steady)}"}
    assert task_id(racing) not in {r["SetIdentifier"].split(":")[3] for r in world.records()}


def test_a_task_stopped_just_before_the_write_has_it_taken_back(world: World) -> None:
    """The task's RUNNING event was lost; the reconcile plans its records and checks it once
    more; between that check and the write the task stops, and its STOPPED event finds
    nothing to remove yet. The check after the write takes the records back."""
    handler = Lambda(world)
    time_service(world)
    racing = world.run_fargate("time")  # its RUNNING event is lost
    route53 = handler.clients.client("route53")
    stop = once(route53, "before-call.route53.ChangeResourceRecordSets",
                lambda: stopped_elsewhere(world, racing))

    summary = handler(schedule())

    assert stop and stop[0]["changes"] == 0  # nothing of it was in the zone yet
    assert summary["actions"] == ["CREATE"] * 3 + ["DELETE"] * 3, summary
    assert world.records() == []

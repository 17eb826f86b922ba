"""The agent daemon end to end: the real ``ecssd-agent`` process, a real Docker engine, Route 53
and EventBridge served by a moto server over HTTP. Every wait is a bounded poll."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

from tests.integration.daemon_world import (
    HOST,
    ZONE,
    AgentProcess,
    FakeEcsAgent,
    Zone,
    agents,
    ecs_agent,
    service_env,
    start_agent,
    zone,
)
from tests.support.images import Containers, host_port
from tests.support.imds import FakeImds
from tests.support.poll import wait_for

OTHER, OTHER_IP = "ip-127-0-0-9", "127.0.0.9"
TARGET = f"{HOST}.{ZONE}."
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef0123456789abcdef"
__all__ = ["agents", "ecs_agent", "zone"]  # fixtures


def srv_port(zone: Zone, container_id: str) -> int | None:
    value = zone.srv(HOST).get(container_id[:12])
    return int(value.split()[2]) if value else None


def test_run_and_stop_register_and_deregister(aws: Any, zone: Zone, docker_engine: Any,
                                              containers: Containers,
                                              agents: list[AgentProcess]) -> None:
    agent = start_agent(agents, aws, docker_engine)
    assert set(zone.owned(HOST)) == {f"ecssd:h:{HOST}"}  # the host's A record at startup
    web = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
    port = host_port(docker_engine, web)
    wait_for(lambda: srv_port(zone, web) == port, timeout=15, what="web's SRV record")
    assert zone.srv(HOST)[web[:12]] == f"1 1 {port} {TARGET}"
    docker_engine.cli("stop", "-t", "1", web)
    wait_for(lambda: web[:12] not in zone.srv(HOST), timeout=15, what="web's record to go")
    assert agent.alive()


def test_stop_deregisters_before_the_container_exits(aws: Any, zone: Zone, docker_engine: Any,
                                                     containers: Containers,
                                                     agents: list[AgentProcess]) -> None:
    start_agent(agents, aws, docker_engine)
    # Drains for 5 s after SIGTERM, as a web server finishing its requests would.
    slow = containers.run(env=service_env("slow"), ports=["127.0.0.1::8081"], cmd=[
        "sh", "-c", 'trap "sleep 5; exit 0" TERM; httpd -f -p 8081 -h /www & wait'])
    wait_for(lambda: slow[:12] in zone.srv(HOST), timeout=15, what="slow's record")
    stopper = threading.Thread(target=docker_engine.cli, args=("stop", "-t", "20", slow))
    stopper.start()
    try:
        wait_for(lambda: slow[:12] not in zone.srv(HOST), timeout=4,
                 what="the record to go while the container drains")
        state = docker_engine.cli("inspect", "-f", "{{.State.Running}}", slow).stdout.strip()
        assert state == "true", "the record should be gone before the container exits"
    finally:
        stopper.join(30)


def test_a_container_that_exits_at_once_leaves_no_record(aws: Any, zone: Zone,
                                                          docker_engine: Any,
                                                          containers: Containers,
                                                          agents: list[AgentProcess]) -> None:
    agent = start_agent(agents, aws, docker_engine)
    flash = containers.run(env=service_env("flash"), ports=["127.0.0.1::8081"],
                           cmd=["sh", "-c", "exit 1"])
    docker_engine.cli("wait", flash)
    # Events are handled in order: once a container started after it is registered, the
    # flash container's start and die have been handled too.
    marker = containers.run(env=service_env("marker"), ports=["127.0.0.1::8081"])
    wait_for(lambda: marker[:12] in zone.srv(HOST), timeout=15, what="the marker's record")
    assert flash[:12] not in zone.srv(HOST)
    assert not [r for r in zone.listing() if r["Name"].startswith("flash.")]
    assert agent.alive()


def test_agent_killed_then_restarted_converges(aws: Any, zone: Zone, docker_engine: Any,
                                               containers: Containers,
                                               agents: list[AgentProcess]) -> None:
    agent = start_agent(agents, aws, docker_engine)
    old = containers.run(env=service_env("old"), ports=["127.0.0.1::8081"])
    wait_for(lambda: old[:12] in zone.srv(HOST), timeout=15, what="old's record")
    agent.signal(signal.SIGKILL)
    agent.wait(timeout=10)
    docker_engine.cli("stop", "-t", "1", old)  # changes nobody sees happen
    new = containers.run(env=service_env("new"), ports=["127.0.0.1::8081"])
    start_agent(agents, aws, docker_engine)
    mine = {old[:12], new[:12]}  # (the engine may be shared: look at this test's containers)
    wait_for(lambda: set(zone.srv(HOST)) & mine == {new[:12]}, timeout=15,
             what="the zone to hold new's record and not old's")
    assert srv_port(zone, new) == host_port(docker_engine, new)
    records = [ident for ident in zone.owned(HOST) if ident.count(":") < 3
               or ident.split(":")[3] in mine]
    assert len(records) == 2  # the A record + new's SRV: no duplicates


def test_resync_recreates_a_record_deleted_by_hand(aws: Any, zone: Zone, docker_engine: Any,
                                                   containers: Containers,
                                                   agents: list[AgentProcess]) -> None:
    agent = start_agent(agents, aws, docker_engine, "--resync", "2")
    web = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=15, what="web's record")
    record = next(r for r in zone.owned(HOST).values() if r["Type"] == "SRV")
    lists = agent.requests_sent("ListResourceRecordSets")
    zone.delete_records([record])
    assert web[:12] not in zone.srv(HOST)
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=20, what="the resync to repair it")
    assert agent.requests_sent("ListResourceRecordSets") > lists  # a resync lists the zone


def test_sigterm_with_deregister_on_exit_removes_this_hosts_records_only(
        aws: Any, zone: Zone, docker_engine: Any, containers: Containers,
        agents: list[AgentProcess]) -> None:
    foreign = {"Name": f"www.{ZONE}.", "Type": "A", "TTL": 300,
               "ResourceRecords": [{"Value": "10.1.1.1"}]}
    theirs = [
        {"Name": f"{OTHER}.{ZONE}.", "Type": "A", "TTL": 0, "SetIdentifier": f"ecssd:h:{OTHER}",
         "Weight": 1, "ResourceRecords": [{"Value": OTHER_IP}]},
        {"Name": f"web.{ZONE}.", "Type": "SRV", "TTL": 0, "Weight": 1,
         "SetIdentifier": f"ecssd:h:{OTHER}:aaaaaaaaaaaa:8081/tcp::",
         "ResourceRecords": [{"Value": f"1 1 31000 {OTHER}.{ZONE}."}]},
    ]
    zone.create_records([foreign, *theirs])
    # the host is leaving: Auto Scaling is terminating it
    imds = FakeImds({"meta-data/autoscaling/target-lifecycle-state": "Terminated"})
    env = {k: v for k, v in aws.env().items() if k != "AWS_EC2_METADATA_DISABLED"}
    try:
        agent = start_agent(agents, aws, docker_engine, "--deregister-on-exit",
                            "--imds-endpoint", imds.url, env=env)
        web = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
        wait_for(lambda: web[:12] in zone.srv(HOST), timeout=15, what="web's record")
        stopped = time.monotonic()
        agent.signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        elapsed = time.monotonic() - stopped
    finally:
        imds.close()
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert zone.owned(HOST) == {}
    left = {(r["Name"], r.get("SetIdentifier")) for r in zone.listing()}
    assert left == {(foreign["Name"], None), *((r["Name"], r["SetIdentifier"]) for r in theirs)}
    assert "deregistered on exit" in agent.log()


def test_sigterm_without_deregistration_keeps_the_records(aws: Any, zone: Zone,
                                                          docker_engine: Any,
                                                          containers: Containers,
                                                          agents: list[AgentProcess]) -> None:
    agent = start_agent(agents, aws, docker_engine)
    web = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=15, what="web's record")
    agent.signal(signal.SIGINT)
    assert agent.wait(timeout=10) == 0
    assert web[:12] in zone.srv(HOST)  # a restart of the agent must not blink the records


# --- EventBridge ---------------------------------------------------------------------------

def test_task_events_reach_eventbridge(aws: Any, zone: Zone, docker_engine: Any,
                                       containers: Containers, agents: list[AgentProcess],
                                       ecs_agent: FakeEcsAgent) -> None:
    sqs = aws.client("sqs")
    queue = sqs.create_queue(QueueName="task-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    events = aws.client("events")
    events.put_rule(Name="ecssd-tasks", EventPattern=json.dumps(
        {"source": ["awslabs.ecs.container"]}))
    events.put_targets(Rule="ecssd-tasks", Targets=[{"Id": "queue", "Arn": queue_arn}])
    start_agent(agents, aws, docker_engine, "--cw-send-events", "--ecs-agent-url", ecs_agent.url)

    plain = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
    labelled = containers.run(env=service_env("api"), ports=["127.0.0.1::8081"],
                              labels={"com.amazonaws.ecs.task-arn": TASK_ARN,
                                      "com.amazonaws.ecs.cluster": "prod"})
    wait_for(lambda: {plain[:12], labelled[:12]} <= set(zone.srv(HOST)), timeout=15,
             what="both records")
    docker_engine.cli("stop", "-t", "1", plain, labelled)
    received: list[dict[str, Any]] = []

    def four_events() -> bool:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get(
                "Messages", []):
            event = json.loads(message["Body"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            if event["detail"]["dockerId"] in (plain, labelled):  # the engine may be shared
                received.append(event)
        return len(received) >= 4

    wait_for(four_events, timeout=30, what="Task Started/Stopped for both containers")
    got = {(e["detail-type"], e["detail"]["dockerId"], e["detail"]["TaskArn"]) for e in received}
    assert got == {
        ("Task Started", plain, FakeEcsAgent.arn(plain)),
        ("Task Stopped", plain, FakeEcsAgent.arn(plain)),
        ("Task Started", labelled, TASK_ARN),
        ("Task Stopped", labelled, TASK_ARN),
    }
    assert all(e["source"] == "awslabs.ecs.container" and e["resources"] == [HOST]
               for e in received)
    assert labelled not in ecs_agent.asked  # the label was enough
    assert plain in ecs_agent.asked

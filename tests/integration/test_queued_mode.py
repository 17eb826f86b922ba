"""The queued mode end to end: real ``ecssd-agent`` daemons publishing to DynamoDB and SQS,
the real ``ecssd-writer`` applying their states to Route 53, a real Docker engine, all AWS
services served by a moto server over HTTP. The agents must make no Route 53 request; the
writer must carry several hosts' changes in one change request."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Action, Change
from ecssd_agent.sweep import writer_hints
from tests.integration.daemon_world import (
    HOST,
    ZONE,
    AgentProcess,
    Zone,
    agents,
    create_containers,
    remove_containers,
    service_env,
    start_agent,
    start_containers,
    zone,
)
from tests.support.agent_cli import agent_command, log_lines, subprocess_env
from tests.support.images import Containers, host_port
from tests.support.poll import wait_for
from tests.support.queued import create_hint_queue, create_host_table

OTHER, OTHER_IP = "ip-127-0-0-9", "127.0.0.9"
TABLE = "ecssd-hosts"
__all__ = ["agents", "zone"]  # fixtures


def writer_command() -> list[str]:
    agent = agent_command()
    if agent[0].endswith("ecssd-agent"):
        return [agent[0][: -len("ecssd-agent")] + "ecssd-writer"]
    return [agent[0], "-m", "ecssd_agent.writer.cli"]


@pytest.fixture
def queue(aws: Any, zone: Zone) -> dict[str, str]:
    """The table and queue the quickstart stack creates, in the moto server."""
    return {"table": create_host_table(aws.client("dynamodb"), TABLE),
            "url": create_hint_queue(aws.client("sqs"))}


def queued_args(queue: dict[str, str]) -> list[str]:
    return ["--host-table", queue["table"], "--change-queue", queue["url"]]


class Writer:
    """The ``ecssd-writer`` process; its JSON log is read for what each write cost."""

    def __init__(self, env: dict[str, str], queue: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [*writer_command(), "--log-format", "json", *queued_args(queue), *args, ZONE],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def finish(self, timeout: float = 60) -> tuple[int, list[dict[str, Any]]]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, log_lines(err + out)


def writes(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line["summary"] for line in lines if isinstance(line.get("summary"), dict)]


def route53_requests(agent: AgentProcess) -> int:
    metrics = agent.metrics()
    return int(sum(v for (name, labels), v in metrics.items()
                   if name == "ecssd_aws_requests_total" and ("service", "route53") in labels
                   and ("outcome", "attempt") in labels))


@pytest.fixture
def writer_env(aws: Any) -> dict[str, str]:
    return subprocess_env(aws.env())


def run_writer_once(writer_env: dict[str, str], queue: dict[str, str]) -> list[dict[str, Any]]:
    code, lines = Writer(writer_env, queue, "--once", "--batch-window", "0").finish()
    assert code == 0, lines
    return writes(lines)


@pytest.fixture
def writer_process(writer_env: dict[str, str], queue: dict[str, str]) -> Iterator[Writer]:
    writer = Writer(writer_env, queue, "--batch-window", "0.5")
    yield writer
    writer.proc.terminate()
    code, lines = writer.finish(timeout=30)
    print("--- writer log ---\n" + "\n".join(json.dumps(line) for line in lines[-40:]))
    assert code == 0


def test_daemons_publish_and_the_writer_applies(aws: Any, zone: Zone, queue: dict[str, str],
                                                docker_engine: Any, containers: Containers,
                                                agents: list[AgentProcess],
                                                writer_process: Writer) -> None:
    first = start_agent(agents, aws, docker_engine, *queued_args(queue))
    second = start_agent(agents, aws, docker_engine, *queued_args(queue), host=OTHER,
                         host_ip=OTHER_IP)
    wait_for(lambda: set(zone.owned(HOST)) == {f"ecssd:h:{HOST}"}
             and set(zone.owned(OTHER)) == {f"ecssd:h:{OTHER}"}, timeout=20,
             what="both hosts' A records, written by the writer")
    web = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
    port = host_port(docker_engine, web)
    target = f"{HOST}.{ZONE}."
    wait_for(lambda: zone.srv(HOST).get(web[:12]) == f"1 1 {port} {target}"
             and web[:12] in zone.srv(OTHER), timeout=20, what="web's SRV records")
    docker_engine.cli("stop", "-t", "1", web)
    wait_for(lambda: web[:12] not in zone.srv(HOST) and web[:12] not in zone.srv(OTHER),
             timeout=20, what="web's records to go")
    assert route53_requests(first) == 0 and route53_requests(second) == 0, \
        "an agent in queued mode must not talk to Route 53"
    assert first.alive() and second.alive()


def published_records(aws: Any, host: str) -> int:
    item = aws.client("dynamodb").get_item(
        TableName=TABLE, Key={"host": {"S": host}, "kind": {"S": "desired"}}).get("Item")
    return len(json.loads(item["records"]["S"])) if item else -1


def test_a_burst_over_two_hosts_goes_out_in_one_change_request(
        aws: Any, zone: Zone, queue: dict[str, str], docker_engine: Any,
        agents: list[AgentProcess], writer_env: dict[str, str]) -> None:
    for host, ip in ((HOST, "127.0.0.1"), (OTHER, OTHER_IP)):
        start_agent(agents, aws, docker_engine, *queued_args(queue), host=host, host_ip=ip)
    first = run_writer_once(writer_env, queue)
    assert sum(w["hosts"] for w in first) == 2 and set(zone.owned(OTHER)) == {f"ecssd:h:{OTHER}"}
    api = docker_engine.client().api
    ids = create_containers(api, "ecssd-busybox:latest", 20, "queued-burst")
    try:
        start_containers(api, ids)
        wait_for(lambda: published_records(aws, HOST) == 21 and published_records(aws, OTHER) == 21,
                 timeout=60, what="both agents to publish 20 SRV records and their A record")
        burst = run_writer_once(writer_env, queue)
        assert sum(w["changes"] for w in burst) == 40, burst
        assert sum(w["change_requests"] for w in burst) == 1, \
            f"two hosts' 40 changes should go out in one change request: {burst}"
        assert sum(w["read_requests"] for w in burst) == 0, burst
        assert all(len(zone.srv(h)) == 20 for h in (HOST, OTHER))
        assert {zone.srv(HOST)[c[:12]] for c in ids} == {
            f"1 1 {host_port(docker_engine, c)} {HOST}.{ZONE}." for c in ids}
    finally:
        remove_containers(api, ids)
    wait_for(lambda: published_records(aws, HOST) == 1 and published_records(aws, OTHER) == 1,
             timeout=60, what="both agents to publish the containers' removal")
    gone = run_writer_once(writer_env, queue)
    assert sum(w["changes"] for w in gone) == 40 and sum(w["change_requests"] for w in gone) == 1
    assert zone.srv(HOST) == {} and zone.srv(OTHER) == {}


def test_sync_and_remove_publish_for_the_writer(aws: Any, zone: Zone, queue: dict[str, str],
                                                docker_engine: Any, containers: Containers,
                                                writer_env: dict[str, str]) -> None:
    web = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
    base = ["--log-format", "json", "--hostname", HOST, "--host-ip", "127.0.0.1",
            "--docker-host", docker_engine.base_url, *queued_args(queue)]
    done = subprocess.run([*agent_command(), *base, "--sync", ZONE], env=writer_env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    requests = [line["aws_requests"] for line in log_lines(done.stderr) if "aws_requests" in line]
    assert requests == [{"PutItem": 1, "SendMessage": 1}], requests
    assert zone.owned(HOST) == {}  # nothing until the writer runs
    assert sum(w["changes"] for w in run_writer_once(writer_env, queue)) == 2
    assert web[:12] in zone.srv(HOST)
    done = subprocess.run([*agent_command(), *base, "--remove", ZONE], env=writer_env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    removed = run_writer_once(writer_env, queue)
    assert sum(w["changes"] for w in removed) == 2 and zone.owned(HOST) == {}


def desired_seq(aws: Any, host: str) -> int:
    item = aws.client("dynamodb").get_item(
        TableName=TABLE, Key={"host": {"S": host}, "kind": {"S": "desired"}}).get("Item")
    return int(item["seq"]["N"]) if item else -1


def test_a_record_the_sweep_deleted_of_a_live_host_comes_back_after_one_resync(
        aws: Any, zone: Zone, queue: dict[str, str], docker_engine: Any,
        containers: Containers, agents: list[AgentProcess],
        writer_env: dict[str, str]) -> None:
    """The sweep deletes a record of a host whose container still runs (an
    unhealthy instance with STOP_UNHEALTHY=false, a StopTask that failed...). The agent goes
    on publishing the same state; without the sweep's verify hint the writer, planning
    against what it knows it applied, would see nothing to do for a day."""
    web = containers.run(env=service_env("web"), ports=["127.0.0.1::8081"])
    start_agent(agents, aws, docker_engine, *queued_args(queue), "--resync", "4")
    wait_for(lambda: published_records(aws, HOST) == 2, timeout=20,
             what="the agent to publish its A record and web's SRV record")
    run_writer_once(writer_env, queue)
    wait_for(lambda: web[:12] in zone.srv(HOST), timeout=20, what="web's SRV record")

    # The sweep's deletion, as the sweep makes it, and its hint to the writer.
    r53 = aws.client("route53")
    sweep_zone = Route53Zone(r53, find_zone(r53, "", zone.id), comment="ecssd health sweep")
    (srv,) = [r for r in sweep_zone.records() if r.type == "SRV"
              and (r.set_identifier or "").startswith(f"ecssd:h:{HOST}:{web[:12]}:")]
    assert sweep_zone.apply([Change(Action.DELETE, srv)]) == 1
    summary: dict[str, Any] = {"errors": []}
    writer_hints.send(aws.client("sqs"), queue["url"], sweep_zone.zone.name, [srv], summary)
    assert summary == {"errors": [], "writer_hints": 1}
    assert web[:12] not in zone.srv(HOST)
    seq = desired_seq(aws, HOST)

    healing = run_writer_once(writer_env, queue)  # the verify hint: read srv's name for HOST
    wait_for(lambda: desired_seq(aws, HOST) > seq, timeout=20,
             what="the agent's next resync to publish its (unchanged) state")
    healing += run_writer_once(writer_env, queue)

    assert web[:12] in zone.srv(HOST), healing
    assert set(zone.owned(HOST)) == {f"ecssd:h:{HOST}", srv.set_identifier}
    # What healing cost Route 53: a name-scoped read of one name, one change request.
    cost = {key: sum(w[key] for w in healing) for key in (
        "hosts_verified", "read_requests", "change_requests", "changes", "rejected_batches")}
    print(f"healing cost: {cost}")
    assert cost == {"hosts_verified": 1, "read_requests": 1, "change_requests": 1,
                    "changes": 1, "rejected_batches": 0}, healing

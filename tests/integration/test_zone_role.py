"""The zone in another account (``--assume-role-arn`` / ``ASSUME_ROLE_ARN``), against moto.

moto's STS AssumeRole works offline and moto keeps one backend per account: requests signed
with the credentials of ``arn:aws:iam::111111111111:role/...`` land in account 111111111111,
requests signed with the tests' own keys in 123456789012. So the zone below exists ONLY in
the role's account: whatever finds it and writes to it did sign as the role, and whatever
finds the ECS clusters, the DynamoDB table or the SQS queue signed as the process.

The signatures are read too, from the Authorization header of every request (a botocore
``before-send`` hook, where RequestStats counts them): Route 53 requests carry the role's
temporary key (``ASIA...``) and a session token, all others the process's ``testing`` key.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from ecssd_agent.agent import cli
from ecssd_agent.agent import settings as agent_settings
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.aws.assume_role import ZoneRole, role_credentials
from ecssd_agent.aws.change_queue import ChangeQueue
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.aws.route53 import Route53Zone, ZoneError, find_zone
from ecssd_agent.config_fields import SettingsError
from ecssd_agent.core import ownership
from ecssd_agent.core.model import Action, Change, Host, Routing, ServiceInstance
from ecssd_agent.core.records import host_records
from ecssd_agent.dns.http_sd import PATH
from ecssd_agent.events import settings as event_settings
from ecssd_agent.sweep.settings import SweepSettings
from ecssd_agent.writer.publish import Publisher
from ecssd_agent.writer.settings import load_lambda_settings
from health_lambda import handler, task_events, zone_writer_handler
from tests.support.env import FAKE_AWS_ENV, REGION
from tests.support.moto_server import MotoServer
from tests.support.poll import wait_for
from tests.support.process import stop
from tests.support.queued import create_hint_queue, create_host_table

ZONE_ACCOUNT = "111111111111"
ROLE = f"arn:aws:iam::{ZONE_ACCOUNT}:role/ecssd-zone"
DOMAIN = "sd.internal"
Z = DOMAIN + "."
LOCAL_KEY = FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"]
_CREDENTIAL = re.compile(r"Credential=([^/]+)/")


@dataclass
class Remote:
    """The zone, created in the role's account, and a Route 53 client of that account."""

    zone_id: str
    route53: Any
    vpc: str

    def zone(self) -> Route53Zone:
        return Route53Zone(self.route53, find_zone(self.route53, DOMAIN))


@pytest.fixture
def remote(aws: MotoServer) -> Remote:
    vpc = aws.client("ec2").create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    credentials = aws.client("sts").assume_role(RoleArn=ROLE, RoleSessionName="test-setup")[
        "Credentials"]
    route53 = _client_as(aws, "route53", credentials)
    zone_id = route53.create_hosted_zone(
        Name=DOMAIN, CallerReference="zone-role", HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": REGION, "VPCId": vpc})["HostedZone"]["Id"].rsplit("/", 1)[-1]
    # The premise: the process's own credentials do not see the zone.
    with pytest.raises(ZoneError):
        find_zone(aws.client("route53"), DOMAIN)
    return Remote(zone_id, route53, vpc)


def _client_as(aws: MotoServer, service: str, credentials: dict[str, Any]) -> Any:
    return boto3.client(service, endpoint_url=aws.url, region_name=REGION,  # type: ignore[call-overload]
                        aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"])


class Signatures:
    """Per service: the access key ids that signed its requests, and whether a token went."""

    def __init__(self) -> None:
        self.keys: dict[str, list[str]] = defaultdict(list)
        self.tokens: dict[str, list[bool]] = defaultdict(list)
        self.bodies: dict[str, list[bytes]] = defaultdict(list)

    def watch(self, client: Any) -> Any:
        service = client.meta.service_model.service_name

        def seen(request: Any, **_: Any) -> None:
            auth = request.headers.get("Authorization", b"")
            found = _CREDENTIAL.search(auth.decode() if isinstance(auth, bytes) else auth)
            self.keys[service].append(found.group(1) if found else "")
            self.tokens[service].append("X-Amz-Security-Token" in request.headers)
            body = request.body or b""
            self.bodies[service].append(body.encode() if isinstance(body, str) else body)

        client.meta.events.register(f"before-send.{service}", seen)
        return client


def host_changes(n: int, *names: str) -> list[Change]:
    instances = [ServiceInstance(name=name, protocol="tcp", container_port=8081, port=32000 + i,
                                 container_id=f"{n:04d}{i:08d}" + "ab" * 26)
                 for i, name in enumerate(names)]
    records, problems = host_records(Host(f"ip-127-0-0-{n}", f"127.0.0.{n}"), instances, Z,
                                     Routing.WEIGHTED, 0)
    assert problems == []
    return [Change(Action.CREATE, r) for r in records]


# --- the clients ------------------------------------------------------------------------------

def test_route53_signs_as_the_role_and_everything_else_as_the_process(remote: Remote) -> None:
    clients = Clients(region=REGION, zone_role=ZoneRole(ROLE, "ext-42", "ecssd-test"))
    signatures = Signatures()
    route53 = signatures.watch(clients.client("route53"))
    writes = signatures.watch(clients.client("route53", max_attempts=1))
    sts = signatures.watch(clients.client("sts"))  # made with the Route 53 clients
    ecs = signatures.watch(clients.client("ecs"))
    dynamodb = signatures.watch(clients.client("dynamodb"))
    sqs = signatures.watch(clients.client("sqs"))

    zone = Route53Zone(route53, find_zone(route53, DOMAIN), write_client=writes)
    assert zone.zone.id == remote.zone_id
    zone.apply(host_changes(2, "calc"))
    assert {r.type for r in zone.records()} >= {"SRV", "A"}
    ecs.list_clusters()
    dynamodb.list_tables()
    sqs.list_queues()

    route53_keys = signatures.keys["route53"]
    assert len(route53_keys) >= 3
    assert all(k.startswith("ASIA") and k != LOCAL_KEY for k in route53_keys), route53_keys
    assert len(set(route53_keys)) == 1 and all(signatures.tokens["route53"])
    for service in ("sts", "ecs", "dynamodb", "sqs"):
        assert signatures.keys[service] and set(signatures.keys[service]) == {LOCAL_KEY}, service
        assert not any(signatures.tokens[service]), service
    # One AssumeRole for every Route 53 request, with the external id and session name.
    assert clients.stats.attempts("AssumeRole") == 1
    body = signatures.bodies["sts"][0].decode()
    assert "ExternalId=ext-42" in body and "RoleSessionName=ecssd-test" in body
    assert sts is clients.client("sts")


def test_without_a_role_every_client_signs_as_the_process(remote: Remote) -> None:
    clients = Clients(region=REGION)
    signatures = Signatures()
    route53 = signatures.watch(clients.client("route53"))
    with pytest.raises(ZoneError):
        find_zone(route53, DOMAIN)
    assert set(signatures.keys["route53"]) == {LOCAL_KEY}
    assert clients.stats.attempts("AssumeRole") == 0


def test_the_credentials_are_refreshed_before_they_expire(aws: MotoServer) -> None:
    clients = Clients(region=REGION)
    now = [datetime.now(timezone.utc)]
    credentials = role_credentials(clients.client("sts"), ZoneRole(ROLE, "", "ecssd-test"),
                                   time_fetcher=lambda: now[0])
    first = credentials.get_frozen_credentials()
    assert first.access_key.startswith("ASIA")
    assert clients.stats.attempts("AssumeRole") == 1
    now[0] += timedelta(minutes=40)  # 20 of the hour left: still good
    assert credentials.get_frozen_credentials().access_key == first.access_key
    assert clients.stats.attempts("AssumeRole") == 1
    now[0] += timedelta(minutes=7)  # 13 left: inside the 15-minute refresh window
    second = credentials.get_frozen_credentials()
    assert clients.stats.attempts("AssumeRole") == 2
    assert second.access_key.startswith("ASIA") and second.access_key != first.access_key


def test_a_refused_assume_role_is_the_route53_calls_error_and_nothing_is_sent(aws) -> None:
    clients = Clients(region=REGION, zone_role=ZoneRole(ROLE))
    route53 = clients.client("route53")
    with Stubber(clients.client("sts")) as sts:
        sts.add_client_error("assume_role", "AccessDenied", "not authorized to assume",
                             http_status_code=403)
        with pytest.raises(ClientError) as raised:
            route53.list_hosted_zones()
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    assert clients.stats.attempts(service="route53") == 0


# --- every entry point ------------------------------------------------------------------------

def test_the_agent_finds_and_writes_the_zone_of_the_role(remote: Remote) -> None:
    settings = agent_settings.load(["--hostname", "ip-127-0-0-2", "--host-ip", "127.0.0.2",
                                    "--sync", "--assume-role-arn", ROLE,
                                    "--assume-role-external-id", "ext-42", DOMAIN], {})
    agent, clients = cli.build_agent(settings)
    assert clients.zone_role == ZoneRole(ROLE, "ext-42", "ecssd-agent-ip-127-0-0-2")
    assert isinstance(agent.sink, DirectSink)
    zone = agent.sink.zone
    assert zone.zone.id == remote.zone_id
    zone.apply(host_changes(2, "calc"))
    owners = {ownership.parse_set_identifier(r.set_identifier) for r in remote.zone().records()
              if r.set_identifier}
    assert {o.host for o in owners if o} == {"ip-127-0-0-2"}


def test_the_writer_lambda_reads_the_local_table_and_writes_the_roles_zone(
        aws: MotoServer, remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    local = Clients(region=REGION)
    table = create_host_table(local.client("dynamodb"), "ecssd-hosts")
    queue = ChangeQueue(local.client("sqs"), create_hint_queue(local.client("sqs")))
    changes = host_changes(3, "calc", "web")
    Publisher(HostStore(local.client("dynamodb"), table), queue, "ip-127-0-0-3", Z).publish(
        [c.record for c in changes])
    messages = queue.receive(0)
    for name, value in {"DOMAIN": DOMAIN, "HOST_TABLE": table, "ASSUME_ROLE_ARN": ROLE}.items():
        monkeypatch.setenv(name, value)
    for name in ("HOSTED_ZONE_ID", "CHANGE_QUEUE", "AWS_LAMBDA_FUNCTION_NAME", "DRY_RUN"):
        monkeypatch.delenv(name, raising=False)
    zone_writer_handler.runtime.reset()
    try:
        result = zone_writer_handler.lambda_handler({"Records": [
            {"messageId": m.id, "receiptHandle": m.receipt, "body": m.body} for m in messages]},
            None)
    finally:
        zone_writer_handler.runtime.reset()
    assert result == {"batchItemFailures": []}
    assert set(remote.zone().records()) >= {c.record for c in changes}


def test_the_lambdas_route53_clients_assume_the_role(
        aws: MotoServer, remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"DOMAIN": DOMAIN, "ASSUME_ROLE_ARN": ROLE,
                        "ASSUME_ROLE_EXTERNAL_ID": "ext-42"}.items():
        monkeypatch.setenv(name, value)
    for name in ("HOSTED_ZONE_ID", "ECS_CLUSTERS", "AWS_LAMBDA_FUNCTION_NAME", "RR_NAME",
                 "TASK_GROUP"):
        monkeypatch.delenv(name, raising=False)
    # Task events: the runtime it builds at a cold start finds the zone through the role.
    task_events.runtime.reset()
    try:
        runtime = task_events.runtime.get()
        assert runtime.clients.zone_role == ZoneRole(ROLE, "ext-42", "ecssd-task-events")
        assert runtime.hosted_zone().zone.id == remote.zone_id
    finally:
        task_events.runtime.reset()
    # The sweep: a dry run over the role's zone (which holds a host no cluster knows) and
    # this account's clusters (none).
    remote.zone().apply(host_changes(4, "calc"))
    monkeypatch.setenv("DRY_RUN", "true")
    handler.runtime.reset()
    try:
        summary = handler.lambda_handler({}, None)
        clients = handler.runtime.get().clients
    finally:
        handler.runtime.reset()
    assert clients.zone_role == ZoneRole(ROLE, "ext-42", "ecssd-sweep")
    assert summary["zone"] == Z and summary["errors"] == [], summary
    assert summary["owned"] == 2 and summary["dry_run"] is True
    assert clients.stats.attempts("AssumeRole") == 1
    assert clients.stats.attempts("ListClusters") >= 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ecssd_dns(aws: MotoServer, *args: str) -> subprocess.Popen[str]:
    script = shutil.which("ecssd-dns")
    command = [script] if script else [sys.executable, "-m", "ecssd_agent.dns.server"]
    return subprocess.Popen([*command, "--port", "0", *args, DOMAIN], env=aws.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_ecssd_dns_serves_the_zone_of_the_role(aws: MotoServer, remote: Remote) -> None:
    remote.zone().apply(host_changes(5, "calc"))
    without = ecssd_dns(aws)
    output, _ = without.communicate(timeout=60)
    assert without.returncode == 1 and f"no private hosted zone named {Z}" in output

    http_port = free_port()
    process = ecssd_dns(aws, "--http-port", str(http_port), "--assume-role-arn", ROLE)
    url = f"http://127.0.0.1:{http_port}{PATH}"

    def targets() -> list[str] | None:
        if process.poll() is not None:
            raise AssertionError(f"ecssd-dns exited {process.returncode}: "
                                 f"{process.communicate()[0]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return [t for g in json.loads(response.read()) for t in g["targets"]]
        except urllib.error.HTTPError:
            return None

    try:
        found = wait_for(targets, timeout=30, what="ecssd-dns to list the role's zone",
                         ignore=(ConnectionError, urllib.error.URLError))
    finally:
        stop(process)
    assert found == ["127.0.0.5:32000"]


@pytest.mark.parametrize(("load", "arn_name", "external_id_name"), [
    (lambda arn, ext: agent_settings.load(["--assume-role-arn", arn,
                                           "--assume-role-external-id", ext], {}),
     "--assume-role-arn / ECSSD_ASSUME_ROLE_ARN",
     "--assume-role-external-id / ECSSD_ASSUME_ROLE_EXTERNAL_ID"),
    (lambda arn, ext: SweepSettings.from_env(
        {"ASSUME_ROLE_ARN": arn, "ASSUME_ROLE_EXTERNAL_ID": ext}),
     "ASSUME_ROLE_ARN", "ASSUME_ROLE_EXTERNAL_ID"),
    (lambda arn, ext: event_settings.load(
        {"DOMAIN": DOMAIN, "ASSUME_ROLE_ARN": arn, "ASSUME_ROLE_EXTERNAL_ID": ext}),
     "ASSUME_ROLE_ARN", "ASSUME_ROLE_EXTERNAL_ID"),
    (lambda arn, ext: load_lambda_settings(
        {"HOST_TABLE": "t", "ASSUME_ROLE_ARN": arn, "ASSUME_ROLE_EXTERNAL_ID": ext}),
     "ASSUME_ROLE_ARN", "ASSUME_ROLE_EXTERNAL_ID"),
])
def test_a_malformed_role_is_one_error_naming_the_setting(load: Any, arn_name: str,
                                                          external_id_name: str) -> None:
    for arn, ext, named in (("ecssd-zone", "", arn_name),
                            ("arn:aws:iam::1234:role/x", "", arn_name),
                            ("", "ext-42", external_id_name),
                            (ROLE, "x", external_id_name)):
        with pytest.raises(SettingsError) as raised:
            load(arn, ext)
        assert str(raised.value).startswith(named + ":") or str(raised.value).startswith(
            named + " is set but"), raised.value
    assert load(ROLE, "ext-42").assume_role_arn == ROLE

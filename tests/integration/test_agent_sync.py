"""The agent core end to end: the real ``ecssd-agent --sync/--remove`` command, a real Docker
engine with real containers, and Route 53 served by a moto server over HTTP."""

from __future__ import annotations

import pytest

from tests.support.agent_cli import run_agent, subprocess_env, summary
from tests.support.images import host_port

ZONE = "servicediscovery.internal"
HOST, HOST_IP = "ip-10-0-0-12", "10.0.0.12"
OTHER, OTHER_IP = "ip-10-0-0-99", "10.0.0.99"
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef0123456789abcdef"
HTTPD = ["httpd", "-f", "-p", "8081", "-h", "/www"]
SLEEP = ["sleep", "600"]


@pytest.fixture
def zone(aws):
    """A private hosted zone plus records that are not ours: a simple and a weighted one."""
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    r53 = aws.client("route53")
    zone_id = r53.create_hosted_zone(
        Name=ZONE, CallerReference="t", HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": "us-east-1", "VPCId": vpc})["HostedZone"]["Id"].rsplit("/", 1)[-1]
    foreign = [
        {"Name": f"www.{ZONE}.", "Type": "A", "TTL": 300, "ResourceRecords": [{"Value": "10.1.1.1"}]},
        {"Name": f"_calc._tcp.{ZONE}.", "Type": "SRV", "TTL": 0, "SetIdentifier": "blue", "Weight": 5,
         "ResourceRecords": [{"Value": f"1 1 80 www.{ZONE}."}]},
    ]
    r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
        "Changes": [{"Action": "CREATE", "ResourceRecordSet": r} for r in foreign]})
    return {"id": zone_id, "client": r53, "foreign": foreign, "vpc": vpc}


def listing(zone) -> list[dict]:
    pages = zone["client"].get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone["id"])
    return [r for page in pages for r in page["ResourceRecordSets"] if r["Type"] not in ("NS", "SOA")]


def owned(zone, host: str) -> set[tuple[str, str, str, str]]:
    """(name, type, value, SetIdentifier) of every record set the host owns."""
    prefix = f"ecssd:h:{host}"
    return {(r["Name"], r["Type"], r["ResourceRecords"][0]["Value"], r["SetIdentifier"])
            for r in listing(zone)
            if r.get("SetIdentifier", "") == prefix or r.get("SetIdentifier", "").startswith(prefix + ":")}


def agent(aws, docker_engine, host: str, ip: str, *args: str):
    env = subprocess_env(aws.env())
    return run_agent(["--hostname", host, "--host-ip", ip, "--docker-host", docker_engine.base_url,
                      *args, ZONE], env)


def test_sync_remove_and_ownership(aws, zone, docker_engine, containers):
    calc = containers.run(env={"SERVICE_8081_NAME": "_calc._tcp"}, ports=["127.0.0.1::8081"],
                          labels={"com.amazonaws.ecs.task-arn": TASK_ARN,
                                  "com.amazonaws.ecs.cluster": "prod"}, cmd=HTTPD)
    web = containers.run(env={"SERVICE_8081_NAME": "web", "SERVICE_8082_NAME": "web-admin"},
                         ports=["127.0.0.1::8081", "127.0.0.1::8082"], cmd=HTTPD)
    dns = containers.run(env={"SERVICE_53_NAME": "dns"}, ports=["127.0.0.1::53/udp"], cmd=SLEEP)
    containers.run(ports=["127.0.0.1::8081"], cmd=HTTPD)  # declares no service
    bad = containers.run(env={"SERVICE_abc_NAME": "x", "SERVICE_8081_NAME": "bad name!",
                              "SERVICE_9999_NAME": "unpublished", "SERVICE_8082_NAME": "still-ok"},
                         labels={"SERVICE_8082_NAME": "label-wins"},
                         ports=["127.0.0.1::8081", "127.0.0.1::8082"], cmd=HTTPD)

    target = f"{HOST}.{ZONE}."
    task = TASK_ARN.rsplit("/", 1)[-1]
    srv = {  # (name, container, port, ECS cluster and task)
        ("_calc._tcp", calc, "8081/tcp", "prod", task),
        ("web", web, "8081/tcp", "", ""),
        ("web-admin", web, "8082/tcp", "", ""),
        ("dns", dns, "53/udp", "", ""),
        ("label-wins", bad, "8082/tcp", "", ""),
    }
    expected = {(f"{name}.{ZONE}.", "SRV", f"1 1 {host_port(docker_engine, cid, port)} {target}",
                 f"ecssd:h:{HOST}:{cid[:12]}:{port}:{cluster}:{task_id}")
                for name, cid, port, cluster, task_id in srv}
    expected.add((target, "A", HOST_IP, f"ecssd:h:{HOST}"))

    # A second host publishes the same engine's containers under its own name first.
    other = agent(aws, docker_engine, OTHER, OTHER_IP, "--sync")
    assert other.returncode == 0, other.stderr
    others_records = owned(zone, OTHER)
    assert len(others_records) == len(expected)

    first = agent(aws, docker_engine, HOST, HOST_IP, "--sync")
    assert first.returncode == 0, first.stderr
    assert owned(zone, HOST) == expected
    assert summary(first)["change_requests"] == 1  # 6 record sets, one request
    for fragment in ("SERVICE_abc_NAME", "SERVICE_8081_NAME: invalid service name", "SERVICE_9999_NAME"):
        assert fragment in first.stderr and bad[:12] in first.stderr
    assert f"created SRV _calc._tcp.{ZONE}." in first.stderr

    second = agent(aws, docker_engine, HOST, HOST_IP, "--sync")
    assert second.returncode == 0, second.stderr
    assert summary(second)["aws_requests"].get("ChangeResourceRecordSets", 0) == 0  # type: ignore[union-attr]
    assert owned(zone, HOST) == expected

    docker_engine.cli("rm", "-f", web)
    third = agent(aws, docker_engine, HOST, HOST_IP, "--sync")
    assert third.returncode == 0, third.stderr
    assert owned(zone, HOST) == {r for r in expected if web[:12] not in r[3]}
    assert summary(third)["aws_requests"]["ChangeResourceRecordSets"] == 1  # type: ignore[index]

    removed = agent(aws, docker_engine, HOST, HOST_IP, "-remove")
    assert removed.returncode == 0, removed.stderr
    assert owned(zone, HOST) == set()
    # The other host's records and the foreign ones are exactly as they were.
    assert owned(zone, OTHER) == others_records
    remaining = listing(zone)
    for record in zone["foreign"]:
        assert record in remaining


def test_weighted_or_multivalue_routing(aws, zone, docker_engine, containers):
    containers.run(env={"SERVICE_8081_NAME": "calc"}, ports=["127.0.0.1::8081"], cmd=HTTPD)
    assert agent(aws, docker_engine, HOST, HOST_IP, "--sync").returncode == 0
    calc = [r for r in listing(zone) if r["Name"] == f"calc.{ZONE}."]
    assert len(calc) == 1 and calc[0]["Weight"] == 1 and "MultiValueAnswer" not in calc[0]

    switched = agent(aws, docker_engine, HOST, HOST_IP, "--sync", "--routing", "multivalue", "--ttl", "10")
    assert switched.returncode == 0, switched.stderr
    calc = [r for r in listing(zone) if r["Name"] == f"calc.{ZONE}."]
    assert len(calc) == 1 and calc[0]["MultiValueAnswer"] is True and "Weight" not in calc[0]
    assert calc[0]["TTL"] == 10


def test_permanent_errors_exit_non_zero_with_the_reason(aws, zone, docker_engine):
    bogus = agent(aws, docker_engine, HOST, HOST_IP, "--sync", "--hosted-zone-id", "ZNOTTHERE")
    assert bogus.returncode == 1
    assert "ZNOTTHERE" in bogus.stderr

    # Two private zones with the same name: refuse, listing both, unless --vpc-id picks one.
    vpc2 = aws.client("ec2").create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
    zone["client"].create_hosted_zone(Name=ZONE, CallerReference="t2", HostedZoneConfig={"PrivateZone": True},
                                      VPC={"VPCRegion": "us-east-1", "VPCId": vpc2})
    ambiguous = agent(aws, docker_engine, HOST, HOST_IP, "--sync")
    assert ambiguous.returncode == 1
    assert zone["id"] in ambiguous.stderr and vpc2 in ambiguous.stderr and zone["vpc"] in ambiguous.stderr
    picked = agent(aws, docker_engine, HOST, HOST_IP, "--sync", "--vpc-id", zone["vpc"])
    assert picked.returncode == 0, picked.stderr
    assert owned(zone, HOST) == {(f"{HOST}.{ZONE}.", "A", HOST_IP, f"ecssd:h:{HOST}")}

    no_docker = run_agent(["--hostname", HOST, "--host-ip", HOST_IP, "--docker-host",
                           "unix:///tmp/ecssd-no-such.sock", "--sync", "--vpc-id", zone["vpc"], ZONE],
                          subprocess_env(aws.env()))
    assert no_docker.returncode == 1 and "cannot list containers" in no_docker.stderr
    # An unreachable engine is "unknown", never "no containers": nothing was deleted.
    assert owned(zone, HOST) == {(f"{HOST}.{ZONE}.", "A", HOST_IP, f"ecssd:h:{HOST}")}

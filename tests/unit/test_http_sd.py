"""Prometheus HTTP service discovery from the DNS server's zone view (ecssd_agent.dns.http_sd).

The view is built from record sets made by the real record builders (the agent's
``host_records``, the task-events Lambda's owner scheme), so the labels are read from the
SetIdentifiers the system really writes. The HTTP side runs a real server on 127.0.0.1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from ecssd_agent.core import ownership
from ecssd_agent.core.model import Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import host_records, routed, srv_value
from ecssd_agent.dns.http_sd import PATH, Document, HttpSdServer, target_groups
from ecssd_agent.dns.view import ZoneView, unavailable

Z = "sd.internal."
TASK = "0123456789abcdef0123456789abcdef"


def instance(n: int, name: str, port: int, cluster: str = "prod") -> ServiceInstance:
    return ServiceInstance(
        name=name, container_id=f"{n:012x}" + "cd" * 26, container_name=f"c{n}",
        container_port=8081, protocol="tcp", port=port,
        task_arn=f"arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{n:032x}",
        cluster=cluster)


def world() -> list[RecordSet]:
    records, problems = host_records(Host("ip-10-0-0-2", "10.0.0.2"),
                                     [instance(1, "_calc._tcp", 32001), instance(2, "web", 32002)],
                                     Z, Routing.WEIGHTED, 0)
    more, more_problems = host_records(Host("ip-10-0-0-3", "10.0.0.3"),
                                       [instance(3, "_calc._tcp", 32003)], Z, Routing.MULTIVALUE, 0)
    assert problems == more_problems == []
    task_target = f"{TASK}.task.{Z}"
    task_records = [
        routed(task_target, "A", ["10.0.9.9"], Owner(kind=Kind.TASK, cluster="fargate", task=TASK),
               Routing.WEIGHTED, 0),
        routed(f"_calc._tcp.{Z}", "SRV", [srv_value(8081, task_target)],
               Owner(kind=Kind.TASK, cluster="fargate", task=TASK, port="8081/tcp"), Routing.WEIGHTED, 0),
    ]
    foreign = [
        # Somebody else's simple SRV record set of two values: discovered, owner labels "".
        RecordSet(f"legacy.{Z}", "SRV", (srv_value(9000, f"ip-10-0-0-2.{Z}"),
                                         srv_value(9001, "db.example.com.")), 60),
        # A target whose name answers one of two addresses per query: scraped by name.
        RecordSet(f"lb.{Z}", "A", ("10.0.5.1",), 60, set_identifier="a", weight=1),
        RecordSet(f"lb.{Z}", "A", ("10.0.5.2",), 60, set_identifier="b", weight=1),
        RecordSet(f"behind-lb.{Z}", "SRV", (srv_value(7000, f"lb.{Z}"),), 60),
        RecordSet(f"v6.{Z}", "AAAA", ("fd00::5",), 60),
        RecordSet(f"six.{Z}", "SRV", (srv_value(7001, f"v6.{Z}"),), 60),
        RecordSet(f"broken.{Z}", "SRV", ("garbage",), 60),
        # One value whose target is no DNS name (a 64-character label) does not hide the other.
        RecordSet(f"mixed.{Z}", "SRV", (srv_value(7002, "a" * 64 + f".{Z}"),
                                        srv_value(7003, f"ip-10-0-0-3.{Z}")), 60),
    ]
    return records + more + task_records + foreign


def by_target(groups: list[dict]) -> dict[str, dict[str, str]]:
    out = {}
    for group in groups:
        assert set(group) == {"targets", "labels"} and len(group["targets"]) == 1
        assert group["targets"][0] not in out
        out[group["targets"][0]] = group["labels"]
    return out


def test_every_instance_is_a_target_with_its_owner_labels() -> None:
    groups = target_groups(ZoneView(Z, world()))
    targets = by_target(groups)
    assert set(targets) == {
        "10.0.0.2:32001", "10.0.0.2:32002", "10.0.0.3:32003",  # the hosts' A records
        "10.0.9.9:8081",  # a task's own A record
        "10.0.0.2:9000", "db.example.com:9001",  # outside the zone: the name
        "lb.sd.internal:7000",  # a weighted choice of two addresses: the name
        "[fd00::5]:7001", "10.0.0.3:7003",
    }
    calc = targets["10.0.0.2:32001"]
    ident = ownership.set_identifier(Owner(host="ip-10-0-0-2", container=f"{1:012x}",
                                        port="8081/tcp", cluster="prod", task=f"{1:032x}"))
    assert calc == {
        "__meta_ecssd_service": "_calc._tcp", "__meta_ecssd_record": "_calc._tcp.sd.internal",
        "__meta_ecssd_host": "ip-10-0-0-2.sd.internal", "__meta_ecssd_port": "32001",
        "__meta_ecssd_cluster": "prod", "__meta_ecssd_task": f"{1:032x}",
        "__meta_ecssd_container": f"{1:012x}", "__meta_ecssd_container_port": "8081/tcp",
        "__meta_ecssd_set_identifier": ident,
    }
    fargate = targets["10.0.9.9:8081"]
    assert (fargate["__meta_ecssd_cluster"], fargate["__meta_ecssd_task"],
            fargate["__meta_ecssd_host"], fargate["__meta_ecssd_container"]) == (
        "fargate", TASK, f"{TASK}.task.sd.internal", "")
    legacy = targets["10.0.0.2:9000"]
    assert legacy["__meta_ecssd_service"] == "legacy"
    assert (legacy["__meta_ecssd_cluster"], legacy["__meta_ecssd_task"],
            legacy["__meta_ecssd_set_identifier"]) == ("", "", "")
    # Every label is a string (Prometheus rejects anything else) and a __meta_ecssd_ one.
    for labels in targets.values():
        assert all(k.startswith("__meta_ecssd_") and isinstance(v, str)
                   for k, v in labels.items())


def test_all_three_calc_instances_not_one_weighted_answer() -> None:
    groups = target_groups(ZoneView(Z, world()))
    calc = [g["targets"][0] for g in groups if g["labels"]["__meta_ecssd_service"] == "_calc._tcp"]
    assert sorted(calc) == ["10.0.0.2:32001", "10.0.0.3:32003", "10.0.9.9:8081"]


def test_an_empty_zone_is_an_empty_list() -> None:
    assert target_groups(ZoneView(Z, [])) == []


def test_the_document_is_none_until_the_first_listing_and_rendered_once_per_view() -> None:
    current = [unavailable(Z)]
    document = Document(lambda: current[0])
    assert document.body() is None  # 503: Prometheus keeps its targets
    current[0] = ZoneView(Z, world())
    first = document.body()
    assert first is not None and len(json.loads(first)) == 9
    assert document.body() is first  # same view: not rendered again
    current[0] = ZoneView(Z, world()[:2])
    assert json.loads(document.body() or b"") == target_groups(current[0])


@pytest.fixture
def served() -> Iterator[tuple[list[ZoneView], str]]:
    current = [unavailable(Z)]
    server = HttpSdServer(lambda: current[0], "127.0.0.1", 0)
    server.start()
    host, port = server.address
    try:
        yield current, f"http://{host}:{port}"
    finally:
        server.stop()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_http_endpoint_answers_json_503_before_the_first_listing_and_404_elsewhere(served) -> None:
    current, base = served
    code, _, body = get(base + PATH)
    assert code == 503 and b"not been listed" in body
    current[0] = ZoneView(Z, world())
    code, content_type, body = get(base + PATH + "?x=1")
    assert (code, content_type) == (200, "application/json")
    assert json.loads(body.decode("utf-8")) == target_groups(current[0])
    assert get(base + "/metrics")[0] == 404

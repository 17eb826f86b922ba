"""SERVICE_<port>_NAME parsing: a table of containers and exactly what they publish."""

from __future__ import annotations

import pytest

from ecssd_agent.core.metadata import (
    Check,
    Declaration,
    declarations,
    environment_list,
    service_instances,
)
from ecssd_agent.core.model import Container

CID = "c0ffee" * 10 + "abcd"


def container(env=None, labels=None, ports=None, network_mode="bridge", running=True) -> Container:
    return Container(id=CID, name="web", env=env or {}, labels=labels or {},
                     ports=ports or {}, network_mode=network_mode, running=running)


# (case, container, [(name, protocol, container port, client port)], [problem fragments])
CASES = [
    ("bare name", container({"SERVICE_8081_NAME": "calc"}, ports={"8081/tcp": (32768,)}),
     [("calc", "tcp", 8081, 32768)], []),
    ("srv style name", container({"SERVICE_8081_NAME": "_calc._tcp"}, ports={"8081/tcp": (32768,)}),
     [("_calc._tcp", "tcp", 8081, 32768)], []),
    ("uppercase name is lowered", container({"SERVICE_80_NAME": "Web"}, ports={"80/tcp": (1000,)}),
     [("web", "tcp", 80, 1000)], []),
    ("udp from the name", container({"SERVICE_53_NAME": "_dns._udp"},
                                    ports={"53/tcp": (1053,), "53/udp": (2053,)}),
     [("_dns._udp", "udp", 53, 2053)], []),
    ("udp from the binding", container({"SERVICE_53_NAME": "dns"}, ports={"53/udp": (2053,)}),
     [("dns", "udp", 53, 2053)], []),
    ("tcp preferred when both bound", container({"SERVICE_53_NAME": "dns"},
                                                ports={"53/tcp": (1053,), "53/udp": (2053,)}),
     [("dns", "tcp", 53, 1053)], []),
    ("two ports", container({"SERVICE_80_NAME": "web", "SERVICE_443_NAME": "webs"},
                            ports={"80/tcp": (1080,), "443/tcp": (1443,)}),
     [("webs", "tcp", 443, 1443), ("web", "tcp", 80, 1080)], []),
    ("label wins over env", container({"SERVICE_80_NAME": "fromenv"}, {"SERVICE_80_NAME": "fromlabel"},
                                      ports={"80/tcp": (1080,)}),
     [("fromlabel", "tcp", 80, 1080)], []),
    ("lowest host port of several bindings", container({"SERVICE_80_NAME": "web"},
                                                       ports={"80/tcp": (2000, 1999)}),
     [("web", "tcp", 80, 1999)], []),
    ("host network uses the container port", container({"SERVICE_8080_NAME": "web"},
                                                       network_mode="host"),
     [("web", "tcp", 8080, 8080)], []),
    ("SERVICE_IGNORE skips everything", container({"SERVICE_IGNORE": "true", "SERVICE_80_NAME": "web"},
                                                  ports={"80/tcp": (1,)}), [], []),
    ("SERVICE_IGNORE from a label", container({"SERVICE_80_NAME": "web"}, {"SERVICE_IGNORE": "1"},
                                              ports={"80/tcp": (1,)}), [], []),
    ("SERVICE_<port>_IGNORE skips one port",
     container({"SERVICE_80_NAME": "web", "SERVICE_81_NAME": "adm", "SERVICE_81_IGNORE": "yes"},
               ports={"80/tcp": (1080,), "81/tcp": (1081,)}),
     [("web", "tcp", 80, 1080)], []),
    ("no SERVICE_ variable", container({"PATH": "/bin"}, ports={"80/tcp": (1,)}), [], []),
    ("stopped container", container({"SERVICE_80_NAME": "web"}, ports={"80/tcp": (1,)}, running=False),
     [], []),
    ("non-numeric port", container({"SERVICE_abc_NAME": "web", "SERVICE_80_NAME": "ok"},
                                   ports={"80/tcp": (1080,)}),
     [("ok", "tcp", 80, 1080)], ["SERVICE_abc_NAME", "not a number"]),
    ("port out of range", container({"SERVICE_70000_NAME": "web"}), [], ["SERVICE_70000_NAME", "1-65535"]),
    ("port zero", container({"SERVICE_0_NAME": "web"}), [], ["SERVICE_0_NAME"]),
    ("invalid name", container({"SERVICE_80_NAME": "bad name!"}, ports={"80/tcp": (1,)}), [],
     ["SERVICE_80_NAME", "invalid label"]),
    ("label too long", container({"SERVICE_80_NAME": "a" * 64}, ports={"80/tcp": (1,)}), [],
     ["SERVICE_80_NAME", "invalid label"]),
    ("name too long", container({"SERVICE_80_NAME": ".".join(["a" * 60] * 5)}, ports={"80/tcp": (1,)}),
     [], ["SERVICE_80_NAME", "longer than 253"]),
    ("not published", container({"SERVICE_80_NAME": "web"}, ports={"80/tcp": ()}), [],
     ["SERVICE_80_NAME", "not published"]),
    ("published udp but name says tcp", container({"SERVICE_53_NAME": "_dns._tcp"},
                                                 ports={"53/udp": (2053,)}), [],
     ["SERVICE_53_NAME", "not published"]),
]


@pytest.mark.parametrize("case,subject,expected,problem_parts", CASES, ids=[c[0] for c in CASES])
def test_service_instances(case, subject, expected, problem_parts):
    instances, problems = service_instances(subject)
    got = sorted((i.name, i.protocol, i.container_port, i.port) for i in instances)
    assert got == sorted(expected)
    if problem_parts:
        assert len(problems) == 1
        text = str(problems[0])
        for part in problem_parts:
            assert part in text
        assert CID[:12] in text and "web" in text  # names the container
    else:
        assert problems == []


def test_ecs_labels_carry_task_identity():
    labels = {
        "com.amazonaws.ecs.task-arn": "arn:aws:ecs:us-east-1:123456789012:task/prod/0123abcd",
        "com.amazonaws.ecs.cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        "com.amazonaws.ecs.container-name": "calc",
    }
    (instance,), _ = service_instances(
        container({"SERVICE_8081_NAME": "calc", "SERVICE_8081_CHECK_HTTP": "/ping"}, labels,
                  ports={"8081/tcp": (32768,)}))
    assert instance.cluster == "prod"
    assert instance.task_arn.endswith("/prod/0123abcd")
    assert instance.container_name == "calc"
    assert instance.check_http == "/ping"


def test_environment_list():
    assert environment_list(["A=1", "B=x=y", "C", "D="]) == {"A": "1", "B": "x=y", "C": "", "D": ""}
    assert environment_list(None) == {}


def test_health_check_variables_are_declared_per_port() -> None:
    """The health sweep reads SERVICE_<port>_CHECK_HTTP and _CHECK_GRACE of a container
    definition through the same parser; a bad grace is one problem and leaves the service."""
    found, problems = declarations("web", {
        "SERVICE_8080_NAME": "web", "SERVICE_8080_CHECK_HTTP": " /ready ",
        "SERVICE_8080_CHECK_GRACE": "90s", "SERVICE_9000_NAME": "api",
        "SERVICE_9000_CHECK_GRACE": "soon", "SERVICE_7000_CHECK_HTTP": "/nameless",
        "SERVICE_X_NAME": "bad"})
    assert found == [Declaration("web", 8080, "/ready", 90.0), Declaration("web", 9000, "", None)]
    assert [str(p) for p in problems] == [
        "container web: SERVICE_9000_CHECK_GRACE: 'soon' is not a number of seconds: "
        "GRACE_SECONDS applies"]


@pytest.mark.parametrize(("meta", "check", "unusable"), [
    ({}, Check.HTTP, ""),
    ({"SERVICE_80_CHECK": " TCP "}, Check.TCP, ""),
    ({"SERVICE_80_CHECK": "none"}, Check.NONE, ""),
    ({"SERVICE_80_CHECK": ""}, Check.HTTP, ""),
    ({"SERVICE_80_CHECK": "grpc"}, Check.HTTP, "SERVICE_80_CHECK='grpc' is not one of http, "
     "tcp, none: the service is not checked"),
    ({"SERVICE_80_CHECK_HTTP": "/santé"}, Check.HTTP, "SERVICE_80_CHECK_HTTP='/santé' is not "
     "ASCII: percent-encode it ('/sant%C3%A9' for UTF-8): the service is not checked"),
    ({"SERVICE_80_CHECK_HTTP": "/a\r\nHost: x"}, Check.HTTP, "contains a space or a control"),
    ({"SERVICE_80_CHECK_HTTP": "/sant%C3%A9?x=1"}, Check.HTTP, ""),
    ({"SERVICE_80_CHECK": "tcp", "SERVICE_80_CHECK_HTTP": "/santé"}, Check.TCP, ""),
    ({"SERVICE_80_CHECK": "none", "SERVICE_80_CHECK_HTTP": "/a b"}, Check.NONE, ""),
])
def test_a_service_chooses_its_check(meta: dict[str, str], check: Check, unusable: str) -> None:
    """SERVICE_<port>_CHECK=http|tcp|none; a check the sweep cannot run as declared makes the
    service unusable for it (no verdict), with one problem naming the variable."""
    (found,), problems = declarations("web", {"SERVICE_80_NAME": "web", **meta})
    assert found.check is check
    assert unusable in found.unusable and bool(found.unusable) is bool(unusable)
    assert len(problems) == bool(unusable)


def test_ignored_services_are_not_declared() -> None:
    meta = {"SERVICE_80_NAME": "web", "SERVICE_81_NAME": "m", "SERVICE_81_IGNORE": "yes"}
    assert [d.port for d in declarations("web", meta)[0]] == [80]
    assert declarations("web", {**meta, "SERVICE_IGNORE": "1"})[0] == []


def test_the_agent_registers_a_service_whatever_its_check() -> None:
    instances, problems = service_instances(container(
        {"SERVICE_80_NAME": "web", "SERVICE_80_CHECK": "bogus"}, ports={"80/tcp": (1000,)}))
    assert [i.name for i in instances] == ["web"] and problems == []


def test_a_bad_check_grace_does_not_keep_the_agent_from_registering() -> None:
    instances, problems = service_instances(container(
        {"SERVICE_80_NAME": "web", "SERVICE_80_CHECK_GRACE": "later"}, ports={"80/tcp": (1000,)}))
    assert [i.name for i in instances] == ["web"] and problems == []

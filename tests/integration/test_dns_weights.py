"""Per-instance weights and priorities end to end: container variables -> the agent's
records in a moto server over HTTP -> ``ecssd-dns`` (a subprocess) -> real DNS clients.

A canary at ``SERVICE_8081_WEIGHT=1`` beside three instances at 10 must get 1/31 of the
answers, as Route 53's weighted routing would give it; under multivalue routing the SRV
priority and weight fields are what the client library orders by (RFC 2782).

The bounds are five standard deviations of the binomial count either side of its mean: the
server's random choices are not seeded (it is a real process), and at 5 sd a correct server
fails one run in about 1.7 million per count checked, while a server ignoring the weights
(the canary at 1/4: 775 of 3,100) is outside the bound by more than 60 sd.
"""

from __future__ import annotations

import math
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Container, Host, Routing
from ecssd_agent.dns.client import ServiceResolver
from tests.integration.test_dns_server import STARTUP_TIMEOUT, FakeDocker, ecssd_dns, free_port
from tests.support.poll import wait_for
from tests.support.process import stop

ZONE = "weights.internal"
Z = ZONE + "."
SIGMAS = 5.0

#: (host label, host IP, host port, SERVICE_8081_WEIGHT): three full instances and a canary.
WEIGHTED = [("ip-127-0-2-2", "127.0.2.2", 32001, "10"), ("ip-127-0-2-3", "127.0.2.3", 32002, "10"),
            ("ip-127-0-2-4", "127.0.2.4", 32003, "10"), ("ip-127-0-2-5", "127.0.2.5", 32004, "1")]
#: (host label, host IP, host port, priority, weight) of a multivalue service: two instances
#: sharing priority 1 at weights 30 and 10, and a backup at priority 2 (the default weight).
TIERED = [("ip-127-0-3-2", "127.0.3.2", 33001, "1", "30"),
          ("ip-127-0-3-3", "127.0.3.3", 33002, "1", "10"),
          ("ip-127-0-3-4", "127.0.3.4", 33003, "2", None)]


def calc(n: int, host_port: int, env: dict[str, str]) -> Container:
    return Container(id=f"{n:012x}" + "cd" * 26, name=f"calc{n}", env=env, labels={},
                     ports={"8081/tcp": (host_port,)})


def bound(n: int, p: float) -> tuple[float, float]:
    """The count of an outcome of probability ``p`` in ``n`` draws: mean -+ SIGMAS sd."""
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return mean - SIGMAS * sd, mean + SIGMAS * sd


@dataclass
class Server:
    port: int

    def srv(self, name: str) -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, "SRV"), "127.0.0.1", port=self.port,
                             timeout=5)


@pytest.fixture(scope="module")
def server(moto_server, tmp_path_factory) -> Iterator[Server]:
    moto_server.reset()
    ec2 = moto_server.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    r53 = moto_server.client("route53")
    r53.create_hosted_zone(Name=ZONE, CallerReference="weights-tests",
                           HostedZoneConfig={"PrivateZone": True},
                           VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
    zone = Route53Zone(r53, find_zone(r53, ZONE))
    for n, (label, ip, host_port, weight) in enumerate(WEIGHTED):
        containers = [calc(n, host_port, {"SERVICE_8081_NAME": "_calc._tcp",
                                          "SERVICE_8081_WEIGHT": weight})]
        Agent(DirectSink(zone), FakeDocker(containers), Host(label, ip)).sync()  # type: ignore[arg-type]
    for n, (label, ip, host_port, priority, weight) in enumerate(TIERED, start=10):
        env = {"SERVICE_8081_NAME": "tiered", "SERVICE_8081_PRIORITY": priority}
        if weight is not None:
            env["SERVICE_8081_WEIGHT"] = weight
        Agent(DirectSink(zone), FakeDocker([calc(n, host_port, env)]), Host(label, ip),  # type: ignore[arg-type]
              routing=Routing.MULTIVALUE).sync()

    port = free_port()
    log = tmp_path_factory.mktemp("dns-weights") / "ecssd-dns.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([*ecssd_dns(), "--port", str(port), ZONE],
                                   env={**moto_server.env(), "PYTHONUNBUFFERED": "1"},
                                   stdout=sink, stderr=sink)
    found = Server(port)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"ecssd-dns exited {process.returncode}:\n"
                                 + log.read_text(errors="replace"))
        return found.srv(f"tiered.{Z}").rcode() == dns.rcode.NOERROR

    try:
        wait_for(ready, timeout=STARTUP_TIMEOUT, what="ecssd-dns to answer",
                 ignore=(dns.exception.Timeout, ConnectionError))
        yield found
    finally:
        stop(process)


def test_a_canary_at_weight_1_beside_three_at_10_gets_one_answer_in_31(server: Server) -> None:
    n = 3100
    seen: Counter[tuple[int, int, int]] = Counter()
    for _ in range(n):
        answer = server.srv(f"_calc._tcp.{Z}").answer
        assert len(answer) == 1 and len(answer[0]) == 1  # weighted: one record set per answer
        record = answer[0][0]
        seen[(record.port, record.weight, record.priority)] += 1
    # The SRV fields carry each instance's declared weight; the priority is the default.
    assert set(seen) == {(32001, 10, 1), (32002, 10, 1), (32003, 10, 1), (32004, 1, 1)}, seen
    low, high = bound(n, 1 / 31)  # mean 100, sd 9.8: 51 to 149
    assert low <= seen[(32004, 1, 1)] <= high, seen
    low, high = bound(n, 10 / 31)  # mean 1,000, sd 26: 870 to 1,130
    for port in (32001, 32002, 32003):
        assert low <= seen[(port, 10, 1)] <= high, seen


def test_the_client_library_orders_multivalue_answers_by_priority_then_weight(
        server: Server) -> None:
    library = ServiceResolver(ZONE, nameserver=f"127.0.0.1:{server.port}")
    n = 400
    firsts: Counter[int] = Counter()
    for _ in range(n):
        instances = library.resolve("tiered")
        assert [i.port for i in instances][2:] == [33003]  # priority 2 always last
        assert {i.port for i in instances[:2]} == {33001, 33002}
        assert {(i.port, i.ip) for i in instances} == {(p, ip) for _, ip, p, _, _ in TIERED}
        firsts[instances[0].port] += 1
    low, high = bound(n, 30 / 40)  # mean 300, sd 8.7: 257 to 343
    assert low <= firsts[33001] <= high, firsts
    assert library.queries == n  # TTL 0: one SRV query each; addresses from the additional section

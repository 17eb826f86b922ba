"""The queued mode measured for real: the real Publisher, HostStore, ChangeQueue and ZoneWriter
against DynamoDB, SQS and Route 53 served by a moto server in its own process.

A fleet of H hosts x 20 containers (services of ~50 tasks) publishes its desired states; the
writer drains the queue and writes. Then a 20% deployment (tasks replaced, new ones placed on
random hosts), then one minute of 1% churn, each drained by one write. Reported per phase:
hosts written, changes, Route 53 change and list requests, DynamoDB requests, the writer's
wall time against moto, and whether the zone then equals every host's desired state. The
fleet simulation (bench_fleet) shows what the same design does under Route 53's rate limits;
this shows the real code makes the requests the simulation assumes.
"""

from __future__ import annotations

import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from benchmarks.moto_process import MotoProcess
from ecssd_agent.aws.change_queue import ChangeQueue
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.model import Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.records import host_records
from ecssd_agent.writer.publish import Publisher
from ecssd_agent.writer.zone_writer import ZoneWriter, read_hints
from tests.support.env import FAKE_AWS_ENV
from tests.support.queued import create_hint_queue, create_host_table

ZONE = "servicediscovery.internal."
TABLE = "ecssd-hosts"
CONTAINERS = 20
TASKS_PER_SERVICE = 50


@dataclass
class SimulatedHost:
    host: Host
    publisher: Publisher
    instances: dict[str, ServiceInstance]

    def desired(self) -> list[RecordSet]:
        records, problems = host_records(self.host, self.instances.values(), ZONE,
                                         Routing.WEIGHTED, 0)
        assert not problems, problems
        return records


class Fleet:
    def __init__(self, moto: MotoProcess, hosts: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.clients = Clients(region="us-east-1", max_attempts=10)
        r53 = self.clients.client("route53")
        zone_id = r53.create_hosted_zone(
            Name=ZONE, CallerReference=f"bench-{time.time_ns()}",
            HostedZoneConfig={"PrivateZone": True},
            VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-0123456789abcdef0"})["HostedZone"]["Id"]
        # past 475 hosts the fleet outgrows Route 53's default 10,000 record sets per zone:
        # the quota increase its operator must have asked for (twice what the fleet holds)
        moto.set_zone_record_limit(zone_id, max(10_000, 2 * hosts * (CONTAINERS + 1)))
        ddb = self.clients.client("dynamodb")
        create_host_table(ddb, TABLE)
        url = create_hint_queue(self.clients.client("sqs"))
        self.store = HostStore(ddb, TABLE)
        self.queue = ChangeQueue(self.clients.client("sqs"), url)
        self.zone = Route53Zone(r53, find_zone(r53, ZONE))
        self.writer = ZoneWriter(self.zone, self.store)
        self.services = [f"_svc{n:03d}._tcp" for n in range(max(2, hosts * CONTAINERS
                                                                 // TASKS_PER_SERVICE))]
        self.serial = 0
        self.hosts = [self._host(i) for i in range(hosts)]

    def _host(self, index: int) -> SimulatedHost:
        label = f"ip-10-0-{index // 256}-{index % 256}"
        publisher = Publisher(self.store, self.queue, label, ZONE)
        host = SimulatedHost(Host(label, f"10.0.{index // 256}.{index % 256}"), publisher, {})
        for _ in range(CONTAINERS):
            self._add(host)
        return host

    def _add(self, host: SimulatedHost, service: str | None = None) -> None:
        self.serial += 1
        cid = f"{self.serial:012x}" + f"{self.rng.getrandbits(208):052x}"
        task = f"arn:aws:ecs:us-east-1:123456789012:task/prod/{self.rng.getrandbits(128):032x}"
        host.instances[cid] = ServiceInstance(service or self.rng.choice(self.services), "tcp", 8081,
                                              32768 + self.serial % 28000, cid,
                                              cluster="prod", task_arn=task)

    def replace(self, fraction: float) -> set[int]:
        """Replace ``fraction`` of all tasks; returns the indexes of hosts that changed."""
        everything = [(i, cid) for i, h in enumerate(self.hosts) for cid in h.instances]
        changed: set[int] = set()
        for i, cid in self.rng.sample(everything, int(len(everything) * fraction)):
            service = self.hosts[i].instances.pop(cid).name
            target = self.rng.randrange(len(self.hosts))
            self._add(self.hosts[target], service)
            changed.update((i, target))
        return changed

    def publish(self, indexes: set[int] | None = None) -> float:
        chosen = [self.hosts[i] for i in sorted(indexes)] if indexes is not None else self.hosts
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda h: h.publisher.publish(h.desired()), chosen))
        return time.perf_counter() - started

    def write(self) -> dict[str, Any]:
        """Drain the queue into one write (as one Lambda invocation of a batching window)."""
        messages = []
        while batch := self.queue.receive(wait=0):
            messages.extend(batch)
        before = self.clients.stats.snapshot()
        started = time.perf_counter()
        hints = read_hints({m.id: m.body for m in messages}, ZONE)
        outcome = self.writer.write(hints.hosts)
        seconds = time.perf_counter() - started
        self.queue.delete(messages)
        after = self.clients.stats.snapshot()

        def delta(service: str, operation: str | None = None) -> int:
            return sum(n - before.get(k, 0) for k, n in after.items()
                       if k[0] == service and k[2] == "attempt"
                       and (operation is None or k[1] == operation))

        mismatches = self.mismatches()
        return {"hints": len(messages), "hosts": outcome.hosts, "changes": outcome.changes,
                "change_requests": delta("route53", "ChangeResourceRecordSets"),
                "list_requests": delta("route53", "ListResourceRecordSets"),
                "route53_requests": delta("route53"), "dynamodb_requests": delta("dynamodb"),
                "seconds": seconds, "mismatches": mismatches, "failed": len(outcome.failed)}

    def mismatches(self) -> int:
        want = {r.key: r for h in self.hosts for r in h.desired()}
        have = {r.key: r for r in self.zone.records() if r.set_identifier}
        return sum(1 for k in want.keys() | have.keys() if want.get(k) != have.get(k))


def measure(hosts: int) -> dict[str, dict[str, Any]]:
    moto = MotoProcess()
    saved = {k: os.environ.get(k) for k in (*FAKE_AWS_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update({**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": moto.url})
    try:
        fleet = Fleet(moto, hosts)
        phases: dict[str, dict[str, Any]] = {}
        publish = fleet.publish()
        phases["fleet starts"] = {**fleet.write(), "publish_seconds": publish}
        publish = fleet.publish(fleet.replace(0.20))
        phases["20% deployment"] = {**fleet.write(), "publish_seconds": publish}
        publish = fleet.publish(fleet.replace(0.01))
        phases["1% churn (one minute's)"] = {**fleet.write(), "publish_seconds": publish}
        return phases
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        moto.stop()


#: Hosts in the full run. moto's Route 53 checks every change against its whole journal, so
#: its time grows with the square of the zone: 500 hosts take ~2 minutes, 1,000 about ten
#: times that (``python3 -c "from benchmarks import bench_writer; print(bench_writer.measure(1000))"``).
FULL_HOSTS = 500


def run(quick: bool = False) -> list[dict[str, Any]]:
    hosts = 200 if quick else FULL_HOSTS
    rows: list[dict[str, Any]] = []
    for phase, figures in measure(hosts).items():
        label = f"queued mode, {hosts} hosts x {CONTAINERS}, {phase}"
        rows.append({"area": "writer", "metric": f"{label}: change requests", "value":
                     figures["change_requests"], "unit": "requests",
                     "goal": "a few per write, not one per host",
                     "note": f"{figures['hosts']} hosts, {figures['changes']} changes, "
                             f"{figures['list_requests']} list requests, "
                             f"{figures['dynamodb_requests']} DynamoDB requests, "
                             f"{figures['mismatches']} zone mismatches, "
                             f"{figures['failed']} failed hosts"})
        rows.append({"area": "writer", "metric": f"{label}: writer wall time (moto)",
                     "value": round(figures["seconds"], 2), "unit": "s",
                     "goal": "well within a Lambda timeout",
                     "note": f"agents' publishing took {figures['publish_seconds']:.1f} s "
                             "(16 threads)"})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['metric']}: {row['value']} {row['unit']} ({row['note']})")

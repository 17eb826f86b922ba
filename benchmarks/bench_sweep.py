"""Benchmark: the health sweep over 5 clusters x 100 tasks (500 SRV records), 50 of them hung.

The world is real on one machine (see tests/integration/sweep_world.py): a moto server
(ECS, EC2, Route 53) in its own process, over HTTP, 25 EC2 "hosts" on 127.0.x.y registered as container
instances, 500 tasks started with StartTask, each with a real HTTP server on its host's
address (450 answer 200, 50 accept and never answer), and the records written by each host's
agent. The sweep is ``lambda_handler`` with the default settings (CHECK_TIMEOUT 2 s,
CHECK_RETRIES 3, CHECK_CONCURRENCY 64, CHECK_FAILURES 2), run twice, each time in a new
execution environment: a hung instance is acted on after failing two sweeps in a row, so
the first run counts each failure (a tag on its task) and the second deletes and stops.

Measured: each run's wall time, and AWS calls by operation. Beside them, the reference Lambda's cost for
the same input, computed from its algorithm (it cannot run here: it is Python 2, talks to
real AWS at import and sweeps only the first cluster): checks one after another, so each
hung instance costs timeout x retries; per cluster ListContainerInstances,
DescribeContainerInstances, ListTasks and one DescribeTasks (unpaginated), plus one
DescribeTaskDefinition per task, plus ListClusters.

Each task serves its own service name: moto 5.2 does not implement StartRecordIdentifier, so
a listing page boundary inside many record sets of one name would repeat them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import boto3  # noqa: E402

from benchmarks.moto_process import MotoProcess  # noqa: E402
from benchmarks.rows import result_row  # noqa: E402
from ecssd_agent.aws.clients import Clients  # noqa: E402
from ecssd_agent.sweep.settings import SweepSettings  # noqa: E402
from health_lambda import handler  # noqa: E402

AREA = "sweep"
CHECK_TIMEOUT = SweepSettings.check_timeout  # the defaults: what an operator gets
CHECK_RETRIES = SweepSettings.check_retries


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Fake-AWS environment for this run (rule zero), restored afterwards."""
    from tests.support.env import apply_safe_env

    saved = dict(os.environ)
    try:
        apply_safe_env()
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _row(metric: str, value: float | int | str, unit: str, goal: str = "",
         note: str = "", held: bool | None = None) -> dict[str, Any]:
    """A result row; ``held`` (did the value meet its goal) makes it a headline figure."""
    return result_row(AREA, metric, value, unit, goal=goal, note=note, held=held)


def reference_cost(clusters: int, tasks: int, hung: int, timeout: float, retries: int
                   ) -> tuple[float, int]:
    """(serial seconds spent on hung instances, ECS read calls) of the reference algorithm."""
    serial = hung * timeout * retries
    per_cluster = 4  # ListContainerInstances, DescribeContainerInstances, ListTasks, DescribeTasks
    calls = 1 + clusters * per_cluster + tasks  # ListClusters + ... + DescribeTaskDefinition/task
    return serial, calls


def run(quick: bool = False) -> list[dict[str, Any]]:
    from tests.integration.sweep_world import HANG, OK, HttpFleet, SweepWorld

    clusters, hosts_per_cluster, tasks_per_host, hung_per_host = (
        (2, 2, 10, 1) if quick else (5, 5, 20, 2))
    tasks_total = clusters * hosts_per_cluster * tasks_per_host
    hung_total = clusters * hosts_per_cluster * hung_per_host

    server = MotoProcess()
    fleet = HttpFleet()
    try:
        with _environment(AWS_ENDPOINT_URL=server.url):
            server.manual_ecs_transitions()
            setup_started = time.monotonic()
            world = SweepWorld(server.client, fleet)
            n = 0
            for c in range(clusters):
                for _ in range(hosts_per_cluster):
                    host = world.host(f"bench-{c}")
                    for t in range(tasks_per_host):
                        world.task(host, HANG if t < hung_per_host else OK,
                                   service=f"svc{n:04d}")
                        n += 1
            world.sync()
            setup_s = time.monotonic() - setup_started
            records = len(world.records())

            os.environ["DOMAIN"] = "sd.internal"
            session = boto3.session.Session()
            runs: list[tuple[float, dict[str, Any], dict[str, int]]] = []
            for _ in range(2):  # CHECK_FAILURES sweeps in a row
                clients = Clients(session=session)
                clients.client("ecs"), clients.client("ec2"), clients.client("route53")  # warm
                event, hook = world.bindings_hook()  # the port bindings real ECS reports
                clients.client("ecs").meta.events.register(event, hook)
                handler.runtime.reset(functools.partial(handler.build, clients=clients))
                started = time.monotonic()
                summary = handler.lambda_handler({}, None)
                runs.append((time.monotonic() - started, summary, clients.stats.by_operation()))
                handler.runtime.reset()
    finally:
        fleet.close()
        server.stop()

    ecs_ops = ("ListClusters", "DescribeClusters", "ListContainerInstances",
               "DescribeContainerInstances", "ListTasks", "DescribeTasks",
               "DescribeTaskDefinition")
    (first_wall, first, first_calls), (wall, summary, calls) = runs
    ecs_reads = sum(calls.get(op, 0) for op in ecs_ops)
    stops = calls.get("StopTask", 0)
    tags = first_calls.get("TagResource", 0)
    changes = first_calls.get("ChangeResourceRecordSets", 0) + calls.get(
        "ChangeResourceRecordSets", 0)
    definitions = clusters  # one task definition revision per cluster in this world
    ref_serial, ref_calls = reference_cost(clusters, tasks_total, hung_total, CHECK_TIMEOUT,
                                           CHECK_RETRIES)
    bound = 1 + clusters * 4 + clusters * math.ceil(tasks_total / clusters / 100) + definitions
    counted = (len(first["failing"]) == hung_total and first["deleted"] == 0
               and not first["stopped"] and first["counts_written"] == hung_total
               and not first["errors"])
    ok = (len(summary["unhealthy"]) == hung_total and summary["deleted"] == hung_total
          and len(summary["stopped"]) == hung_total and not summary["errors"])
    shape = (f"{clusters} clusters x {tasks_total // clusters} tasks, {hung_total} hung, "
             f"{records} record sets")
    return [
        _row("sweep wall time, first run (failures counted)", round(first_wall, 2), "s",
             "< 10 s", f"{shape}; timeout {CHECK_TIMEOUT:g} s x {CHECK_RETRIES} attempts, "
             f"concurrency {SweepSettings.check_concurrency}; result "
             f"{'as expected' if counted else 'WRONG'}: {len(first['failing'])} failing "
             f"(1 of {SweepSettings.check_failures}), {first['counts_written']} counts tagged "
             f"({tags} TagResource), {first['deleted']} deleted, errors {first['errors']}; "
             f"phases (s) {first.get('phases_s')}", held=first_wall < 10 and counted),
        _row("sweep wall time", round(wall, 2), "s", "< 10 s",
             f"the second run, which acts: result {'as expected' if ok else 'WRONG'}: "
             f"{len(summary['unhealthy'])} unhealthy, {summary['deleted']} deleted, "
             f"{len(summary['stopped'])} stopped, errors {summary['errors']}; phases (s) "
             f"{summary.get('phases_s')}", held=wall < 10 and ok),
        _row("reference serial check time (computed)", ref_serial, "s", "> 300 s for the full input",
             f"{hung_total} hung x {CHECK_RETRIES} attempts x {CHECK_TIMEOUT:g} s, healthy checks "
             "not counted"),
        _row("ECS read calls", ecs_reads, "calls",
             f"O(clusters + tasks/100 + task definitions) = {bound}",
             "per run (the second): " + ", ".join(f"{op} {calls[op]}" for op in ecs_ops
                                                  if calls.get(op))),
        _row("reference ECS read calls (computed)", ref_calls, "calls", "",
             "ListClusters + 4 per cluster + DescribeTaskDefinition per task"),
        _row("StopTask calls", stops, "calls", f"= hung instances ({hung_total})", ""),
        _row("TagResource calls", tags, "calls", f"= hung instances ({hung_total}), first run",
             "each failure in a row counted on its task"),
        _row("Route 53 change requests", changes, "requests",
             "1 (deletes batched)", f"both runs; ListResourceRecordSets "
             f"{calls.get('ListResourceRecordSets', 0)} per run", held=changes == 1),
        _row("EC2 DescribeInstances calls", calls.get("DescribeInstances", 0), "calls",
             "one per cluster per 100 instances", "per run"),
        _row("world setup time", round(setup_s, 1), "s", "", "moto + HTTP servers + agent syncs; "
             "not part of the sweep"),
    ]


def main() -> None:
    quick = "--quick" in sys.argv
    for row in run(quick=quick):
        print(f"{row['metric']:<42} {row['value']!s:>8} {row['unit']:<8} goal {row['goal']}"
              + (f"  ({row['note']})" if row["note"] else ""))


if __name__ == "__main__":
    main()

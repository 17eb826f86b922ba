"""A fleet in virtual time: hosts, their containers, ECS churn, host failures, the health
sweep and a deployment, all in one :class:`~benchmarks.fleet.world.World` (the clock, the
simulated Route 53 and the intents that prove every change landed).

Workload (``FleetConfig``): every host runs ``containers_per_host`` containers, tasks of
services of ~``tasks_per_service`` tasks each (Route 53 allows at most 100 weighted record
sets of one name and type, so no service can have more registered instances). Churn:
``churn_per_minute`` of all containers are replaced per minute (stopped; a new task starts
on another host a few seconds later). Hosts fail at ``host_failures_per_hour``; ECS
reschedules their tasks elsewhere, the health sweep (every ``sweep_interval``, one full
listing) deletes their record sets once ECS has deregistered the instance, and a new host
joins later. The sweep also finds a few unhealthy instances, deletes their records and stops
their tasks. At ``steady`` s a deployment replaces ``burst_fraction`` of all tasks within
``burst_window`` s. After ``observe`` more seconds the workload stops and the run drains.

In queued mode (``policy.mode == "queued"``) the hosts publish to the zone writer
(benchmarks/fleet/writer.py, configured by ``FleetConfig.writer``) instead of writing; the
sweep still deletes dead hosts' records itself, and the bookkeeping is the same.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Generator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fleet.engine import Instruction
from benchmarks.fleet.host import DaemonPolicy, SimContainer, SimHost, make_container
from benchmarks.fleet.retry import BotocoreClient, RetryPolicy
from benchmarks.fleet.route53 import CHANGE, GET_ZONE, LIST, Limits, RecordKey, owner_of
from benchmarks.fleet.world import ZONE, World
from benchmarks.fleet.writer import QueuedWriter, WriterConfig, WriterCosts, WriterSummary
from ecssd_agent.aws.route53 import batches
from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Kind
from ecssd_agent.core.plan import plan

SOA = "ns-1.awsdns-00.com. hostmaster. 1 7200 900 1209600 86400"
SUSTAINED_RATIO = 0.01
SUSTAINED_MINUTES = 3
INF = float("inf")
CLUSTER = "prod"


@dataclass(frozen=True)
class FleetConfig:
    hosts: int
    policy: DaemonPolicy
    limits: Limits = field(default_factory=Limits)
    containers_per_host: int = 20
    tasks_per_service: int = 50
    churn_per_minute: float = 0.01
    host_failures_per_hour: float = 0.01
    unhealthy_per_sweep: float = 0.0005
    sweep_interval: float = 300.0
    dead_after: float = 60.0
    replace_after: float = 180.0
    reschedule: tuple[float, float] = (30.0, 90.0)
    start_delay: tuple[float, float] = (1.0, 10.0)
    warmup: float = 60.0
    steady: float = 540.0
    burst_fraction: float = 0.2
    burst_window: float = 30.0
    observe: float = 240.0
    drain: float = 1800.0
    seed: int = 1
    writer: WriterConfig = field(default_factory=WriterConfig)  # queued mode only


@dataclass
class FleetResult:
    """What one run measured; ``holds`` is the issue's goal for these settings."""

    hosts: int
    containers: int
    records: int
    policy: str
    limits: str
    steady_rps: float
    steady_by_op: dict[str, float]
    steady_throttled: int
    steady_pnc: int
    steady_attempts: int
    steady_throttle_ratio: float
    worst_minute_throttle_ratio: float
    throttled_minutes_in_a_row: int  # longest run of steady minutes with >1% Throttling
    burst_changes: int
    burst_convergence: float  # seconds from the deployment start until every change applied
    burst_insync: float  # ... until every change INSYNC
    burst_throttled: int
    latency_p50: float
    latency_p95: float
    lost_updates: int
    zone_mismatches: int
    failed_applies: int
    rejected_batches: int
    host_failures: int
    events: int
    virtual_seconds: float
    wall_seconds: float
    burst_change_requests: int = 0  # accepted change requests that carried deployment changes
    #: changes (by a host or the writer, never the sweep) that wrote an older state of a live
    #: host over a newer one already in the zone (see World._check_regression). Each arms an
    #: intent, so it counts as a lost update until a later change repairs it.
    regressions: int = 0
    regression_repair_max: float = 0.0  # seconds until the slowest repaired one was repaired
    late_writes: int = 0  # late writes of an intermediate state (see World._check_regression)
    requests_by_caller: dict[str, int] = field(default_factory=dict)  # "hosts", "sweep", "writer"
    writer: WriterSummary | None = None  # queued mode
    #: queued mode: what the steady period (warm-up to the deployment) cost in AWS requests
    #: and Lambda time
    writer_costs: WriterCosts | None = None
    writer_cpu_max: float = 0.0  # CPU seconds of the longest writer invocation (this machine)
    #: CPU seconds of the writer invocations of ``writer_costs``'s period (this machine): the
    #: part of a real invocation's duration that virtual time leaves out
    writer_cpu_steady: float = 0.0

    @property
    def sustained_throttling(self) -> bool:
        """Throttling (the rate limits, not PriorRequestNotComplete) in more than 1% of the
        requests of SUSTAINED_MINUTES or more consecutive steady-state minutes."""
        return self.throttled_minutes_in_a_row >= SUSTAINED_MINUTES

    @property
    def holds(self) -> bool:
        """The issue's goal: no sustained throttling, the deployment converged (applied)
        within 2 minutes, and every intended change landed."""
        return (not self.sustained_throttling and self.burst_convergence <= 120.0
                and self.lost_updates == 0 and self.zone_mismatches == 0
                and self.regressions == 0
                and (self.writer is None or self.writer.function_errors == 0))


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Fleet:
    """The hosts and their workload in one :class:`World`; ``run`` measures it."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.world = World(config.limits, config.seed)
        self.rng = random.Random(f"fleet:{config.seed}")
        self.hosts: list[SimHost] = []
        self.alive: list[SimHost] = []
        self.dead_at: dict[str, float] = {}
        self.running: list[tuple[SimHost, str]] = []
        self._running_index: dict[str, int] = {}
        self.services = [f"_svc{n:03d}._tcp" for n in range(
            max(2, round(config.hosts * config.containers_per_host / config.tasks_per_service)))]
        self.foreign: list[RecordSet] = []
        self._serial = 0
        self.workload_on = True
        self.sweep_client = BotocoreClient(RetryPolicy(), random.Random(f"sweep:{config.seed}"), "sweep")
        self.writer = (QueuedWriter(self.world, config.writer, config.seed)
                       if config.policy.mode == "queued" else None)

    # --- building the fleet ----------------------------------------------------------

    def _new_host(self) -> SimHost:
        index = len(self.hosts)
        label = f"ip-10-{index // 65536 % 256}-{index // 256 % 256}-{index % 256}"
        writer = self.writer
        host = SimHost(self.world, label,
                       f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
                       self.config.policy, random.Random(f"host:{self.config.seed}:{index}"),
                       publisher=writer.publisher(label) if writer is not None else None,
                       publish_latency=writer.config.publish_latency if writer is not None else 0.0)
        self.hosts.append(host)
        self.world.tenants[label] = host
        self.alive.append(host)
        return host

    def _container(self, host: SimHost, service: str, tag: str) -> SimContainer:
        self._serial += 1
        cid = f"{self._serial:012x}{self.rng.getrandbits(208):052x}"
        task = f"{self.rng.getrandbits(128):032x}"
        return make_container(cid, service, host.port(), CLUSTER, task, tag)

    def _track(self, host: SimHost, cid: str) -> None:
        self._running_index[cid] = len(self.running)
        self.running.append((host, cid))

    def _untrack(self, cid: str) -> None:
        index = self._running_index.pop(cid, None)
        if index is None:
            return
        last = self.running.pop()
        if index < len(self.running):
            self.running[index] = last
            self._running_index[last[1]] = index

    def build(self) -> None:
        """The fleet as it stands after running a while: records in place, hosts in step."""
        config = self.config
        for record in (RecordSet(ZONE, "NS", ("ns-1.awsdns-00.com.",), 172800),
                       RecordSet(ZONE, "SOA", (SOA,), 900),
                       *(RecordSet(f"static{n}.{ZONE}", "A", (f"192.0.2.{n}",), 300) for n in range(8))):
            self.world.r53.zone.put(record)
            self.foreign.append(record)
        for _ in range(config.hosts):
            host = self._new_host()
            for service in (self.rng.choice(self.services) for _ in range(config.containers_per_host)):
                container = self._container(host, service, "initial")
                host.containers[container.container.id] = container
                self._track(host, container.container.id)
            for record in host.desired():
                self.world.r53.zone.put(record)
                assert host.known is not None
                host.known[record.key] = record
        if self.writer is not None:
            self._seed_writer(self.writer)
        zone_records = len(self.world.r53.zone)
        for host in self.hosts:
            host.start(self.rng.uniform(0, config.policy.resync), zone_records, startup=False)

    def _seed_writer(self, writer: QueuedWriter) -> None:
        """Queued mode: each host has published its state and the writer applied it; the
        writer last read each host at a random point of its verification period (so a run
        meets the reads that drift repair costs at this fleet size)."""
        rng = random.Random(f"seed-writer:{self.config.seed}")
        writer.accepting = False  # these hints were handled before the run
        ages = {}
        for host in self.hosts:
            assert host.publisher is not None
            host.publisher.publish(host.desired())
            ages[host.host.label] = rng.uniform(0.0, writer.config.verify_after)
        writer.seed_applied(ages)
        writer.accepting = True

    # --- workload --------------------------------------------------------------------

    def _place(self) -> SimHost:
        a, b = self.rng.choice(self.alive), self.rng.choice(self.alive)
        return a if len(a.containers) <= len(b.containers) else b

    def start_task(self, service: str, tag: str) -> None:
        if not self.alive:
            return
        self.start_task_on(self._place(), service, tag)

    def start_task_on(self, host: SimHost, service: str, tag: str) -> str:
        """A task of ``service`` starts on ``host``; returns its container id."""
        container = self._container(host, service, tag)
        self._track(host, container.container.id)
        host.add_container(container)
        return container.container.id

    def stop_task(self, host: SimHost, cid: str, tag: str, replace_after: tuple[float, float] | None) -> None:
        if not host.alive or cid not in host.containers:
            return
        service = host.containers[cid].instances[0].name
        self._untrack(cid)
        host.remove_container(cid, tag)
        if replace_after is not None:
            self.world.sched.after(self.rng.uniform(*replace_after), self.start_task, service, tag)

    def _churn(self) -> None:
        if not self.workload_on:
            return
        rate = len(self.running) * self.config.churn_per_minute / 60.0
        if rate > 0 and self.running:
            host, cid = self.rng.choice(self.running)
            self.stop_task(host, cid, "churn", self.config.start_delay)
        self.world.sched.after(self.rng.expovariate(max(rate, 1e-6)), self._churn)

    def _host_failure(self) -> None:
        if not self.workload_on:
            return
        rate = len(self.alive) * self.config.host_failures_per_hour / 3600.0
        if len(self.alive) > 1:
            self.kill_host(self.rng.choice(self.alive))
        self.world.sched.after(self.rng.expovariate(max(rate, 1e-9)), self._host_failure)

    def kill_host(self, host: SimHost) -> None:
        """The instance is gone: its agent writes nothing more; ECS reschedules its tasks."""
        host.die()
        self.alive.remove(host)
        self.dead_at[host.host.label] = self.world.now
        self.world.metrics.host_failures += 1
        keys = set(self.world.r53.zone.by_host.get(host.host.label, ())) | set(host.known or ())
        keys.update(r.key for r in host.desired())
        for key in sorted(keys, key=str):  # its records must go, landed or not
            self.world.expect(key, None, "sweep")
        for cid, container in list(host.containers.items()):
            self._untrack(cid)
            self.world.sched.after(self.rng.uniform(*self.config.reschedule), self.start_task,
                                   container.instances[0].name, "failover")
        self.world.sched.after(self.config.replace_after, self._join)

    def _join(self) -> None:
        host = self._new_host()
        for record in host.desired():
            self.world.expect(record.key, record, "startup")
        host.start(self.rng.uniform(0, self.config.policy.resync), None, startup=True)

    def deployment(self) -> None:
        """Replace ``burst_fraction`` of all tasks within ``burst_window`` seconds."""
        config = self.config
        candidates = list(self.running)
        chosen = self.rng.sample(candidates, int(len(candidates) * config.burst_fraction))
        for host, cid in chosen:
            service = host.containers[cid].instances[0].name
            self.world.sched.after(self.rng.uniform(0, config.burst_window), self.start_task,
                                   service, "burst")
            self.world.sched.after(self.rng.uniform(0, config.burst_window), self.stop_task,
                                   host, cid, "burst", None)

    # --- the health sweep ------------------------------------------------------------

    def _sweep_tick(self) -> None:
        if self.workload_on or self.world.intents or self._dead_records():
            self.world.sched.spawn(self._sweep(), self.world.r53.handle)
        self.world.sched.after(self.config.sweep_interval, self._sweep_tick)

    def _sweep(self) -> Generator[Instruction, Any, None]:
        self.world.metrics.sweep_runs += 1
        records = yield from self.world.list_zone(self.sweep_client)
        if records is None:
            self.world.metrics.sweep_failures += 1
            return
        now = self.world.now
        dead = {h for h, t in self.dead_at.items() if now - t >= self.config.dead_after}
        unhealthy: dict[str, tuple[SimHost, str]] = {}
        if self.workload_on:
            for host, cid in self.running:
                if self.rng.random() < self.config.unhealthy_per_sweep:
                    unhealthy[cid[:12]] = (host, cid)

        def doomed(record: RecordSet) -> bool:
            owner = owner_of(record.set_identifier)
            if owner is None or owner.kind is not Kind.HOST:
                return False
            return owner.host in dead or (owner.container in unhealthy
                                          and unhealthy[owner.container][0].host.label == owner.host)

        changes = plan(records, [], doomed)
        for batch in batches(changes):
            response = yield from self.sweep_client.call(CHANGE, {"changes": batch})
            if not response.ok:
                self.world.metrics.sweep_failures += 1
                return  # the next sweep lists again
        for host, cid in unhealthy.values():
            self.world.sched.after(self.rng.uniform(1, 5), self.stop_task, host, cid, "unhealthy",
                                   self.config.start_delay)

    # --- running ---------------------------------------------------------------------

    def expected_zone(self) -> dict[RecordKey, RecordSet]:
        want = {r.key: r for r in self.foreign}
        for host in self.alive:
            want.update((r.key, r) for r in host.desired())
        return want

    def _dead_records(self) -> bool:
        """Record sets of dead hosts are still in the zone (in queued mode, a publication
        still queued when its host died may land after the host's death)."""
        return any(self.world.r53.zone.by_host.get(label) for label in self.dead_at)

    def quiet(self) -> bool:
        return (not self.world.intents
                and all(not h.busy and not h.dirty and h.retry_at is None for h in self.alive)
                and (self.writer is None or self.writer.idle) and not self._dead_records())

    def run(self) -> FleetResult:
        config = self.config
        started = time.perf_counter()
        # the writer's memoisation covers the build too (its seeding goes through the store)
        with self.writer.running() if self.writer is not None else nullcontext():
            self.build()
            self.world.sched.after(self.rng.uniform(0, config.sweep_interval), self._sweep_tick)
            self.world.sched.after(0.0, self._churn)
            if config.host_failures_per_hour > 0:
                rate = config.hosts * config.host_failures_per_hour / 3600.0
                self.world.sched.after(self.rng.expovariate(rate), self._host_failure)
            self.world.sched.at(config.steady, self.deployment)
            self.world.sched.run(config.steady)
            steady = self.world.r53.stats.window(config.warmup, config.steady)
            end = config.steady + config.observe
            self.world.sched.run(end)
            self.workload_on = False
            self.world.sched.run(end + config.drain, stop=self.quiet)
        wall = time.perf_counter() - started
        return self._result(steady, wall)

    def _result(self, steady: Counter[str], wall: float) -> FleetResult:
        config = self.config
        span = config.steady - config.warmup
        windows = [self.world.r53.stats.window(t, t + 60.0)
                   for t in range(int(config.warmup), int(config.steady) - 59, 60)]
        ratios = [(w["throttled"] / w["attempt"]) if w["attempt"] else 0.0 for w in windows]
        worst = max(ratios, default=0.0)
        run = longest = 0
        for ratio in ratios:
            run = run + 1 if ratio > SUSTAINED_RATIO else 0
            longest = max(longest, run)
        burst = self.world.r53.stats.window(config.steady, config.steady + config.observe)
        steady_latency = [latency for since, latency in self.world.metrics.latencies.get("churn", [])
                          if config.warmup <= since < config.steady]
        want = self.expected_zone()
        have = {r.key: r for r in self.world.r53.zone.records()}
        mismatches = sum(1 for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        converged = self.world.metrics.burst_outstanding == 0 and self.world.metrics.burst_total > 0
        convergence = (self.world.metrics.burst_last_applied - config.steady) if converged else INF
        writer = costs = None
        cpu_steady = 0.0
        if self.writer is not None:
            until = config.steady + min(convergence, config.observe)
            writer = WriterSummary.of(self.writer.stats, (config.steady, until))
            costs = WriterCosts.of(self.writer, (config.warmup, config.steady))
            cpu_steady = sum(c.cpu_seconds for c in self.writer.stats.costs
                             if config.warmup <= c.started < config.steady)
        callers: Counter[str] = Counter()
        for caller, count in self.world.r53.stats.callers.items():
            callers["sweep" if caller == "sweep" else
                    "writer" if caller.startswith("writer-") else "hosts"] += count
        return FleetResult(
            hosts=config.hosts,
            containers=config.hosts * config.containers_per_host,
            records=len(have),
            policy=config.policy.name,
            limits=config.limits.name,
            steady_rps=steady["attempt"] / span,
            steady_by_op={op: steady[op] / span for op in (LIST, CHANGE, GET_ZONE) if steady[op]},
            steady_throttled=steady["throttled"],
            steady_pnc=steady["pnc"],
            steady_attempts=steady["attempt"],
            steady_throttle_ratio=steady["throttled"] / steady["attempt"] if steady["attempt"] else 0.0,
            worst_minute_throttle_ratio=worst,
            throttled_minutes_in_a_row=longest,
            burst_changes=self.world.metrics.burst_total,
            burst_convergence=convergence,
            burst_insync=(self.world.metrics.burst_last_insync - config.steady) if converged else INF,
            burst_throttled=burst["throttled"] + burst["pnc"],
            latency_p50=percentile(steady_latency, 0.5),
            latency_p95=percentile(steady_latency, 0.95),
            lost_updates=len(self.world.intents),
            zone_mismatches=mismatches,
            failed_applies=self.world.metrics.failed_applies,
            rejected_batches=self.world.metrics.rejected,
            host_failures=self.world.metrics.host_failures,
            events=self.world.sched.events,
            virtual_seconds=self.world.now,
            wall_seconds=wall,
            burst_change_requests=self.world.metrics.burst_requests,
            regressions=self.world.metrics.regressions,
            late_writes=self.world.metrics.late,
            regression_repair_max=max((latency for _, latency in
                                       self.world.metrics.latencies.get("regression", [])), default=0.0),
            requests_by_caller=dict(sorted(callers.items())),
            writer=writer,
            writer_costs=costs,
            writer_cpu_max=self.writer.cpu_seconds_max if self.writer is not None else 0.0,
            writer_cpu_steady=cpu_steady,
        )


def simulate(config: FleetConfig) -> FleetResult:
    """Run one configuration; deterministic for a given ``config`` (seed included)."""
    return Fleet(config).run()

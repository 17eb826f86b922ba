"""One host's agent daemon in the simulation, running the agent's real planning code.

Per host: ``metadata.service_instances`` turns its containers into service instances,
``records.host_records`` into the record sets it should own, ``plan.plan`` (with the
agent's ``owned_by_host``) into changes, ``route53.batches`` into requests, and
``zone_reads.NameScan`` reads names. Only the I/O is simulated: every request goes through
the botocore retry model to the simulated Route 53, in virtual time.

The daemon's behaviour (issue 4) is a :class:`DaemonPolicy`: container events mark the host
dirty and, after the coalescing window, one plan against what the host believes it owns is
applied (one request per batch); a resync every ``resync`` seconds (jittered) re-reads the
containers and, depending on ``resync_read``, the zone; a failed apply is retried with a
capped, jittered backoff, and the pending state is never dropped.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.fleet.engine import Call, Instruction, Sleep
from benchmarks.fleet.retry import RETRYABLE, BotocoreClient, RetryPolicy
from benchmarks.fleet.route53 import CHANGE, GET_ZONE, LIST, RecordKey, Response, owner_of
from ecssd_agent.aws.route53 import batches
from ecssd_agent.metadata import service_instances
from ecssd_agent.model import Action, Change, Container, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.plan import Owns, plan
from ecssd_agent.records import host_records
from ecssd_agent.zone_reads import NameRead, NameScan, read_interval, scan_cost_estimate

if TYPE_CHECKING:
    from benchmarks.fleet.world import World

Work = Generator[Instruction, Any, bool]


@dataclass(frozen=True)
class DaemonPolicy:
    """How the daemon reads and writes; the fleet simulation compares these.

    ``resync_read``: ``full`` lists the whole zone on every resync (``Agent.sync``);
    ``names`` lists only this host's names on every resync; ``budget`` reads this host's
    names only when :func:`zone_reads.read_interval` says the fleet can afford it, and
    otherwise plans against what the host knows it owns. ``startup``: ``full``/``names`` read
    before the first plan; ``upsert`` writes the desired record sets with one UPSERT batch
    and no read (the read follows at a random point of the read interval).
    ``coalesce_max`` > ``coalesce`` widens the coalescing window to it for a minute after a
    request of this host needed retries (back-pressure), 0 disables that.
    ``replan_retries``: change requests are sent with a single botocore attempt and the
    daemon retries throttled ones itself, with botocore's backoff, re-planning before each
    attempt so that every attempt carries everything pending (botocore would resend the
    stale batch while new changes queue behind it).
    """

    name: str
    resync: float = 300.0
    resync_jitter: float = 0.1
    coalesce: float = 0.25
    coalesce_max: float = 0.0
    resync_read: str = "full"
    startup: str = "full"
    read_budget: float = 0.5
    backoff_base: float = 2.0
    backoff_cap: float = 60.0
    max_rejections: int = 3
    replan_retries: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class SimContainer:
    container: Container
    instances: list[ServiceInstance]
    tag: str
    records: list[RecordSet] | None = None  # its SRV record sets, built once


def host_owns(label: str) -> Owns:
    """``agent.owned_by_host(label)`` with the SetIdentifier parse memoised across hosts.

    Same test (the SetIdentifier parses exactly, kind "h", this host), but every host of the
    simulation reads the same 21,000 identifiers: parsing each once instead of once per host
    keeps a 1,000-host run in seconds. tests/unit/test_fleet_sim.py checks the two agree.
    """

    def owns(record: RecordSet) -> bool:
        owner = owner_of(record.set_identifier)
        return owner is not None and owner.kind == "h" and owner.host == label

    return owns


def make_container(cid: str, service: str, port: int, cluster: str, task: str, tag: str) -> SimContainer:
    """A container as the Docker adapter would describe it (ECS labels, SERVICE_ env)."""
    container = Container(
        id=cid, name=f"ecs-{service.strip('_').split('.')[0]}-{cid[:6]}",
        env={"SERVICE_8080_NAME": service},
        labels={"com.amazonaws.ecs.task-arn": f"arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{task}",
                "com.amazonaws.ecs.cluster": cluster,
                "com.amazonaws.ecs.container-name": "app"},
        ports={"8080/tcp": (port,)},
    )
    instances, problems = service_instances(container)
    if problems:
        raise ValueError(f"simulated container has bad metadata: {problems}")
    return SimContainer(container, instances, tag)


class SimHost:
    """The daemon of one host (or what is left of it once the host died)."""

    def __init__(self, world: World, label: str, ip: str, policy: DaemonPolicy,
                 rng: random.Random) -> None:
        self.world = world
        self.host = Host(label, ip)
        self.policy = policy
        self.rng = rng
        self.client = BotocoreClient(policy.retry, rng, label)
        self.owns: Owns = host_owns(label)
        self.containers: dict[str, SimContainer] = {}
        self.memory: dict[RecordKey, RecordSet] = {}
        self.alive = True
        self.busy = False
        self.dirty_since: float | None = None
        self.wake_at: float | None = None
        self.resync_pending = False
        self.startup_pending = False
        self.failures = 0
        self.pressure_until = -1.0
        self.next_read = 0.0
        self.reads = 0
        self.next_port = 32768
        self._desired: list[RecordSet] | None = None
        self._a_record: RecordSet | None = None

    # --- state -----------------------------------------------------------------------

    def desired(self) -> list[RecordSet]:
        """``records.host_records`` of this host's containers.

        Built per container and cached (the host's A record first, then each container's
        SRV record sets): the same list ``host_records`` returns for all containers at once,
        because record keys carry the container id and never collide across containers.
        """
        if self._desired is None:
            if self._a_record is None:
                self._a_record = self._host_records([])[0]
            records = [self._a_record]
            for container in self.containers.values():
                if container.records is None:
                    container.records = self._host_records(container.instances)[1:]
                records.extend(container.records)
            self._desired = records
        return self._desired

    def _host_records(self, instances: list[ServiceInstance]) -> list[RecordSet]:
        records, problems = host_records(self.host, instances, self.world.zone_name,
                                         Routing.WEIGHTED, 0)
        if problems:
            raise ValueError(f"{self.host.label}: {problems}")
        return records

    def port(self) -> int:
        self.next_port += 1
        return self.next_port

    def add_container(self, container: SimContainer) -> None:
        before = {r.key for r in self.desired()}
        self.containers[container.container.id] = container
        self._desired = None
        for record in self.desired():
            if record.key not in before:
                self.world.expect(record.key, record, container.tag)
        self.touch(self.coalesce_window())

    def remove_container(self, cid: str, tag: str) -> None:
        if self.containers.pop(cid, None) is None:
            return
        before = self.desired()
        self._desired = None
        after = {r.key for r in self.desired()}
        for record in before:
            if record.key not in after:
                self.world.expect(record.key, None, tag)
        self.touch(self.coalesce_window())

    def coalesce_window(self) -> float:
        policy = self.policy
        if policy.coalesce_max > policy.coalesce and self.world.now < self.pressure_until:
            return policy.coalesce_max
        return policy.coalesce

    # --- scheduling ------------------------------------------------------------------

    def start(self, resync_phase: float, read_phase: float | None, startup: bool) -> None:
        """Begin: a resync timer at ``resync_phase``; optionally a startup reconcile now."""
        world = self.world
        world.sched.after(resync_phase, self._resync_tick)
        if read_phase is not None:
            self.next_read = world.now + read_phase
        if startup:
            self.startup_pending = True
            self.touch(0.0)

    def touch(self, delay: float) -> None:
        now = self.world.now
        if self.dirty_since is None:
            self.dirty_since = now
        self._schedule(max(now, self.dirty_since + delay))

    def _schedule(self, when: float) -> None:
        if self.busy or not self.alive:
            return
        if self.wake_at is not None and self.wake_at <= when:
            return
        self.wake_at = when
        self.world.sched.at(when, self._wake, when)

    def _wake(self, when: float) -> None:
        if self.wake_at != when or self.busy or not self.alive:
            return
        self.wake_at = None
        self.busy = True
        self.world.sched.spawn(self._work(), self.world.r53.handle, self._done)

    def _done(self, ok: bool) -> None:
        self.busy = False
        if not self.alive:
            return
        now = self.world.now
        if ok:
            self.failures = 0
            if self.dirty_since is not None or self.resync_pending:
                self._schedule(max(now, (self.dirty_since or now) + self.coalesce_window()))
            return
        self.failures += 1
        self.world.metrics.failed_applies += 1
        if self.dirty_since is None:
            self.dirty_since = now
        backoff = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (self.failures - 1))
        self._schedule(now + backoff * self.rng.uniform(0.5, 1.5))

    def _resync_tick(self) -> None:
        if not self.alive:
            return
        jitter = self.policy.resync_jitter
        self.world.sched.after(self.policy.resync * self.rng.uniform(1 - jitter, 1 + jitter),
                               self._resync_tick)
        self.resync_pending = True
        self.touch(0.0)

    def die(self) -> None:
        self.alive = False

    # --- the work: read (if due), plan, apply ------------------------------------------

    def _call(self, op: str, params: dict[str, Any]) -> Generator[Instruction, Any, Response]:
        response: Response = yield from self.client.call(op, params)
        if self.client.last_attempts > 1 or (not response.ok and response.error != "InvalidChangeBatch"):
            self.pressure_until = self.world.now + 60.0  # Route 53 pushed back: batch more
        return response

    def _call_once(self, op: str, params: dict[str, Any]) -> Generator[Instruction, Any, Response]:
        response: Response = yield Call(op, params, self.host.label)
        if not response.ok and response.error != "InvalidChangeBatch":
            self.pressure_until = self.world.now + 60.0
        return response

    def _work(self) -> Work:
        if self.startup_pending:
            ok = yield from self._startup()
            if not ok:
                return False
            self.startup_pending = False
        if self.resync_pending:
            self.resync_pending = False
            ok = yield from self._resync_read()
            if not ok:
                self.resync_pending = True
                return False
        return (yield from self._converge())

    def _converge(self) -> Work:
        """Plan against what this host believes it owns and apply; re-read on rejection."""
        rejections = 0
        attempt = 1
        retry = self.policy.retry
        while True:
            self.dirty_since = None
            changes = plan(list(self.memory.values()), self.desired(), self.owns)
            if not changes:
                return True
            for batch in batches(changes):
                if self.policy.replan_retries:
                    response = yield from self._call_once(CHANGE, {"changes": batch})
                else:
                    response = yield from self._call(CHANGE, {"changes": batch})
                if not self.alive:
                    return True
                if response.ok:
                    self._remember(batch)
                    continue
                if self.policy.replan_retries and response.error in RETRYABLE:
                    if attempt >= retry.max_attempts:
                        return False
                    yield Sleep(self.rng.random() * min(2.0 ** (attempt - 1), retry.max_backoff))
                    attempt += 1
                    break  # re-plan: the next attempt carries whatever arrived meanwhile
                if response.error != "InvalidChangeBatch":
                    return False
                rejections += 1
                self.world.metrics.rejected += 1
                read = yield from self.read_names({c.record.name for c in batch})
                if read is None:
                    return False
                self.memory = {r.key: r for r in read.merged_into(self.memory.values())}
                if rejections >= self.policy.max_rejections:
                    return False
                break
            else:
                return True

    def _remember(self, batch: list[Change]) -> None:
        for change in batch:
            if change.action is Action.DELETE:
                self.memory.pop(change.record.key, None)
            else:
                self.memory[change.record.key] = change.record

    def _resync_read(self) -> Work:
        mode = self.policy.resync_read
        if mode == "full":
            return (yield from self._read_all())
        if mode == "names":
            read = yield from self.read_names(self._names())
            if read is None:
                return False
            self.memory = {r.key: r for r in read.merged_into(self.memory.values())}
            return True
        if mode == "budget":
            if self.world.now < self.next_read:
                return True
            return (yield from self._budgeted_read())
        if mode == "none":
            return True
        raise ValueError(f"unknown resync_read {mode!r}")

    def _names(self) -> set[str]:
        return {r.name for r in self.desired()} | {r.name for r in self.memory.values()}

    def _read_all(self) -> Work:
        records = yield from self.world.list_zone(self.client)
        if records is None:
            return False
        self.memory = {r.key: r for r in records if self.owns(r)}
        self.reads += 1
        return True

    def read_names(self, names: set[str]) -> Generator[Instruction, Any, NameRead | None]:
        """``zone_reads.NameScan`` driven through the simulated paginator."""
        scan = NameScan(names, self.owns, self.world.decode)
        while (start := scan.next_start()) is not None:
            params: dict[str, Any] = {"start_name": start}
            while True:
                response = yield from self._call(LIST, params)
                if not response.ok:
                    return None
                page = response.data
                if not scan.feed(page):
                    break
                params = {"start_name": page["NextRecordName"], "start_type": page["NextRecordType"],
                          "start_identifier": page.get("NextRecordIdentifier")}
        return scan.result()

    def _zone_size(self) -> Generator[Instruction, Any, int | None]:
        response = yield from self._call(GET_ZONE, {})
        return int(response.data["HostedZone"]["ResourceRecordSetCount"]) if response.ok else None

    def _budgeted_read(self) -> Work:
        count = yield from self._zone_size()
        if count is None:
            return False
        read = yield from self.read_names(self._names())
        if read is None:
            return False
        self.memory = {r.key: r for r in read.merged_into(self.memory.values())}
        self.reads += 1
        interval = read_interval(count, len(self.desired()), read.requests + 1,
                                 floor=self.policy.resync, budget=self.policy.read_budget)
        self.next_read = self.world.now + interval * self.rng.uniform(0.75, 1.25)
        return True

    def _startup(self) -> Work:
        mode = self.policy.startup
        if mode == "full":
            return (yield from self._read_all())
        if mode == "names":
            read = yield from self.read_names(self._names())
            if read is None:
                return False
            self.memory = {r.key: r for r in read.records}
            return True
        if mode != "upsert":
            raise ValueError(f"unknown startup {mode!r}")
        count = yield from self._zone_size()
        if count is None:
            return False
        desired = self.desired()
        interval = read_interval(count, len(desired), scan_cost_estimate(len(self._names())),
                                 floor=self.policy.resync, budget=self.policy.read_budget)
        self.next_read = self.world.now + interval * self.rng.random()
        for batch in batches([Change(Action.UPSERT, r) for r in desired]):
            response = yield from self._call(CHANGE, {"changes": batch})
            if response.ok:
                self._remember(batch)
                continue
            if response.error != "InvalidChangeBatch":
                return False
            read = yield from self.read_names(self._names())  # e.g. a routing policy change
            if read is None:
                return False
            self.memory = {r.key: r for r in read.records}
            return True
        return True

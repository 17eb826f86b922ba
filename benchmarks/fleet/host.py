"""One host's agent daemon in the simulation, running the agent's real code wherever it
does not do I/O.

Real code per host: ``metadata.service_instances`` (containers -> service instances),
``records.host_records`` (-> the record sets the host should own), ``plan.plan`` with the
agent's ownership test, ``route53.batches``, ``zone_reads.NameScan`` and
``zone_reads.read_interval``, and the daemon's own ``Coalescer`` (ecssd_agent/agent/daemon.py),
which decides when a batch of Docker events is applied. Only the I/O is simulated: every
request goes through the botocore retry model to the simulated Route 53, in virtual time.

The loop mirrors ``ecssd_agent.agent.daemon.Daemon``: an event marks the host dirty and feeds the
coalescer; when the batch is due, the host plans its whole desired state against the record
sets it knows it owns and applies the difference (one request per batch). A rejected batch
is re-planned on a fresh read (``converge``: 3 attempts). A periodic resync (``resync``,
jittered +-10%) re-reads the containers and reads the zone. After a failure nothing runs
until a doubling backoff (0.5 s to 30 s) ends; the pending state is never dropped. What
differs between designs is a :class:`DaemonPolicy`.

In queued mode (:data:`QUEUED`) the host makes no Route 53 request at all: as the daemon with
a publisher does, a due batch publishes the host's whole desired state through the real
:class:`~ecssd_agent.writer.publish.Publisher` (forced on a resync or at startup, else skipped when
unchanged), and the zone writer (benchmarks/fleet/writer.py) applies it.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fleet.engine import Call, Instruction, Sleep
from benchmarks.fleet.retry import BotocoreClient, RetryPolicy
from benchmarks.fleet.route53 import CHANGE, GET_ZONE, LIST, RecordKey, Response, owner_of
from benchmarks.fleet.world import World
from ecssd_agent.agent.daemon import RESYNC_JITTER, RETRY_MAX, RETRY_MIN, THROTTLED_RETRY_MAX
from ecssd_agent.agent.settings import Settings
from ecssd_agent.aws.route53 import Meaning, batches, code_meaning
from ecssd_agent.core.coalescer import Coalescer
from ecssd_agent.core.metadata import service_instances
from ecssd_agent.core.model import Action, Change, Container, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind, Owns
from ecssd_agent.core.plan import plan
from ecssd_agent.core.records import host_records
from ecssd_agent.sync.reconcile import converge
from ecssd_agent.sync.zone_reads import NameScan, ReadSchedule
from ecssd_agent.writer.publish import Publisher

Work = Generator[Instruction, Any, bool]

#: The agent's default settings (ecssd_agent/agent/settings.py): resync, coalesce, retries.
DEFAULTS = Settings()
#: converge's own default number of read-plan-apply rounds
CONVERGE_ATTEMPTS: int = (converge.__kwdefaults__ or {}).get("attempts", 3)


@dataclass(frozen=True)
class DaemonPolicy:
    """How a daemon reads and writes; the fleet simulation compares these.

    ``read``: what a zone read is: ``full`` lists the whole zone (the direct sink's
    full read, ``DirectSink._read``), ``names`` lists only this host's names (``zone_reads.NameScan``).
    ``resync_reads``: ``always`` reads the zone on every resync (the daemon before issue 10);
    ``budget`` reads it only when ``zone_reads.read_interval`` says the fleet can afford it and
    otherwise plans on the known state. ``startup``: ``read`` reads before the first plan;
    ``full`` lists the whole zone before the first plan whatever ``read`` says (the only read
    that finds records under names the host no longer publishes), then sizes the zone and starts
    the read schedule; ``upsert`` writes the desired record sets in one UPSERT batch without
    reading and schedules its first read at a random point of its read interval.
    ``forget_on_error``: after a failed write the known state is dropped, so the next reconcile
    reads the zone (the daemon before issue 10); otherwise it is kept (a Throttling or
    PriorRequestNotComplete answer proves the batch was not applied). ``pressure``: for a minute
    after a request of this host was answered Throttling (the account is over its budget; a
    PriorRequestNotComplete is only a collision on the zone), batches gather for at least this
    long (0: off). ``replan_retries``: the daemon retries throttled writes itself (one botocore
    attempt each, botocore's backoff), re-planning so every attempt carries everything pending;
    ``retry_gather`` > 0 makes each such wait at least that long (jittered +-50%).
    ``reads_yield``: a scheduled (budgeted) read waits for the next resync while the account
    throttles this host, so reads never compete with pending writes.
    ``mode``: ``direct`` (the host writes Route 53 itself, as above) or ``queued`` (it
    publishes to the zone writer; the read and write fields do not apply).
    """

    name: str
    mode: str = "direct"
    read: str = "full"
    resync_reads: str = "always"
    startup: str = "read"
    forget_on_error: bool = True
    resync: float = DEFAULTS.resync
    resync_jitter: float = RESYNC_JITTER
    coalesce: float = DEFAULTS.coalesce
    pressure: float = 0.0
    replan_retries: bool = False
    retry_gather: float = 0.0
    reads_yield: bool = False
    read_budget: float = 0.5
    retry: RetryPolicy = field(default_factory=RetryPolicy)


#: The daemon as first written for issue 4: a full listing at startup, on every resync and
#: after every failed write (kept for comparison).
FULL_LISTING = DaemonPolicy("daemon before issue 10: full listing per resync")
#: The daemon as built now (ecssd_agent/agent/daemon.py with default settings): a full listing
#: only at startup (GetHostedZone then starts the ReadSchedule); resyncs read this host's
#: names only when ReadSchedule.due and not within 60 s of a Throttling answer, else plan on
#: the known state; a rejected batch re-reads names; the known state survives Throttling and
#: PriorRequestNotComplete; for 60 s after a Throttling answer batches gather >= 10 s; a
#: change batch is sent with one botocore attempt and a throttled one is retried by the daemon
#: after random x min(2^k, 8) s (daemon.THROTTLED_RETRY_MAX), re-planning everything pending.
AS_BUILT = DaemonPolicy("daemon as built", read="names", resync_reads="budget", startup="full",
                        forget_on_error=False, pressure=10.0, reads_yield=True,
                        replan_retries=True,
                        retry=RetryPolicy(max_attempts=30, max_backoff=THROTTLED_RETRY_MAX))

#: The queued mode (--host-table/--change-queue): the daemon publishes its desired state after
#: the same coalescing, the zone writer Lambda applies the fleet's publications together.
QUEUED = DaemonPolicy("queued mode: zone writer", mode="queued")


@dataclass
class SimContainer:
    container: Container
    instances: list[ServiceInstance]
    tag: str
    records: list[RecordSet] | None = None  # its SRV record sets, built once


def host_owns(label: str) -> Owns:
    """``ownership.owned_by_host(label)`` with the SetIdentifier parse memoised across hosts.

    Same test (the SetIdentifier parses exactly, kind HOST, this host), but every host of the
    simulation reads the same identifiers: parsing each once instead of once per host keeps
    a 1,000-host run in seconds. tests/unit/test_fleet_sim.py checks that the two agree.
    """

    def owns(record: RecordSet) -> bool:
        owner = owner_of(record.set_identifier)
        return owner is not None and owner.kind is Kind.HOST and owner.host == label

    return owns


def make_container(cid: str, service: str, port: int, cluster: str, task: str, tag: str) -> SimContainer:
    """A container as the Docker adapter describes it (ECS labels, a SERVICE_ variable)."""
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
    """The daemon of one host (or what is left of it once the host died). In queued mode it
    is given its ``publisher`` and how long a publication takes (``publish_latency``)."""

    def __init__(self, world: World, label: str, ip: str, policy: DaemonPolicy,
                 rng: random.Random, publisher: Publisher | None = None,
                 publish_latency: float = 0.0) -> None:
        self.world = world
        self.host = Host(label, ip)
        self.policy = policy
        self.rng = rng
        self.client = BotocoreClient(policy.retry, rng, label)
        self.owns: Owns = host_owns(label)
        self.coalescer = Coalescer(policy.coalesce)
        self.containers: dict[str, SimContainer] = {}
        self.known: dict[RecordKey, RecordSet] | None = {}
        self.alive = True
        self.busy = False
        self.dirty = False
        self.wake_at: float | None = None
        self.retry_at: float | None = None
        self.retry_delay = RETRY_MIN
        self.next_resync = float("inf")
        self.resync_due = False
        self.startup_due = False
        self.reads_schedule = ReadSchedule(policy.resync, policy.read_budget, rng)
        self.pressure_until = -1.0
        self.requested = False  # the running reconcile made a change request
        self.reads = 0
        self.next_port = 32768
        self._desired: list[RecordSet] | None = None
        self._wanted: dict[RecordKey, RecordSet] | None = None
        self._a_record: RecordSet | None = None
        self.publisher = publisher
        self.publish_latency = publish_latency

    # --- what the host should own ------------------------------------------------------

    def desired(self) -> list[RecordSet]:
        """``records.host_records`` of this host's containers.

        Built per container and cached (the A record first, then each container's SRV
        record sets): the same list one ``host_records`` call over all containers returns,
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

    def wanted(self, key: RecordKey) -> RecordSet | None:
        """What this host wants at ``key`` now (None: nothing)."""
        if self._wanted is None:
            self._wanted = {r.key: r for r in self.desired()}
        return self._wanted.get(key)

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
        self._desired = self._wanted = None
        for record in self.desired():
            if record.key not in before:
                self.world.expect(record.key, record, container.tag)
        self.event()

    def remove_container(self, cid: str, tag: str) -> None:
        if self.containers.pop(cid, None) is None:
            return
        before = self.desired()
        self._desired = self._wanted = None
        after = {r.key for r in self.desired()}
        for record in before:
            if record.key not in after:
                self.world.expect(record.key, None, tag)
        self.event()

    # --- scheduling, as Daemon._due / _take --------------------------------------------

    def start(self, resync_phase: float, zone_records: int | None, startup: bool) -> None:
        """Run: the first resync after ``resync_phase``; a running host (``zone_records``
        given) reads at a random point of its read interval, as if it had read before."""
        now = self.world.now
        self.next_resync = now + resync_phase
        if zone_records is not None:
            self.reads_schedule.start(now, zone_records, len(self.desired()), len(self._names()))
        if startup:
            self.startup_due = True
            self.known = None
        self._reschedule()

    def event(self) -> None:
        """A Docker event for one of this host's containers."""
        now = self.world.now
        self.dirty = True
        self.coalescer.add(now)
        if self.policy.pressure and now < self.pressure_until:
            self.coalescer.window = max(self.coalescer.window, self.policy.pressure)
            self.coalescer.cap = max(self.coalescer.cap, self.policy.pressure)
        self._reschedule()

    def die(self) -> None:
        self.alive = False

    def _due(self) -> float:
        if self.retry_at is not None:
            return self.retry_at
        candidates = [self.next_resync]
        if self.startup_due:
            candidates.append(self.world.now)
        batch = self.coalescer.due()
        if batch is not None and self.dirty:
            candidates.append(batch)
        return min(candidates)

    def _reschedule(self) -> None:
        if self.busy or not self.alive:
            return
        due = self._due()
        if due == float("inf") or (self.wake_at is not None and self.wake_at <= due):
            return
        self.wake_at = due
        self.world.sched.at(due, self._wake, due)

    def _wake(self, when: float) -> None:
        if self.wake_at != when or self.busy or not self.alive:
            return
        self.wake_at = None
        now = self.world.now
        if self._due() > now:
            self._reschedule()
            return
        self.retry_at = None
        if now >= self.next_resync:
            self.resync_due = True
            jitter = self.policy.resync_jitter
            self.next_resync = now + self.policy.resync * self.rng.uniform(1 - jitter, 1 + jitter)
        if self.coalescer.first is not None:
            self.coalescer.close()
        self.dirty = False
        self.requested = False
        self.busy = True
        self.world.sched.spawn(self._reconcile(), self.world.r53.handle, self._done)

    def _done(self, ok: bool) -> None:
        self.busy = False
        if not self.alive:
            return
        if ok:
            self.retry_delay = RETRY_MIN
            if self.requested:  # as Daemon._reconcile: batches opening soon form a burst
                self.coalescer.requested(self.world.now)
        else:
            self.world.metrics.failed_applies += 1
            self.dirty = True
            if self.policy.forget_on_error:
                self.known = None
            self.retry_at = self.world.now + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)
        self._reschedule()

    # --- one reconcile ---------------------------------------------------------------

    def _reconcile(self) -> Work:
        if self.publisher is not None:
            return (yield from self._publish())
        policy = self.policy
        if self.startup_due and policy.startup == "upsert" and self.known is None:
            ok = yield from self._upsert_startup()
            if not ok:
                return False
            self.startup_due = False
        read = self.known is None
        if self.resync_due:
            now = self.world.now
            scheduled = self.reads_schedule.due(now) and not (
                policy.reads_yield and now < self.pressure_until)  # writes first
            read = read or policy.resync_reads == "always" or scheduled
        if read:
            ok = yield from self._read()
            if not ok:
                return False
        self.resync_due = False
        self.startup_due = False
        return (yield from self._converge())

    def _publish(self) -> Work:
        """Queued mode, as ``Daemon._reconcile`` with a ``QueuedSink``: publish the whole desired
        state (``force`` unless the batch is only events), no Route 53 request. The PutItem
        and SendMessage take ``publish_latency``; a host that dies meanwhile publishes
        nothing."""
        assert self.publisher is not None
        force = self.resync_due or self.startup_due
        self.resync_due = self.startup_due = False
        desired = list(self.desired())
        yield Sleep(self.publish_latency)
        if self.alive:
            self.publisher.publish(desired, force=force)
        return True

    def _converge(self) -> Work:
        """``reconcile.converge`` on the known state: re-read and re-plan on a rejection."""
        attempt = 1
        for _ in range(CONVERGE_ATTEMPTS):
            while True:
                assert self.known is not None
                changes = plan(list(self.known.values()), self.desired(), self.owns)
                if not changes:
                    return True
                outcome = yield from self._apply(changes)
                if not self.alive:
                    return True
                if outcome == "ok":
                    return True
                if outcome == "retry" and attempt < self.policy.retry.max_attempts:
                    yield Sleep(self._retry_backoff(attempt))
                    attempt += 1
                    continue  # re-plan with whatever arrived meanwhile
                if outcome != "rejected":
                    return False
                break
            self.world.metrics.rejected += 1
            assert self.known is not None
            tried = {c.record.name for c in plan(list(self.known.values()), self.desired(), self.owns)}
            ok = yield from self._read(tried)  # the names the rejected plan touched
            if not ok:
                return False
        return False

    def _apply(self, changes: list[Change]) -> Generator[Instruction, Any, str]:
        for batch in batches(changes):
            if self.policy.replan_retries:
                response = yield from self._call_once(CHANGE, {"changes": batch})
            else:
                response = yield from self._call(CHANGE, {"changes": batch})
            if response.ok:
                self._learn(batch)
                self.requested = True
                continue
            if response.error == "InvalidChangeBatch":
                return "rejected"
            if self.policy.replan_retries and code_meaning(response.error or "").definite:
                return "retry"
            return "failed"
        return "ok"

    def _retry_backoff(self, attempt: int) -> float:
        """botocore's backoff; with ``retry_gather``, at least a jittered gathering window:
        Route 53 said the fleet is over its budget, so this host waits long enough for its
        next attempt to carry everything that happens meanwhile."""
        backoff = self.rng.random() * min(2.0 ** (attempt - 1), self.policy.retry.max_backoff)
        if self.policy.retry_gather:
            backoff = max(backoff, self.policy.retry_gather * self.rng.uniform(0.5, 1.5))
        return backoff

    def _learn(self, batch: list[Change]) -> None:
        if self.known is None:
            return
        for change in batch:
            if change.action is Action.DELETE:
                self.known.pop(change.record.key, None)
            else:
                self.known[change.record.key] = change.record

    def _call(self, op: str, params: dict[str, Any]) -> Generator[Instruction, Any, Response]:
        response: Response = yield from self.client.call(op, params)
        if self.client.last_throttled:
            self.pressure_until = self.world.now + 60.0  # the account is over its budget
        return response

    def _call_once(self, op: str, params: dict[str, Any]) -> Generator[Instruction, Any, Response]:
        response: Response = yield Call(op, params, self.host.label)
        if code_meaning(response.error or "").kind is Meaning.THROTTLED:
            self.pressure_until = self.world.now + 60.0
        return response

    # --- reads -----------------------------------------------------------------------

    def _names(self) -> set[str]:
        names = {r.name for r in self.desired()}
        if self.known is not None:
            names.update(r.name for r in self.known.values())
        return names

    def _read(self, only: set[str] | None = None) -> Work:
        """The direct sink's read (``DirectSink._read``): the whole zone, or this host's names (``only`` those
        after a rejection: the names the rejected plan touched)."""
        first = self.policy.startup == "full" and self.known is None
        if self.policy.read == "full" or first:
            records = yield from self.world.list_zone(self.client, self._call)
            if records is None:
                return False
            self.known = {r.key: r for r in records if self.owns(r)}
            self.reads += 1
            if first and self.policy.resync_reads == "budget":  # as DirectSink._sized
                size = yield from self._zone_size()
                if size is None:
                    return False
                self.reads_schedule.start(self.world.now, size, len(self.desired()),
                                          len(self._names()))
            return True
        count: int | None = None
        if self.policy.resync_reads == "budget" and only is None:
            count = yield from self._zone_size()
            if count is None:
                return False
        names = self._names() if only is None or self.known is None else only
        scan = NameScan(names, self.owns, self.world.decode)
        while (start := scan.next_start()) is not None:
            params: dict[str, Any] = {"start_name": start}
            while True:
                response = yield from self._call(LIST, params)
                if not response.ok:
                    return False
                page = response.data
                if not scan.feed(page):
                    break
                params = {"start_name": page["NextRecordName"], "start_type": page["NextRecordType"],
                          "start_identifier": page.get("NextRecordIdentifier")}
        result = scan.result()
        if self.known is None or only is None:
            self.known = {r.key: r for r in result.records}
        else:
            self.known = {r.key: r for r in result.merged_into(self.known.values())}
        self.reads += 1
        if count is not None:
            self.reads_schedule.done(self.world.now, count, len(self.desired()), result.requests + 1)
        return True

    def _zone_size(self) -> Generator[Instruction, Any, int | None]:
        response = yield from self._call(GET_ZONE, {})
        return int(response.data["HostedZone"]["ResourceRecordSetCount"]) if response.ok else None

    def _upsert_startup(self) -> Work:
        """Register without reading: UPSERT is idempotent; the first read comes later."""
        count = yield from self._zone_size()
        if count is None:
            return False
        self.reads_schedule.start(self.world.now, count, len(self.desired()), len(self._names()))
        desired = self.desired()
        for batch in batches([Change(Action.UPSERT, r) for r in desired]):
            response = yield from self._call(CHANGE, {"changes": batch})
            if response.error == "InvalidChangeBatch":
                self.known = None  # e.g. a routing policy change: read and plan instead
                return True
            if not response.ok:
                return False
        self.known = {r.key: r for r in desired}
        return True

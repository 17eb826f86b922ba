"""The queued mode in the simulation: the table, the queue, the Lambda event source mapping,
and the REAL zone writer Lambda (``health_lambda.zone_writer_handler.lambda_handler`` calling
``ecssd_agent.writer.zone_writer.ZoneWriter.write``) running in virtual time.

Agents in queued mode publish through the real :class:`~ecssd_agent.writer.publish.Publisher` into
the real :class:`~ecssd_agent.aws.host_store.HostStore` and
:class:`~ecssd_agent.aws.change_queue.ChangeQueue`, whose DynamoDB and SQS clients answer from
a table and a queue held in memory (aws.py: :class:`SimDynamoDB`, :class:`SimSQS`).
The writer is not a re-implementation: each invocation runs the Lambda handler itself, with
the handler's cached writer set to this execution environment's ZoneWriter, whose Route 53
client (:class:`SimRoute53Client`) sends every request through the botocore retry model to
the simulated Route 53, whose HostStore (its own DynamoDB client) loads and saves host states
and takes the writers' lease, and whose ``sleep`` (the lease waits) is virtual. The handler's
deadline reads ``time.time()``: while a run lasts, that module's clock is the virtual one
(:func:`in_virtual_time`). The handler is ordinary blocking code, so it runs in a thread that
hands control back and forth with the scheduler (bridge.py): exactly one of the two runs at
any moment, so a run stays deterministic. The pure functions the writer and the agents call
hundreds of thousands of times are memoised while a run lasts (:func:`memoised`); nothing else
is touched.

What is modelled (:class:`WriterConfig`; the values are cloudformation/quickstart.yaml's,
tests/unit/test_fleet_sim.py checks them against it), and the assumptions:

- the SQS event source mapping: a batch gathers hints for ``batching_window``
  (``MaximumBatchingWindowInSeconds``, 2 s) from the first one it receives, or until
  ``batch_size`` (10,000) are visible; at most ``max_concurrency`` invocations run at once
  (``ScalingConfig.MaximumConcurrency``: 2, the least AWS allows), and while they do no
  batch is gathered (the pollers stop polling);
- the Lambda: an invocation still running ``function_timeout`` (300 s) after it started is
  killed: it makes no further request (the one in flight lands) and saves nothing more;
  every message of its batch comes back ``visibility_timeout`` (the queue's 1,800 s) after
  it was received. The handler's own contract is the real one: it passes
  ``deadline = now + remaining - FINISH_MARGIN`` (60 s); hosts it did not finish
  (``WriterInterrupted``: deadline, lease busy) are handed back as new hints, visible at
  once, when the function has CHANGE_QUEUE (``change_queue``), else their messages are
  reported failed and come back after the visibility timeout; an AWS error fails every hint
  of the batch (back after the visibility timeout);
- each execution environment keeps its ZoneWriter (and its lease owner id) and clients
  between invocations, as the handler caches them, so each has its own botocore retry quota;
  a killed one is replaced by a fresh one;
- latencies (ASSUMED; DynamoDB on-demand and SQS in the same region answer in single-digit
  to low tens of milliseconds): publishing (PutItem then SendMessage) ``publish_latency``
  30 ms; each DynamoDB request of the writer (BatchGetItem, BatchWriteItem, the lease's
  PutItem and DeleteItem, as many as HostStore makes) ``dynamodb_latency`` 10 ms; each
  SendMessageBatch of a hand-back ``sqs_latency`` 10 ms. A DynamoDB or SQS request takes
  effect when it is sent (as a Route 53 change does here) and answers after its latency;
  DynamoDB and SQS never fail or throttle here; the writer's own CPU time is not added to
  virtual time (it is measured and reported).

One invariant of the design is checked on every change attempt the writer makes: its
writer holds the unexpired lease (``unleased_changes`` counts the attempts that did not).

What the mode costs (:class:`WriterCosts`) is counted, not estimated: every DynamoDB and SQS
request the agents and each invocation send, and each invocation's duration in virtual time
(request latencies and waits; the handler's CPU time is not part of it). The event source
mapping's own SQS requests are not simulated, so they are not counted.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from benchmarks.fleet.aws import LEASE_KEY, ItemKey, SimDynamoDB, SimRoute53Client, SimSQS
from benchmarks.fleet.bridge import THREAD_PREFIX, Bridge, Link
from benchmarks.fleet.retry import BotocoreClient, RetryPolicy
from benchmarks.fleet.route53 import ZONE_ID
from benchmarks.fleet.world import WireCache, World
from ecssd_agent.aws import host_store
from ecssd_agent.aws.change_queue import ChangeQueue
from ecssd_agent.aws.host_store import HostStore, StoreError
from ecssd_agent.aws.route53 import Route53Zone, Zone
from ecssd_agent.core import ownership
from ecssd_agent.core.host_state import Applied
from ecssd_agent.core.model import RecordSet
from ecssd_agent.writer import zone_writer
from ecssd_agent.writer.publish import Publisher
from ecssd_agent.writer.settings import WriterSettings
from ecssd_agent.writer.zone_writer import WriteOutcome, WriterInterrupted, ZoneWriter
from health_lambda import zone_writer_handler

TABLE = "ecssd-hosts"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/ecssd-hints"
#: Virtual time 0 as epoch seconds for the writer's and the agents' clocks: ZoneWriter marks
#: an outcome it does not know with ``verified=0.0``, which means "long ago" only on a clock
#: of epoch seconds (as ``time.time`` is); a clock starting at 0 would never re-read.
EPOCH = 1_700_000_000.0
_WRITER_DEFAULTS = WriterSettings()


@dataclass(frozen=True)
class WriterConfig:
    batching_window: float = 2.0  # quickstart.yaml ZoneWriterEventSource
    batch_size: int = 10_000
    max_concurrency: int = 2
    visibility_timeout: float = 1800.0  # quickstart.yaml ChangeQueue
    function_timeout: float = 300.0  # quickstart.yaml ZoneWriterFunction Timeout
    #: the function has CHANGE_QUEUE, so the handler hands unfinished hosts back at once
    change_queue: bool = True
    max_attempts: int = _WRITER_DEFAULTS.aws_max_attempts  # 10, standard retry mode
    verify_after: float = _WRITER_DEFAULTS.verify_after  # a day
    lease: float = zone_writer.LEASE_SECONDS  # what the handler's writer uses (60 s)
    lock_wait: float = zone_writer.LOCK_WAIT  # 120 s
    publish_latency: float = 0.03
    dynamodb_latency: float = 0.01
    sqs_latency: float = 0.01
    memory_mb: int = 1024  # quickstart.yaml ZoneWriterFunction MemorySize: GB-seconds billed


class StateCodec:
    """``host_store._records_out`` and ``_records_in`` (record sets <-> the stored JSON list),
    memoised for a run. Why: encoding every record set of every publication and decoding
    every state the writer loads doubled a queued run's CPU time, though the agents publish
    the same RecordSet objects again and again (SimHost caches them per container).

    Encoding: each record set is encoded by the real function (as a list of one), memoised
    by the record set's identity, and the list is their JSON joined as json writes a list
    with the store's separators. Decoding: a text this codec encoded decodes to the record
    sets it was made from (equal to what ``_records_in`` returns: the store's round trip
    keeps record sets equal), any other text by the real function, memoised.
    tests/unit/test_fleet_sim.py checks both against the real functions."""

    def __init__(self, encode: Callable[[Iterable[RecordSet]], str],
                 decode: Callable[[str], tuple[RecordSet, ...]]) -> None:
        self._encode = encode
        self._decode = decode
        self._json: dict[int, tuple[RecordSet, str]] = {}  # keeps each record set alive
        self._records: dict[str, tuple[RecordSet, ...]] = {}

    def _one(self, record: RecordSet) -> str:
        hit = self._json.get(id(record))
        if hit is not None and hit[0] is record:
            return hit[1]
        text = self._encode([record])[1:-1]
        self._json[id(record)] = (record, text)
        return text

    def records_out(self, records: Iterable[RecordSet]) -> str:
        records = tuple(records)
        text = "[" + ",".join(self._one(r) for r in records) + "]"
        self._records.setdefault(text, records)
        return text

    def records_in(self, text: str) -> tuple[RecordSet, ...]:
        records = self._records.get(text)
        if records is None:
            records = self._records[text] = self._decode(text)
        return records


@contextmanager
def memoised() -> Iterator[None]:
    """While a run lasts, ``ownership.parse_set_identifier``, the ``from_wire`` of the writer's
    full listings and the HostStore's encoding and decoding of a host state are memoised:
    all are pure (a SetIdentifier string -> a frozen Owner; a listed dict the simulated zone
    hands out unchanged -> its RecordSet; a frozen RecordSet -> its JSON; a stored JSON string
    -> its tuple of RecordSets), so the writer and the agents compute exactly what they
    would, only the simulation's wall time shrinks."""
    parse = ownership.parse_set_identifier
    decode = zone_writer.from_wire
    records_in, records_out = host_store._records_in, host_store._records_out
    codec = StateCodec(records_out, records_in)
    ownership.parse_set_identifier = functools.cache(parse)
    zone_writer.from_wire = WireCache(decode)  # type: ignore[assignment]  # same signature
    host_store._records_in = codec.records_in
    host_store._records_out = codec.records_out
    try:
        yield
    finally:
        ownership.parse_set_identifier = parse
        zone_writer.from_wire = decode
        host_store._records_in, host_store._records_out = records_in, records_out


class _VirtualTime:
    """What ``zone_writer_handler`` sees as the ``time`` module during a run."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.time = clock


@contextmanager
def in_virtual_time(clock: Callable[[], float]) -> Iterator[None]:
    """The Lambda handler computes its deadline from ``time.time()``: during a run that is
    the virtual clock (the writer's). Its cached writer is restored afterwards."""
    real_time, cached = zone_writer_handler.time, zone_writer_handler.runtime.current
    zone_writer_handler.time = _VirtualTime(clock)  # type: ignore[assignment]  # time() only
    try:
        yield
    finally:
        zone_writer_handler.time = real_time
        zone_writer_handler.runtime.set(cached)


# --- the event source mapping and the Lambda --------------------------------------------

@dataclass
class Message:
    id: str
    body: str
    received: float = 0.0


@dataclass(frozen=True)
class InvocationCost:
    """What one invocation cost, recorded when it ended (killed ones too), so that a
    period's figures can take the invocations started in it with everything they did, even
    what they did after the period ended."""

    started: float
    #: as Lambda bills it: the duration (virtual time) rounded up to the millisecond
    billed_ms: int
    cold: bool  # the first invocation of a new execution environment
    dynamodb: dict[str, int]  # requests by operation, the lease's PutItem/DeleteItem included
    dynamodb_items: dict[str, int]  # keys asked (BatchGetItem), items written (BatchWriteItem)
    sqs_batches: int  # SendMessageBatch requests of hand-backs
    sqs_messages: int  # the hints they carried
    #: the handler's CPU time on this machine (not in ``billed_ms``: not deterministic; 0
    #: for a killed one, whose thread is still unwinding)
    cpu_seconds: float = 0.0


@dataclass
class WriterStats:
    """What the writer did over a run (all deterministic for a seed)."""

    invocations: int = 0
    failed: int = 0  # AWS error: every hint of the batch came back after the visibility timeout
    interrupted: int = 0  # WriterInterrupted: the deadline came or the lease stayed busy
    interrupted_by_lease: int = 0  # ... of which: the lease could not be had (or was lost)
    handed_back: int = 0  # hints the handler sent back to the queue (SendMessageBatch)
    timed_out: int = 0  # killed at the function timeout
    function_errors: int = 0  # the code raised something else (a bug): hints came back
    first_error: str = ""
    max_running: int = 0
    hints: int = 0
    hosts: int = 0  # hosts planned, summed over the writes that completed
    max_hosts: int = 0  # hosts of the largest completed write
    changes: int = 0
    change_requests: int = 0  # of the writes that completed
    read_requests: int = 0
    hosts_read: int = 0
    rejected_batches: int = 0
    failed_hosts: dict[str, str] = field(default_factory=dict)  # host -> why (last seen)
    max_seconds: float = 0.0  # longest invocation, virtual seconds
    lease_waits: int = 0  # the writer's sleeps waiting for the lease
    lease_wait_seconds: float = 0.0
    unleased_changes: int = 0  # change attempts sent without holding the unexpired lease
    change_retries: int = 0  # change attempts the writer sent again (throttled, zone busy)
    starts: list[float] = field(default_factory=list)
    costs: list[InvocationCost] = field(default_factory=list)  # one per invocation that ended


@dataclass(frozen=True)
class WriterSummary:
    """The writer's figures of one run, for :class:`~benchmarks.fleet.world.FleetResult`."""

    invocations: int
    deployment_invocations: int  # started from the deployment's start until it converged
    failed: int
    interrupted: int
    interrupted_by_lease: int
    handed_back: int
    timed_out: int
    function_errors: int
    first_error: str
    max_running: int
    hints: int
    max_hosts: int
    changes: int
    change_requests: int
    read_requests: int
    hosts_read: int
    rejected_batches: int
    failed_hosts: tuple[str, ...]
    max_seconds: float
    lease_waits: int
    lease_wait_seconds: float
    unleased_changes: int
    change_retries: int

    @classmethod
    def of(cls, stats: WriterStats, window: tuple[float, float]) -> WriterSummary:
        start, end = window
        return cls(stats.invocations, sum(1 for t in stats.starts if start <= t <= end),
                   stats.failed, stats.interrupted, stats.interrupted_by_lease,
                   stats.handed_back, stats.timed_out, stats.function_errors, stats.first_error,
                   stats.max_running, stats.hints, stats.max_hosts, stats.changes,
                   stats.change_requests, stats.read_requests, stats.hosts_read,
                   stats.rejected_batches, tuple(sorted(stats.failed_hosts)),
                   round(stats.max_seconds, 6), stats.lease_waits,
                   round(stats.lease_wait_seconds, 6), stats.unleased_changes,
                   stats.change_retries)


@dataclass(frozen=True)
class WriterCosts:
    """What the queued mode cost over one period of a run, so that its running cost can be
    quoted from counts rather than guessed. Only requests the simulation makes are here: the
    event source mapping's own polling of SQS (ReceiveMessage, DeleteMessageBatch) is not
    simulated, nor is a new execution environment's init time.

    The agents' requests are those sent within the period; the writer's are those of the
    invocations started within it (each counted whole, as Lambda bills it)."""

    start: float  # the period, virtual seconds
    end: float
    agent_puts: int  # DynamoDB PutItem: one per publication
    agent_sends: int  # SQS SendMessage: one hint per publication
    invocations: int
    cold_starts: int  # invocations that started a new execution environment
    billed_ms: int
    memory_mb: int
    dynamodb: dict[str, int]  # the writer's requests by operation (lease included)
    dynamodb_items: dict[str, int]  # keys asked (BatchGetItem), items written (BatchWriteItem)
    sqs_batches: int  # the writer's SendMessageBatch requests (hand-backs)
    sqs_messages: int  # the hints they carried

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def gb_seconds(self) -> float:
        return self.billed_ms / 1000.0 * self.memory_mb / 1024.0

    def per_hour(self, count: float) -> float:
        return count * 3600.0 / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def of(cls, writer: QueuedWriter, window: tuple[float, float]) -> WriterCosts:
        start, end = window
        costs = [c for c in writer.stats.costs if start <= c.started < end]
        dynamodb: Counter[str] = Counter()
        items: Counter[str] = Counter()
        for cost in costs:
            dynamodb.update(cost.dynamodb)
            items.update(cost.dynamodb_items)
        puts, sends = writer.agent_request_times()
        return cls(start, end,
                   sum(1 for t in puts if EPOCH + start <= t < EPOCH + end),
                   sum(1 for t in sends if EPOCH + start <= t < EPOCH + end),
                   len(costs), sum(c.cold for c in costs), sum(c.billed_ms for c in costs),
                   writer.config.memory_mb, dict(sorted(dynamodb.items())),
                   dict(sorted(items.items())), sum(c.sqs_batches for c in costs),
                   sum(c.sqs_messages for c in costs))


class CountingZoneWriter(ZoneWriter):
    """The real ZoneWriter; ``write`` is only observed (its outcome or what it raised is
    counted), never changed."""

    stats: WriterStats
    taking_lease = False  # in _take_lease: its sleeps are waits for the lease

    def _take_lease(self, hosts: list[str], deadline: float | None) -> None:
        self.taking_lease = True
        try:
            super()._take_lease(hosts, deadline)
        finally:
            self.taking_lease = False

    def write(self, hosts: Iterable[str], deadline: float | None = None,
              verify: Mapping[str, Iterable[str]] | None = None) -> WriteOutcome:
        stats = self.stats
        try:
            outcome = super().write(hosts, deadline, verify)
        except WriterInterrupted as exc:
            stats.interrupted += 1
            stats.interrupted_by_lease += "lease" in str(exc)
            raise
        except (ClientError, BotoCoreError, StoreError):
            stats.failed += 1
            raise
        stats.hosts += outcome.hosts
        stats.max_hosts = max(stats.max_hosts, outcome.hosts)
        stats.changes += outcome.changes
        stats.change_requests += outcome.change_requests
        stats.read_requests += outcome.read_requests
        stats.hosts_read += outcome.hosts_read
        stats.rejected_batches += outcome.rejected
        stats.failed_hosts.update(outcome.failed)
        return outcome


@dataclass
class LambdaInstance:
    """One execution environment: its cached ZoneWriter, clients and queue, as the handler
    keeps them (``zone_writer_handler.runtime``) between invocations."""

    writer: CountingZoneWriter
    route53: SimRoute53Client
    store: HostStore
    dynamodb: SimDynamoDB  # the store's client: its requests are this instance's
    queue: ChangeQueue | None
    link: Link
    busy: bool = False
    sqs: SimSQS | None = None  # the queue's client: its requests are this instance's
    used: bool = False  # has run an invocation (the next one is not a cold start)

    def counts(self) -> tuple[Counter[str], Counter[str], int, int]:
        """Its requests so far: DynamoDB by operation, DynamoDB items, SQS batches and
        messages (an invocation's are the difference from its start to its end)."""
        sqs = self.sqs
        return (Counter(self.dynamodb.requests), Counter(self.dynamodb.request_items),
                sqs.requests["SendMessageBatch"] if sqs is not None else 0,
                sqs.messages if sqs is not None else 0)


@dataclass
class Invocation:
    number: int
    messages: list[Message]
    instance: LambdaInstance
    bridge: Bridge
    started: float
    counts: tuple[Counter[str], Counter[str], int, int]  # its instance's, as it started
    cold: bool
    done: bool = False


class LambdaContext:
    """The handler's ``context``: the time left before the function timeout kills it."""

    def __init__(self, writer: QueuedWriter, started: float) -> None:
        self._writer = writer
        self._ends = started + writer.config.function_timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - self._writer.world.now) * 1000))


class _DropWorkerLogs(logging.Filter):
    """The writer's own log lines (one per change applied) are Lambda logs, not the
    benchmark's output: drop those emitted from a simulated invocation's thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith(THREAD_PREFIX)


_LOG_FILTER = _DropWorkerLogs()


def _quiet_worker_logs() -> None:
    for name in ("ecssd_agent.writer.zone_writer", "ecssd_agent.aws.route53", zone_writer_handler.log.name,
                 zone_writer_handler.summary_log.name):
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


class QueuedWriter:
    """The table, the hint queue, its event source mapping and the writer Lambda."""

    def __init__(self, world: World, config: WriterConfig, seed: int) -> None:
        _quiet_worker_logs()
        self.world = world
        self.config = config
        self.seed = seed
        #: the host-state table's items, by (host, kind): states and the writers' lease
        self.items: dict[ItemKey, dict[str, Any]] = {}
        self.stats = WriterStats()
        self.accepting = True
        self.seed_requests: Counter[str] = Counter()  # the store's requests of seed_applied
        self.cpu_seconds_max = 0.0
        self._visible: deque[Message] = deque()
        self._delayed: list[tuple[float, int, Message]] = []  # (visible again at, seq, message)
        self._serial = 0
        self._instances_made = 0
        self._idle: list[LambdaInstance] = []
        self._running: list[Invocation] = []
        self._gather_token = 0
        self._gathering = False
        self._kick_at: float | None = None
        self._lingering: list[Bridge] = []
        self._agent_dynamodb = SimDynamoDB(self.items, self._clock)
        self._agent_store = HostStore(self._agent_dynamodb, TABLE, clock=self._clock)
        self._agent_sqs = SimSQS(self.enqueue, self._clock)
        self._queue = ChangeQueue(self._agent_sqs, QUEUE_URL)
        self._instances: list[LambdaInstance] = []  # every execution environment made

    def _clock(self) -> float:
        return EPOCH + self.world.now

    @contextmanager
    def running(self) -> Iterator[None]:
        """What a run needs around it: memoisation, the handler in virtual time, and every
        invocation's thread unwound at the end."""
        try:
            with memoised(), in_virtual_time(self._clock):
                yield
        finally:
            self.close()

    # --- the agents' side ---------------------------------------------------------------

    def publisher(self, host: str) -> Publisher:
        """The real Publisher of one agent; its seq is virtual time in nanoseconds."""
        return Publisher(self._agent_store, self._queue, host, self.world.zone_name,
                         clock=lambda: int(self._clock() * 1e9))

    def agent_requests(self) -> Counter[str]:
        """The agents' requests over the whole run, the seeded publications included."""
        return Counter({"PutItem": self._agent_dynamodb.requests["PutItem"],
                        "SendMessage": self._agent_sqs.requests["SendMessage"]})

    def agent_request_times(self) -> tuple[list[float], list[float]]:
        """When the agents sent each PutItem and each SendMessage (epoch seconds)."""
        return self._agent_dynamodb.put_at, self._agent_sqs.sent_at

    def writer_requests(self) -> tuple[Counter[str], Counter[str]]:
        """DynamoDB and SQS requests of every execution environment (each keeps its own
        clients), by operation, over the whole run."""
        dynamodb: Counter[str] = Counter()
        sqs: Counter[str] = Counter()
        for instance in self._instances:
            dynamodb.update(instance.dynamodb.requests)
            if instance.sqs is not None:
                sqs.update(instance.sqs.requests)
        return dynamodb, sqs

    def seed_applied(self, ages: Mapping[str, float]) -> None:
        """Before the run: the writer applied each host's stored publication, and last read
        its record sets ``ages[host]`` seconds ago (the fleet has been running for a while).
        Through the real store, with requests nobody is billed for (``seed_requests``)."""
        before = Counter(self._agent_dynamodb.requests)
        published, _ = self._agent_store.load(ages)
        now = self._clock()
        self._agent_store.save_applied(self.world.zone_name, [
            Applied(host, pub.seq, pub.records, now - ages[host]) for host, pub in published.items()])
        self.seed_requests = Counter(self._agent_dynamodb.requests) - before

    def enqueue(self, body: str) -> str:
        self._serial += 1
        message = Message(f"m{self._serial}", body)
        if not self.accepting:
            return message.id
        self._visible.append(message)
        if self._gathering and len(self._visible) >= self.config.batch_size:
            self._close(self._gather_token)
        else:
            self._kick()
        return message.id

    # --- the event source mapping -------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._visible and not self._delayed and not self._running

    def _mature(self) -> None:
        now = self.world.now
        while self._delayed and self._delayed[0][0] <= now:
            self._visible.append(heapq.heappop(self._delayed)[2])

    def _kick(self) -> None:
        """Start gathering a batch if there is a hint to take and an invocation to spare."""
        if self._gathering or len(self._running) >= self.config.max_concurrency:
            return
        self._mature()
        if not self._visible:
            if self._delayed and self._kick_at != self._delayed[0][0]:
                self._kick_at = self._delayed[0][0]
                self.world.sched.at(self._kick_at, self._kick)
            return
        self._gathering = True
        self._gather_token += 1
        self.world.sched.after(self.config.batching_window, self._close, self._gather_token)

    def _close(self, token: int) -> None:
        if not self._gathering or token != self._gather_token:
            return
        self._gathering = False
        self._mature()
        taken: list[Message] = []
        while self._visible and len(taken) < self.config.batch_size:
            taken.append(self._visible.popleft())
        if taken:
            self._invoke(taken)
        self._kick()

    # --- the Lambda ----------------------------------------------------------------------

    def _instance(self) -> LambdaInstance:
        if self._idle:
            return self._idle.pop()
        self._instances_made += 1
        name = f"writer-{self._instances_made}"
        config = self.config
        rng = random.Random(f"writer:{self.seed}:{self._instances_made}")
        link = Link()
        dynamodb = SimDynamoDB(self.items, self._clock, link, config.dynamodb_latency)
        store = HostStore(dynamodb, TABLE, clock=self._clock, sleep=link.pause)
        # as writer_cli.build_writer: reads with botocore's retries, change requests with
        # one attempt each (the ZoneWriter retries them, extending its lease before each)
        route53 = SimRoute53Client(
            BotocoreClient(RetryPolicy(max_attempts=config.max_attempts), rng, name), link,
            lambda: self._check_lease(dynamodb))
        write_client = SimRoute53Client(
            BotocoreClient(RetryPolicy(max_attempts=1), rng, name), link,
            lambda: self._check_lease(dynamodb))
        zone = Route53Zone(route53, Zone(ZONE_ID, self.world.zone_name, True),
                           comment="ecssd writer", write_client=write_client)
        writer = CountingZoneWriter(zone, store, verify_after=config.verify_after,
                                    clock=self._clock, lease=config.lease,
                                    lock_wait=config.lock_wait,
                                    sleep=lambda s: self._writer_sleep(link, s, writer),
                                    max_attempts=config.max_attempts, jitter=rng.random)
        writer.stats = self.stats
        sqs = (SimSQS(self.enqueue, self._clock, link, config.sqs_latency, self._handed_back)
               if config.change_queue else None)
        queue = ChangeQueue(sqs, QUEUE_URL) if sqs is not None else None
        instance = LambdaInstance(writer, route53, store, dynamodb, queue, link, sqs=sqs)
        self._instances.append(instance)
        return instance

    def _handed_back(self, hints: int) -> None:
        self.stats.handed_back += hints

    def _writer_sleep(self, link: Link, seconds: float, writer: CountingZoneWriter) -> None:
        """The ZoneWriter's ``sleep``: waiting for the lease, or before a change attempt."""
        if writer.taking_lease:
            self.stats.lease_waits += 1
            self.stats.lease_wait_seconds += seconds
        else:
            self.stats.change_retries += 1
        link.pause(seconds)

    def _check_lease(self, client: SimDynamoDB) -> None:
        """A change attempt is being sent: its writer must hold the lease, unexpired."""
        item = self.items.get(LEASE_KEY)
        held = (item is not None and item["owner"]["S"] in client.owners
                and float(item["expires"]["N"]) >= self._clock())
        if not held:
            self.stats.unleased_changes += 1

    def _invoke(self, messages: list[Message]) -> None:
        now = self.world.now
        instance = self._instance()
        instance.busy = True
        for message in messages:
            message.received = now
        records = [{"messageId": m.id, "body": m.body} for m in messages]
        stats = self.stats
        stats.invocations += 1
        stats.hints += len(messages)
        stats.starts.append(now)
        bridge = Bridge(str(stats.invocations), lambda: self._handle(instance, records, now))
        instance.link.bridge = bridge
        invocation = Invocation(stats.invocations, messages, instance, bridge, now,
                                instance.counts(), cold=not instance.used)
        instance.used = True
        self._running.append(invocation)
        stats.max_running = max(stats.max_running, len(self._running))
        self.world.sched.after(self.config.function_timeout, self._timeout, invocation)
        self.world.sched.spawn(bridge.process(), self.world.r53.handle,
                               lambda result: self._finished(invocation, result))

    def _handle(self, instance: LambdaInstance, records: list[dict[str, str]],
                started: float) -> Any:
        """Runs in the invocation's thread: the real handler, its cached writer set to this
        execution environment's (nothing else runs while this thread does)."""
        zone_writer_handler.runtime.set(
            zone_writer_handler.WriterRuntime(instance.writer, instance.queue))
        return zone_writer_handler.lambda_handler({"Records": records},
                                                  LambdaContext(self, started))

    def _timeout(self, invocation: Invocation) -> None:
        if invocation.done:
            return
        self.stats.timed_out += 1
        invocation.bridge.cancel()
        self._lingering.append(invocation.bridge)
        # the sandbox is gone: the next invocation gets a fresh instance (and clients)
        self._end(invocation, [m.id for m in invocation.messages], reuse=False)

    def _finished(self, invocation: Invocation, result: tuple[str, Any]) -> None:
        self.cpu_seconds_max = max(self.cpu_seconds_max, invocation.bridge.cpu_seconds)
        if invocation.done:  # timed out before: already accounted for
            return
        kind, value = result
        stats = self.stats
        failed: list[str]
        if kind == "done":
            failed = [str(f["itemIdentifier"]) for f in value.get("batchItemFailures", [])]
        else:  # a bug in the code under test: Lambda retries the whole batch
            failed = [m.id for m in invocation.messages]
            stats.function_errors += 1
            stats.first_error = stats.first_error or f"{kind}: {value!r}"
        self._end(invocation, failed, reuse=True)

    def _end(self, invocation: Invocation, failed: list[str], reuse: bool) -> None:
        invocation.done = True
        now = self.world.now
        self.stats.max_seconds = max(self.stats.max_seconds, now - invocation.started)
        self._account(invocation, now)
        self._running.remove(invocation)
        invocation.instance.busy = False
        if reuse:
            self._idle.append(invocation.instance)
        again = set(failed)
        for message in invocation.messages:  # the others are deleted (acknowledged)
            if message.id in again:
                self._serial += 1
                heapq.heappush(self._delayed, (message.received + self.config.visibility_timeout,
                                               self._serial, message))
        self._kick()

    def _account(self, invocation: Invocation, now: float) -> None:
        """Its cost: what its instance sent since it started (one invocation at a time runs
        in an instance, and a killed instance is never reused, so that is all of it; a
        request in flight when it was killed was counted when sent)."""
        dynamodb, items, batches, messages = invocation.instance.counts()
        dynamodb_0, items_0, batches_0, messages_0 = invocation.counts
        # to the microsecond first: 0.07 s of float sums must bill 70 ms, not 71
        billed_ms = math.ceil(round((now - invocation.started) * 1000.0, 3))
        self.stats.costs.append(InvocationCost(
            invocation.started, billed_ms, invocation.cold, dict(dynamodb - dynamodb_0),
            dict(items - items_0), batches - batches_0, messages - messages_0,
            invocation.bridge.cpu_seconds if invocation.bridge.finished else 0.0))

    def close(self) -> None:
        """End of the run: unwind any thread still waiting on the scheduler."""
        for invocation in list(self._running):
            invocation.bridge.abandon()
        for bridge in self._lingering:
            bridge.abandon()
        self._lingering.clear()

"""The fleet simulation's own correctness: its Route 53 model, its botocore retry model, its
use of the agent's code, and its end-to-end bookkeeping (every intended change lands, runs
are deterministic), so that the fleet figures in benchmarks/RESULTS.md can be trusted."""

from __future__ import annotations

import ast
import dataclasses
import random
import threading
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.fleet import (
    AS_BUILT,
    FULL_LISTING,
    QUEUED,
    Bucket,
    DaemonPolicy,
    FleetConfig,
    Limits,
    WriterConfig,
    simulate,
)
from benchmarks.fleet.aws import LEASE_KEY, SimDynamoDB, condition_holds
from benchmarks.fleet.engine import Call, Scheduler, Sleep
from benchmarks.fleet.fleet import Fleet
from benchmarks.fleet.host import host_owns
from benchmarks.fleet.retry import BotocoreClient, RetryPolicy
from benchmarks.fleet.route53 import (
    CHANGE,
    GET_ZONE,
    LIST,
    MAX_WEIGHTED_SETS,
    Response,
    SimRoute53,
    TokenBucket,
)
from benchmarks.fleet.writer import StateCodec
from ecssd_agent.aws import host_store
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.aws.route53 import from_wire, to_wire
from ecssd_agent.core.model import Action, Change, Host, RecordSet, Routing, ServiceInstance
from ecssd_agent.core.ownership import Kind, Owner, owned_by_host
from ecssd_agent.core.records import host_records, routed
from ecssd_agent.sync.zone_reads import NameScan
from ecssd_agent.writer.zone_writer import LEASE_SECONDS

ZONE = "sd.internal."
QUIET = Limits(name="test", propagation=(1.0, 1.0))


def srv(host: str, n: int, name: str = "_web._tcp") -> RecordSet:
    instance = ServiceInstance(name=name, protocol="tcp", container_port=80, port=30000 + n,
                               container_id=f"{n:012x}" + "0" * 52)
    records, _ = host_records(Host(host, "10.0.0.1"), [instance], ZONE, Routing.WEIGHTED, 0)
    return records[1]


def change(action: Action, record: RecordSet) -> Call:
    return Call(CHANGE, {"changes": [Change(action, record)]})


# --- module structure --------------------------------------------------------------------

FLEET_PACKAGE = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet"


def fleet_imports() -> dict[str, set[str]]:
    """Module -> the benchmarks.fleet modules it imports, read from the source with ast (so an
    import under ``if TYPE_CHECKING:`` or inside a function counts as well)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(FLEET_PACKAGE.glob("*.py")):
        module = path.stem
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            imported.update(n.split(".")[2] for n in names
                            if n.startswith("benchmarks.fleet.") and len(n.split(".")) > 2)
        graph[module] = {m for m in imported if (FLEET_PACKAGE / f"{m}.py").exists()} - {module}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` (modules in import order, the first repeated), or []."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_import_cycle_finds_a_cycle_and_accepts_a_layering():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_fleet_package_has_no_import_cycle():
    """The world owns the clock and the simulated AWS; hosts and the writer depend on it and
    the fleet on all of them, never the reverse (a cycle even under TYPE_CHECKING means two
    modules cannot be read, tested or changed apart)."""
    graph = fleet_imports()
    assert {"world", "host", "writer", "fleet"} <= graph.keys()
    assert "world" in graph["host"] and "world" in graph["writer"]  # the graph is really read
    assert import_cycle(graph) == []
    assert not graph["world"] & {"host", "writer", "fleet"}


# --- token bucket and throttling ---------------------------------------------------------

def test_token_bucket_bursts_then_refills_at_its_rate():
    bucket = TokenBucket(Bucket(50, 10))
    taken = 0
    while bucket.has(0.0, 1):
        bucket.take(1)
        taken += 1
    assert taken == 50
    assert not bucket.has(0.05, 1)  # half a token
    assert bucket.has(0.1, 1)
    bucket.take(1)
    assert bucket.has(10.0, 50) and bucket.tokens == pytest.approx(50)  # capped at the burst
    bucket.take(10)
    assert not bucket.has(10.0, 45)


def test_account_bucket_throttles_beyond_burst_and_refill():
    r53 = SimRoute53(ZONE, QUIET, random.Random(1))
    outcomes = [r53.handle(0.0, Call(LIST, {}))[0].error for _ in range(60)]
    assert outcomes.count(None) == 50 and outcomes.count("Throttling") == 10
    later = [r53.handle(1.0, Call(GET_ZONE, {}))[0].ok for _ in range(12)]
    assert later.count(True) == 10  # one second of refill
    assert r53.stats.counts[(LIST, "throttled")] == 10


def test_per_operation_bucket_is_consumed_too():
    limits = dataclasses.replace(QUIET, account=Bucket(1000, 1000),
                                 per_operation=((LIST, Bucket(3, 1)),))
    r53 = SimRoute53(ZONE, limits, random.Random(1))
    assert [r53.handle(0.0, Call(LIST, {}))[0].ok for _ in range(4)] == [True, True, True, False]
    assert r53.handle(0.0, Call(GET_ZONE, {}))[0].ok  # other operations are not limited by it


def test_change_throughput_bucket_counts_upserts_twice():
    limits = dataclasses.replace(QUIET, changes=Bucket(3, 1), processing=0.0)
    r53 = SimRoute53(ZONE, limits, random.Random(1))
    assert r53.handle(0.0, change(Action.UPSERT, srv("h1", 1)))[0].ok  # 2 of 3 tokens
    response, _ = r53.handle(0.0, change(Action.UPSERT, srv("h1", 2)))
    assert response.error == "Throttling"
    assert r53.handle(0.0, change(Action.CREATE, srv("h1", 3)))[0].ok  # the last token


# --- PriorRequestNotComplete -------------------------------------------------------------

def test_prior_request_not_complete_while_the_zone_processes_a_change():
    r53 = SimRoute53(ZONE, dataclasses.replace(QUIET, processing=0.5), random.Random(1))
    assert r53.handle(10.0, change(Action.CREATE, srv("h1", 1)))[0].ok
    assert r53.handle(10.3, change(Action.CREATE, srv("h2", 2)))[0].error == "PriorRequestNotComplete"
    assert r53.handle(10.3, Call(LIST, {}))[0].ok  # reads are not blocked
    assert r53.handle(10.5, change(Action.CREATE, srv("h2", 2)))[0].ok
    assert r53.stats.counts[(CHANGE, "pnc")] == 1


def test_prior_request_not_complete_until_insync_mode():
    limits = dataclasses.replace(QUIET, pnc_until_insync=True, propagation=(30.0, 30.0))
    r53 = SimRoute53(ZONE, limits, random.Random(1))
    response, _ = r53.handle(0.0, change(Action.CREATE, srv("h1", 1)))
    assert response.data["insync"] == 30.0
    assert r53.handle(29.9, change(Action.CREATE, srv("h1", 2)))[0].error == "PriorRequestNotComplete"
    assert r53.handle(30.0, change(Action.CREATE, srv("h1", 2)))[0].ok


def test_prior_request_answer_costs_no_token_when_so_configured():
    limits = dataclasses.replace(QUIET, account=Bucket(2, 0.001), processing=1.0,
                                 pnc_costs_request=False, per_operation=())
    r53 = SimRoute53(ZONE, limits, random.Random(1))
    assert r53.handle(0.0, change(Action.CREATE, srv("h1", 1)))[0].ok
    for _ in range(5):
        assert r53.handle(0.5, change(Action.CREATE, srv("h1", 2)))[0].error == "PriorRequestNotComplete"
    assert r53.handle(1.0, change(Action.CREATE, srv("h1", 2)))[0].ok  # the second token


# --- batches as Route 53 validates them --------------------------------------------------

def test_batches_are_atomic_and_validated():
    r53 = SimRoute53(ZONE, dataclasses.replace(QUIET, processing=0.0), random.Random(1))
    a, b = srv("h1", 1), srv("h1", 2)
    assert r53.handle(0.0, change(Action.CREATE, a))[0].ok
    duplicate = Call(CHANGE, {"changes": [Change(Action.CREATE, b), Change(Action.CREATE, a)]})
    response, _ = r53.handle(1.0, duplicate)
    assert response.error == "InvalidChangeBatch"
    assert r53.zone.get(b.key) is None  # nothing of the batch was applied
    altered = dataclasses.replace(a, values=("1 1 1 elsewhere.",))
    assert r53.handle(2.0, change(Action.DELETE, altered))[0].error == "InvalidChangeBatch"
    swap = Call(CHANGE, {"changes": [Change(Action.DELETE, a), Change(Action.CREATE, a)]})
    assert r53.handle(3.0, swap)[0].ok


def test_at_most_100_weighted_record_sets_per_name_and_type():
    r53 = SimRoute53(ZONE, dataclasses.replace(QUIET, processing=0.0), random.Random(1))
    full = [Change(Action.CREATE, srv(f"h{n}", n)) for n in range(MAX_WEIGHTED_SETS)]
    assert r53.handle(0.0, Call(CHANGE, {"changes": full}))[0].ok
    response, _ = r53.handle(1.0, change(Action.CREATE, srv("h999", 999)))
    assert response.error == "InvalidChangeBatch"
    assert response.data == (f"[Exceeded limit on number of weighted RRSets for _web._tcp.{ZONE}, "
                             "type SRV in this zone.]")  # the strict moto's words
    assert r53.handle(2.0, change(Action.CREATE, srv("h999", 999, name="_other._tcp")))[0].ok


def test_the_model_refuses_the_other_quotas_in_route53s_words():
    r53 = SimRoute53(ZONE, dataclasses.replace(QUIET, processing=0.0, zone_record_sets=4),
                     random.Random(1))
    values = tuple(f"10.0.{n // 250}.{n % 250}" for n in range(401))
    many = RecordSet(f"many.{ZONE}", "A", values, 60)
    assert r53.handle(0.0, change(Action.CREATE, many))[0].data == (
        "[Cannot have more than 400 records in a RRSet.]")
    fits = dataclasses.replace(many, values=values[:400])
    assert r53.handle(1.0, change(Action.CREATE, fits))[0].ok
    # 400 values counted twice and 201 more: over 1,000 ResourceRecord elements
    upserts = [Change(Action.UPSERT, fits), Change(Action.CREATE, dataclasses.replace(
        many, name=f"more.{ZONE}", values=values[:201]))]
    assert r53.handle(2.0, Call(CHANGE, {"changes": upserts}))[0].data == (
        "[Number of records limit of 1000 exceeded.]")
    text = RecordSet(f"t.{ZONE}", "TXT", tuple(f'"{n:0248d}"' for n in range(129)), 60)
    assert r53.handle(3.0, change(Action.CREATE, text))[0].data == (
        "[RDATA character limit of 32000 exceeded.]")
    simple = RecordSet(f"_web._tcp.{ZONE}", "SRV", ("1 1 80 h.",), 60)
    routed_one = srv("h1", 1)
    assert r53.handle(4.0, change(Action.CREATE, simple))[0].ok
    assert r53.handle(5.0, change(Action.CREATE, routed_one))[0].data == (
        f"[RRSet with DNS name _web._tcp.{ZONE}, type SRV, SetIdentifier "
        f"{routed_one.set_identifier} cannot be created as a non-weighted set exists with the "
        "same name and type.]")
    assert len(r53.zone) == 2
    two = [Change(Action.CREATE, srv("h1", n, name=f"_s{n}._tcp")) for n in range(3)]
    assert r53.handle(6.0, Call(CHANGE, {"changes": two}))[0].data == (
        "[Exceeded limit MAX_RRSETS_BY_ZONE for zone: Z0SIMULATED]")
    assert r53.handle(7.0, Call(CHANGE, {"changes": two[:2]}))[0].ok  # 4: the quota


# --- listing -----------------------------------------------------------------------------

def fill(r53: SimRoute53) -> list[RecordSet]:
    records = [srv(f"h{n:02d}", n, name=f"_s{n % 7}._tcp") for n in range(40)]
    records += [routed(f"h{n:02d}.{ZONE}", "A", ["10.0.0.1"], Owner(host=f"h{n:02d}"),
                       Routing.WEIGHTED, 0) for n in range(5)]
    for record in records:
        r53.zone.put(record)
    return records


def test_listing_pages_in_route53_order_and_continue_inside_a_name():
    r53 = SimRoute53(ZONE, QUIET, random.Random(1))
    records = fill(r53)
    seen: list[RecordSet] = []
    params: dict = {"max_items": 4}
    pages = 0
    while True:
        page = r53.zone.page(**params)
        pages += 1
        seen += [from_wire(w) for w in page["ResourceRecordSets"]]
        if not page["IsTruncated"]:
            break
        params = {"start_name": page["NextRecordName"], "start_type": page["NextRecordType"],
                  "start_identifier": page.get("NextRecordIdentifier"), "max_items": 4}
    assert sorted(seen, key=lambda r: r.key) == sorted(records, key=lambda r: r.key)
    assert len(seen) == len(set(r.key for r in seen))  # no page repeats a record set
    assert pages == -(-len(records) // 4)
    names = [r.name for r in seen]
    assert names == sorted(names, key=lambda n: ".".join(reversed(n.rstrip(".").split("."))))


def test_the_agents_name_scan_reads_the_simulated_zone():
    r53 = SimRoute53(ZONE, QUIET, random.Random(1))
    records = fill(r53)
    owns = owned_by_host("h03")
    scan = NameScan({r.name for r in records if owns(r)}, owns)
    while (start := scan.next_start()) is not None:
        params: dict = {"start_name": start, "max_items": 3}
        while scan.feed(page := r53.zone.page(**params)):
            params = {"start_name": page["NextRecordName"], "start_type": page["NextRecordType"],
                      "start_identifier": page.get("NextRecordIdentifier"), "max_items": 3}
    assert sorted(scan.result().records, key=lambda r: r.key) == sorted(
        (r for r in records if owns(r)), key=lambda r: r.key)


def test_host_owns_agrees_with_the_agent():
    r53 = SimRoute53(ZONE, QUIET, random.Random(1))
    records = [
        *fill(r53),
        RecordSet(f"www.{ZONE}", "A", ("1.2.3.4",), 300),
        RecordSet(f"x.{ZONE}", "SRV", ("1 1 1 t.",), 0, set_identifier="ecssd:h:h01:zz", weight=1),
        routed(f"t.{ZONE}", "SRV", ["1 1 1 t."], Owner(kind=Kind.TASK, cluster="c", task="t1", port="80/tcp"),
               Routing.WEIGHTED, 0),
    ]
    for label in ("h01", "h03", "nobody"):
        assert [host_owns(label)(r) for r in records] == [owned_by_host(label)(r) for r in records]


# --- botocore's standard retry mode ------------------------------------------------------

class ScriptedServer:
    def __init__(self, errors: list[str | None]) -> None:
        self.errors = errors
        self.calls: list[float] = []

    def __call__(self, now: float, call: Call) -> tuple[Response, float]:
        self.calls.append(now)
        error = self.errors.pop(0) if self.errors else None
        return Response(error is None, error), 0.0


class FixedRandom(random.Random):
    def random(self) -> float:
        return 1.0


def drive(client: BotocoreClient, server: ScriptedServer) -> Response:
    sched = Scheduler()
    result: list[Response] = []
    sched.spawn(client.call(CHANGE, {}), server, result.append)
    sched.run(10_000)
    return result[0]


def test_retries_throttling_with_capped_exponential_backoff():
    server = ScriptedServer(["Throttling"] * 7)
    response = drive(BotocoreClient(RetryPolicy(), FixedRandom()), server)
    assert response.ok
    gaps = [b - a for a, b in zip(server.calls, server.calls[1:], strict=False)]
    assert gaps == [1, 2, 4, 8, 16, 20, 20]  # random() * min(2 ** (i - 1), 20), random() = 1


def test_gives_up_after_max_attempts_and_never_retries_a_rejected_batch():
    client = BotocoreClient(RetryPolicy(max_attempts=3), random.Random(1))
    server = ScriptedServer(["PriorRequestNotComplete"] * 5)
    assert drive(client, server).error == "PriorRequestNotComplete"
    assert len(server.calls) == 3 and client.gave_up == 1
    server = ScriptedServer(["InvalidChangeBatch"])
    assert drive(client, server).error == "InvalidChangeBatch" and len(server.calls) == 1


def test_retry_quota_runs_out_and_successes_refill_it():
    client = BotocoreClient(RetryPolicy(quota=12, retry_cost=5), random.Random(1))
    server = ScriptedServer(["Throttling"] * 3)
    assert drive(client, server).error == "Throttling"
    assert len(server.calls) == 3 and client.quota == 2  # two retries paid, the third refused
    drive(client, ScriptedServer([]))
    assert client.quota == 3  # +1 for a call without retries
    server = ScriptedServer(["Throttling"])
    drive(client, server)
    assert len(server.calls) == 1  # 3 < 5: no retry possible


def test_sleep_instruction_advances_virtual_time_only():
    sched = Scheduler()
    times: list[float] = []

    def body():
        yield Sleep(3600.0)
        times.append(sched.now)

    sched.spawn(body(), ScriptedServer([]))
    sched.run(7200.0)
    assert times == [3600.0]


# --- the whole fleet ---------------------------------------------------------------------

SMALL = dict(hosts=12, steady=360.0, observe=120.0, warmup=30.0, host_failures_per_hour=2.0,
             unhealthy_per_sweep=0.01, churn_per_minute=0.03, sweep_interval=120.0)


def recommended() -> DaemonPolicy:
    from benchmarks.bench_fleet import RECOMMENDED

    return RECOMMENDED


@pytest.mark.parametrize("policy", [FULL_LISTING, AS_BUILT, recommended()],
                         ids=["full-listing", "as-built", "recommended"])
def test_every_intended_change_lands_and_the_zone_ends_exact(policy):
    fleet = Fleet(FleetConfig(policy=policy, **SMALL))
    result = fleet.run()
    assert fleet.world.metrics.host_failures >= 1 and fleet.world.metrics.sweep_runs >= 3
    assert result.burst_changes > 0 and result.burst_convergence < 120.0
    assert result.lost_updates == 0 and result.zone_mismatches == 0
    assert fleet.world.intents == {}
    assert all(r in fleet.world.r53.zone.records() for r in fleet.foreign)  # foreign records kept
    assert result.holds


def test_same_seed_same_run_other_seed_other_run():
    def figures(seed: int) -> dict:
        result = simulate(FleetConfig(policy=recommended(), seed=seed, **SMALL))
        out = dataclasses.asdict(result)
        del out["wall_seconds"]
        return out

    assert figures(7) == figures(7)
    assert figures(7) != figures(8)


def test_the_lost_update_check_fails_when_writes_cannot_land():
    starved = dataclasses.replace(QUIET, name="starved", account=Bucket(1, 0.0005))
    config = FleetConfig(policy=recommended(), limits=starved, drain=120.0,
                         **{**SMALL, "host_failures_per_hour": 0.0})
    result = simulate(config)
    assert result.lost_updates > 0 and not result.holds
    assert result.burst_convergence == float("inf")


def test_reads_stay_within_the_budget_on_a_large_zone():
    config = FleetConfig(policy=recommended(), hosts=150, steady=420.0, observe=60.0,
                         burst_fraction=0.0, host_failures_per_hour=0.0, unhealthy_per_sweep=0.0)
    result = simulate(config)
    sweep_pages = 3150 / 300 / config.sweep_interval  # one full listing per sweep
    assert result.steady_by_op["ListResourceRecordSets"] <= config.policy.read_budget + sweep_pages + 0.1
    full = simulate(dataclasses.replace(config, policy=FULL_LISTING))
    assert full.steady_by_op["ListResourceRecordSets"] > 5 * result.steady_by_op["ListResourceRecordSets"]
    # the daemon as wired now reads as the recommended design does
    as_built = simulate(dataclasses.replace(config, policy=AS_BUILT))
    assert as_built.steady_by_op["ListResourceRecordSets"] <= config.policy.read_budget + sweep_pages + 0.1


# --- the queued mode: agents publish, the real ZoneWriter applies -----------------------

def queued_fleet(*, hosts: int = 6, writer: WriterConfig | None = None, limits: Limits = QUIET,
                 drain: float = 900.0, resync: float = QUEUED.resync, seed: int = 1) -> Fleet:
    """A quiet fleet (no churn, failures, unhealthy instances or deployment) whose events a
    test schedules itself."""
    policy = dataclasses.replace(QUEUED, resync=resync)
    return Fleet(FleetConfig(hosts=hosts, policy=policy, limits=limits, churn_per_minute=0.0,
                             host_failures_per_hour=0.0, unhealthy_per_sweep=0.0,
                             burst_fraction=0.0, warmup=10.0, steady=60.0, observe=60.0,
                             drain=drain, writer=writer or WriterConfig(), seed=seed))


def srv_of(fleet: Fleet, host_index: int, cid: str) -> RecordSet:
    host = fleet.hosts[host_index]
    return next(r for r in host.desired() if r.type == "SRV" and cid[:12] in (r.set_identifier or ""))


def test_queued_mode_lands_every_change_and_hosts_never_call_route53():
    threads = threading.active_count()
    fleet = Fleet(FleetConfig(policy=QUEUED, **SMALL))
    result = fleet.run()
    assert fleet.world.metrics.host_failures >= 1 and fleet.world.metrics.sweep_runs >= 3
    assert result.burst_changes > 0 and result.burst_convergence < 120.0
    assert result.lost_updates == 0 and result.zone_mismatches == 0 and fleet.world.intents == {}
    assert result.regressions == 0
    assert all(r in fleet.world.r53.zone.records() for r in fleet.foreign)
    assert set(result.requests_by_caller) == {"sweep", "writer"}  # no host wrote Route 53
    writer = result.writer
    assert writer is not None and writer.invocations > 10 and writer.function_errors == 0
    assert writer.max_running <= 2 and writer.changes >= result.burst_changes
    assert writer.unleased_changes == 0 and writer.timed_out == 0
    assert result.holds
    assert threading.active_count() == threads  # every invocation's thread was joined
    assert fleet.writer is not None and LEASE_KEY not in fleet.writer.items  # the last writer released


def test_a_deployment_costs_a_few_change_requests_not_one_per_host():
    config = FleetConfig(hosts=100, policy=QUEUED, warmup=30.0, steady=120.0, observe=120.0,
                         drain=300.0, host_failures_per_hour=0.0, unhealthy_per_sweep=0.0)
    queued = simulate(config)
    direct = simulate(dataclasses.replace(config, policy=AS_BUILT))
    assert queued.burst_changes >= 700  # 20% of 2,000 tasks replaced: ~800 record changes
    assert queued.holds and direct.holds
    assert queued.burst_change_requests <= config.hosts // 4  # ~ one per 2 s batching window
    assert direct.burst_change_requests >= config.hosts  # each host writes its own
    assert queued.writer is not None and queued.writer.deployment_invocations <= 25


# --- the writers' lease, as the real HostStore.acquire/release take it -------------------

def lease_store(items: dict, now: list[float]) -> HostStore:
    return HostStore(SimDynamoDB(items, clock=lambda: now[0]), "table", clock=lambda: now[0])


def test_the_lease_is_taken_when_free_expired_or_ours_and_released_only_by_its_owner():
    items: dict = {}
    now = [1000.0]
    store = lease_store(items, now)
    assert store.acquire("a", 60.0)  # free
    assert store.acquire("a", 60.0)  # ours: extended
    assert float(items[LEASE_KEY]["expires"]["N"]) == 1060.0
    assert not store.acquire("b", 60.0)  # another's, unexpired
    now[0] = 1060.0
    assert not store.acquire("b", 60.0)  # expires < now is false at the very second
    now[0] = 1060.5
    assert store.acquire("b", 60.0)  # expired
    store.release("a")  # not a's any more: kept
    assert items[LEASE_KEY]["owner"]["S"] == "b"
    store.release("b")
    assert LEASE_KEY not in items
    store.release("b")  # nothing to release: no error
    assert store.client.owners == {"a", "b"}


def test_the_memoised_state_codec_agrees_with_the_stores_own():
    """The run memoises HostStore's encoding and decoding of host states (StateCodec): the
    text must be the real function's, byte for byte, and decoding must give what the real
    function gives, for record sets built by a host and for ones read back from the zone."""
    built = [srv("h1", n) for n in range(3)]
    listed = [from_wire(to_wire(r)) for r in built]  # as read from a listing: ``listed`` set
    assert all(r.listed is not None for r in listed)
    codec = StateCodec(host_store._records_out, host_store._records_in)
    for records in (built, listed, built[::-1], [], built[:1]):
        text = codec.records_out(records)
        assert text == host_store._records_out(records)
        assert codec.records_out(records) == text  # memoised: the same again
        assert codec.records_in(text) == host_store._records_in(text) == tuple(records)
    foreign = host_store._records_out([srv("h2", 9)])
    assert codec.records_in(foreign) == host_store._records_in(foreign)


def test_condition_expressions_the_model_cannot_read_fail_loudly():
    item = {"host": {"S": "h"}, "n": {"N": "3"}}
    values = {":x": {"N": "2"}}
    assert condition_holds("#n > :x", item, {"#n": "n"}, values)
    assert not condition_holds("attribute_not_exists(#n) OR #n < :x", item, {"#n": "n"}, values)
    assert condition_holds("attribute_not_exists(#n)", None, {"#n": "n"}, values)
    assert not condition_holds("#n > :x AND #n < :x", item, {"#n": "n"}, values)
    assert condition_holds("#n < :x OR #n > :x AND #n >= :x", item, {"#n": "n"}, values)
    assert not condition_holds("#n > :x AND attribute_not_exists(#n) OR #n < :x", item,
                               {"#n": "n"}, values)
    for expression in ("(#n > :x)", "begins_with(#n, :x)", "#n BETWEEN :x AND :x"):
        with pytest.raises(ValueError):
            condition_holds(expression, item, {"#n": "n"}, values)


def test_the_writer_lambda_is_modelled_as_the_stack_configures_it():
    from cfnlint.decode import decode_str  # type: ignore[import-untyped]

    path = Path(__file__).resolve().parents[2] / "cloudformation" / "quickstart.yaml"
    template, matches = decode_str(path.read_text())
    assert not matches, matches
    resources = template["Resources"]
    function = resources["ZoneWriterFunction"]["Properties"]
    mapping = resources["ZoneWriterEventSource"]["Properties"]
    hints = resources["ChangeQueue"]["Properties"]
    config = WriterConfig()
    assert config.function_timeout == function["Timeout"]
    assert config.visibility_timeout == hints["VisibilityTimeout"]
    assert config.batch_size == mapping["BatchSize"]
    assert config.batching_window == mapping["MaximumBatchingWindowInSeconds"]
    assert config.max_concurrency == mapping["ScalingConfig"]["MaximumConcurrency"]
    assert config.memory_mb == function["MemorySize"]  # the GB-seconds of the cost figures
    # unfinished hosts are handed back to the queue only when the function knows it
    assert config.change_queue == ("CHANGE_QUEUE" in function["Environment"]["Variables"])


# --- the Lambda: batching window, concurrency, failures, timeouts, hand-backs -------------

def test_hints_of_a_batching_window_make_one_invocation_and_two_run_at_most():
    # each DynamoDB request takes 5 s, so an invocation lasts >= 15 s (lease, load, release)
    fleet = queued_fleet(hosts=3, writer=WriterConfig(dynamodb_latency=5.0))
    fleet.build()
    writer = fleet.writer
    assert writer is not None

    def publish(index: int) -> None:
        host = fleet.hosts[index]
        assert host.publisher is not None
        host.publisher.publish(host.desired(), force=True)

    for at, index in ((10.0, 0), (11.5, 1), (13.0, 2), (14.0, 0)):
        fleet.world.sched.at(at, publish, index)
    with writer.running():
        fleet.world.sched.run(80.0)
    # 10.0 and 11.5 gather until 12.0; 13.0 opens the next window (one runs) until 15.0,
    # taking 14.0 too; nothing more is gathered while two run, so nothing else starts
    assert writer.stats.starts == [12.0, 15.0]
    assert writer.stats.hints == 4 and writer.stats.max_running == 2
    assert writer.stats.hosts == 4  # 2 hosts, then 2 (one hint per host is enough)
    assert writer.stats.lease_waits > 0  # the second waited for the first: one at a time
    assert writer.stats.unleased_changes == 0 and LEASE_KEY not in writer.items


def test_a_failed_invocations_hints_come_back_after_the_visibility_timeout():
    fleet = queued_fleet(writer=WriterConfig(max_attempts=1), resync=1e9, drain=2400.0)
    started: list[str] = []
    fleet.world.sched.at(15.0, fleet.world.r53.block_changes, 40.0)  # every change: PriorRequestNotComplete
    fleet.world.sched.at(20.0, lambda: started.append(fleet.start_task_on(fleet.hosts[0], "_a._tcp", "t")))
    result = fleet.run()
    writer = fleet.writer
    assert writer is not None and writer.stats.failed == 1
    first, again = writer.stats.starts[0], writer.stats.starts[1]
    assert first == pytest.approx(22.28, abs=0.1)  # 20 + coalescing + publication + 2 s window
    assert again == pytest.approx(first + 1800.0 + 2.0)  # visible again, one more window
    assert result.lost_updates == 0 and result.zone_mismatches == 0
    landed = fleet.world.metrics.latencies["t"]
    assert len(landed) == 1 and 1802.0 < landed[0][1] < 1810.0  # the new SRV record set, late
    assert writer.stats.hosts_read >= 1  # the failed write's outcome was unknown: read first


@pytest.mark.parametrize("change_queue", [True, False], ids=["handed-back", "failed-messages"])
def test_a_writer_that_cannot_get_the_lease_hands_its_hosts_back(change_queue):
    # host 0's write holds the lease for ~200 s: its change request is answered that late
    # (a lease of 300 s outlasts it; with 60 s, see test_a_request_outliving_the_lease...)
    fleet = queued_fleet(writer=WriterConfig(change_queue=change_queue, lease=300.0), resync=1e9,
                         drain=2400.0)
    started: list[str] = []
    fleet.world.sched.at(19.0, fleet.world.r53.set_latency, CHANGE, 200.0)
    fleet.world.sched.at(20.0, lambda: started.append(fleet.start_task_on(fleet.hosts[0], "_a._tcp", "t")))
    fleet.world.sched.at(25.0, fleet.world.r53.set_latency, CHANGE, 0.25)
    fleet.world.sched.at(30.0, lambda: started.append(fleet.start_task_on(fleet.hosts[1], "_b._tcp", "t")))
    result = fleet.run()
    writer = result.writer
    assert writer is not None and writer.interrupted_by_lease == 1 and writer.timed_out == 0
    assert writer.unleased_changes == 0 and writer.max_running == 2
    assert result.lost_updates == 0 and result.zone_mismatches == 0 and result.regressions == 0
    first, second = (latency for _, latency in sorted(fleet.world.metrics.latencies["t"]))
    assert first < 3.0  # host 0's change landed when sent; its answer came 200 s later
    # host 1's waited 120 s (lock_wait) for the lease, then went back to the queue
    if change_queue:
        assert writer.handed_back == 1  # visible at once: the next write got the lease
        assert fleet.writer is not None  # one SendMessageBatch, billed to the invocation
        assert [(c.sqs_batches, c.sqs_messages) for c in fleet.writer.stats.costs
                if c.sqs_batches] == [(1, 1)]
        assert 192.0 < second < 196.0  # when host 0's write released it (~222 s)
    else:
        assert writer.handed_back == 0  # reported failed: back after the visibility timeout
        assert 1800.0 < second < 1810.0


def test_a_record_changed_behind_the_writers_back_is_read_and_replanned():
    fleet = queued_fleet()

    def tamper_then_change_every_host() -> None:
        victim = fleet.hosts[2]
        cid = next(iter(victim.containers))
        record = srv_of(fleet, 2, cid)
        fleet.world.r53.zone.put(dataclasses.replace(record, values=("1 1 9 elsewhere.",), listed=None))
        fleet.stop_task(victim, cid, "t", None)  # plans a DELETE of the record it knew
        for host in fleet.hosts:
            fleet.start_task_on(host, "_web._tcp", "t")

    fleet.world.sched.at(20.0, tamper_then_change_every_host)
    result = fleet.run()
    writer = result.writer
    assert writer is not None and writer.rejected_batches >= 1 and writer.hosts_read == 1
    assert writer.failed_hosts == ()
    assert result.lost_updates == 0 and result.zone_mismatches == 0 and result.regressions == 0
    assert len(fleet.world.metrics.latencies["t"]) == 7  # 6 new SRV record sets + the deletion


def test_a_host_with_an_impossible_record_set_is_bisected_out_and_the_others_land():
    fleet = queued_fleet(hosts=8)
    full = f"_full._tcp.{fleet.world.zone_name}"
    impossible: list[str] = []

    def fill_and_change_every_host() -> None:
        for n in range(MAX_WEIGHTED_SETS):  # someone else's 100 weighted record sets
            record = RecordSet(full, "SRV", (f"1 1 {1000 + n} other{n}.example.",), 60,
                               set_identifier=f"other-{n}", weight=1)
            fleet.world.r53.zone.put(record)
            fleet.foreign.append(record)
        for index, host in enumerate(fleet.hosts):
            if index == 5:  # a 101st weighted record set: Route 53 refuses it, always
                impossible.append(fleet.start_task_on(host, "_full._tcp", "t"))
            else:
                fleet.start_task_on(host, "_web._tcp", "t")

    fleet.world.sched.at(20.0, fill_and_change_every_host)
    result = fleet.run()
    bad = fleet.hosts[5].host.label
    writer = result.writer
    assert writer is not None and writer.failed_hosts == (bad,)
    # halves of 8, 4, 2 and 1 host(s) without reading, then that host read and tried again
    assert writer.rejected_batches >= 5 and writer.hosts_read >= 1
    assert set(fleet.world.intents) == {srv_of(fleet, 5, impossible[0]).key}
    assert result.lost_updates == 1 and result.zone_mismatches == 1  # that record set only
    others = [r for h in fleet.hosts if h.host.label != bad for r in h.desired()]
    assert all(fleet.world.r53.zone.get(r.key) == r for r in others)
    assert len(fleet.world.metrics.latencies["t"]) == 7  # every other host's new record set landed


def test_queued_runs_are_deterministic():
    def figures(seed: int) -> dict:
        result = simulate(FleetConfig(policy=QUEUED, seed=seed, **SMALL))
        out = dataclasses.asdict(result)
        del out["wall_seconds"], out["writer_cpu_max"], out["writer_cpu_steady"]
        return out

    assert figures(7) == figures(7)
    assert figures(7) != figures(8)


def test_the_queued_modes_cost_counts_agree_with_each_other():
    """bench_fleet quotes what the queued mode costs from these counters: each is checked
    against another counted elsewhere, or against what the writer must have sent."""
    config = FleetConfig(policy=QUEUED, **SMALL)
    fleet = Fleet(config)
    result = fleet.run()
    writer, costs = fleet.writer, result.writer_costs
    assert writer is not None and costs is not None
    stats = writer.stats
    assert stats.failed == stats.timed_out == stats.function_errors == 0 and result.holds
    # one PutItem and one SendMessage per publication (the seeded ones included)
    publications = sum(h.publisher.publications for h in fleet.hosts if h.publisher is not None)
    agents = writer.agent_requests()
    assert agents["PutItem"] == agents["SendMessage"] == publications > 2 * config.hosts
    # every hint sent after the seeding reached exactly one invocation, as did the hand-backs
    assert stats.hints == publications - config.hosts + stats.handed_back
    # the invocations' own counts add up to their execution environments' counters
    dynamodb, sqs = writer.writer_requests()
    by_invocation: Counter[str] = Counter()
    for cost in stats.costs:
        by_invocation.update(cost.dynamodb)
    assert len(stats.costs) == stats.invocations and by_invocation == dynamodb
    assert sum(c.sqs_batches for c in stats.costs) == sqs["SendMessageBatch"]
    assert sum(c.sqs_messages for c in stats.costs) == stats.handed_back
    assert sum(c.cold for c in stats.costs) >= 1  # the first invocation made its environment
    # the lease: taken by every invocation, extended before every change request, given back
    # by each one that took it, after reading its hosts (1 request per 50 hosts)
    assert dynamodb["PutItem"] >= stats.invocations + stats.change_requests
    assert stats.invocations - stats.interrupted_by_lease <= dynamodb["DeleteItem"] <= stats.invocations
    for cost in stats.costs:
        if cost.dynamodb.get("DeleteItem"):
            assert cost.dynamodb.get("BatchGetItem", 0) >= 1
            assert cost.dynamodb_items["BatchGetItem"] <= 100 * cost.dynamodb["BatchGetItem"]
            # lease, read and release at 10 ms each, at least
            assert cost.billed_ms >= 30
    assert dynamodb["BatchWriteItem"] >= 1 and dynamodb.keys() <= {
        "BatchGetItem", "BatchWriteItem", "PutItem", "DeleteItem"}
    # the steady period's figures: part of the whole run's, as quoted
    assert (costs.start, costs.end, costs.seconds) == (30.0, 360.0, 330.0)
    assert 0 < costs.agent_puts == costs.agent_sends < publications - config.hosts
    assert 0 < costs.invocations < stats.invocations
    assert costs.dynamodb["DeleteItem"] <= costs.invocations <= costs.dynamodb["PutItem"]
    assert costs.gb_seconds == pytest.approx(costs.billed_ms / 1000.0)  # 1,024 MB
    assert costs.per_hour(costs.invocations) == pytest.approx(costs.invocations * 3600 / 330)


def test_direct_mode_never_writes_an_older_state_over_a_newer_one():
    """The regression detector's own control: a host only ever writes its current plan."""
    result = simulate(FleetConfig(policy=AS_BUILT, **SMALL))
    assert result.regressions == 0 and result.holds


def test_two_writers_at_once_never_roll_a_host_back():
    """Two invocations run at once (the mapping's least MaximumConcurrency is 2): host 0
    publishes S2 while the write of its S1 is busy with a rejected batch (host 1's record
    was changed by hand, 3 s per read page). Before the lease, the second invocation applied
    S2 and the first then re-planned S1 over it (deleting _b); now the second waits."""
    slow_reads = dataclasses.replace(QUIET, latency=((LIST, 3.0), (CHANGE, 0.25), (GET_ZONE, 0.05)))
    fleet = queued_fleet(hosts=4, limits=slow_reads)

    def first() -> None:  # host 1's batch will be rejected: its record was changed by hand
        victim = fleet.hosts[1]
        cid = next(iter(victim.containers))
        record = srv_of(fleet, 1, cid)
        fleet.world.r53.zone.put(dataclasses.replace(record, values=("1 1 9 elsewhere.",), listed=None))
        fleet.stop_task(victim, cid, "t", None)
        fleet.start_task_on(fleet.hosts[0], "_a._tcp", "t")  # host 0: publication S1

    fleet.world.sched.at(20.0, first)
    fleet.world.sched.at(23.0, lambda: fleet.start_task_on(fleet.hosts[0], "_b._tcp", "t"))
    result = fleet.run()
    writer = result.writer
    assert writer is not None and writer.max_running == 2 and writer.rejected_batches >= 1
    assert writer.lease_waits > 0 and writer.unleased_changes == 0
    assert result.regressions == 0 and result.late_writes == 0
    assert result.lost_updates == 0 and result.zone_mismatches == 0


def test_a_writer_killed_after_applying_never_leaves_the_zone_wrong():
    """A Lambda killed at its timeout after its change request landed and before it saved
    the outcome. Before the fix the applied state stayed one publication behind the zone, so
    the plan of the container's stop was empty and its record set stayed (until
    verify_after, a day). Now the hosts were saved as unknown before the request: the next
    write reads host 0 first. Function timeout 90 s: the handler's deadline is start +
    67.5 s (it keeps a quarter); the request sent at ~22.3 s is answered after 100 s, so the
    kill at ~112 s comes between the change and the save."""
    fleet = queued_fleet(hosts=4, drain=600.0, writer=WriterConfig(function_timeout=90.0))
    started: list[str] = []
    fleet.world.sched.at(20.0, lambda: started.append(fleet.start_task_on(fleet.hosts[0], "_a._tcp", "t")))
    fleet.world.sched.at(21.0, fleet.world.r53.set_latency, CHANGE, 100.0)
    fleet.world.sched.at(23.0, fleet.world.r53.set_latency, CHANGE, 0.25)
    fleet.world.sched.at(40.0, lambda: fleet.stop_task(fleet.hosts[0], started[0], "t", None))
    result = fleet.run()
    writer = result.writer
    assert writer is not None and writer.timed_out == 1  # the invocation that created _a
    assert fleet.writer is not None  # a killed invocation is billed its whole timeout
    assert [c.billed_ms for c in fleet.writer.stats.costs].count(90_000) == 1
    assert [round(since) for since, _ in fleet.world.metrics.latencies["t"]] == [20, 40]  # both landed
    assert writer.hosts_read >= 1  # host 0 was read: its outcome was unknown
    assert result.lost_updates == 0 and result.zone_mismatches == 0 and result.regressions == 0


def test_a_change_call_outliving_the_lease_never_rolls_a_host_back():
    """The first writer's change attempts are answered PriorRequestNotComplete until 90 s
    while a second invocation waits for the lease. When botocore retried the call (10
    attempts, waits up to 20 s) it outlived the 60 s lease: the second writer took the
    expired lease, applied host 0's newer publication and gave the lease back; the first then
    sent an attempt without the lease and, re-planning its OLDER publication, rolled host 0
    back. Now the writer retries the request itself and extends its lease before every
    attempt (and an expired lease can no longer be extended, even when free)."""
    fleet = queued_fleet(hosts=4, resync=1e9, seed=7)
    fleet.world.sched.at(19.0, fleet.world.r53.block_changes, 90.0, "writer-1")
    fleet.world.sched.at(20.0, lambda: fleet.start_task_on(fleet.hosts[0], "_a._tcp", "t"))  # S1
    fleet.world.sched.at(30.0, lambda: fleet.start_task_on(fleet.hosts[0], "_b._tcp", "t"))  # S2
    result = fleet.run()
    writer = result.writer
    assert writer is not None and writer.max_running == 2
    assert writer.change_retries >= 3 and writer.max_seconds > LEASE_SECONDS  # kept its lease
    assert writer.lease_waits > 0  # the second writer waited for the first
    assert writer.unleased_changes == 0 and result.regressions == 0
    assert len(fleet.world.metrics.latencies["t"]) == 2  # both publications landed
    assert result.lost_updates == 0 and result.zone_mismatches == 0

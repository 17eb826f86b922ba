"""The fleet simulation's own correctness: its Route 53 model, its botocore retry model, its
use of the agent's code, and its end-to-end bookkeeping (every intended change lands, runs
are deterministic), so that the fleet figures in benchmarks/RESULTS.md can be trusted."""

from __future__ import annotations

import dataclasses
import random

import pytest

from benchmarks.fleet import AS_BUILT, FULL_LISTING, Bucket, DaemonPolicy, FleetConfig, Limits, simulate
from benchmarks.fleet.engine import Call, Scheduler, Sleep
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
from benchmarks.fleet.world import World
from ecssd_agent.agent import owned_by_host
from ecssd_agent.aws.route53 import from_wire
from ecssd_agent.model import Action, Change, Host, Owner, RecordSet, Routing, ServiceInstance
from ecssd_agent.records import host_records, routed
from ecssd_agent.zone_reads import NameScan

ZONE = "sd.internal."
QUIET = Limits(name="test", propagation=(1.0, 1.0))


def srv(host: str, n: int, name: str = "_web._tcp") -> RecordSet:
    instance = ServiceInstance(name=name, protocol="tcp", container_port=80, port=30000 + n,
                               container_id=f"{n:012x}" + "0" * 52)
    records, _ = host_records(Host(host, "10.0.0.1"), [instance], ZONE, Routing.WEIGHTED, 0)
    return records[1]


def change(action: Action, record: RecordSet) -> Call:
    return Call(CHANGE, {"changes": [Change(action, record)]})


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
    assert response.error == "InvalidChangeBatch" and "100" in response.data
    assert r53.handle(2.0, change(Action.CREATE, srv("h999", 999, name="_other._tcp")))[0].ok


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
        routed(f"t.{ZONE}", "SRV", ["1 1 1 t."], Owner(kind="t", cluster="c", task="t1", port="80/tcp"),
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
    world = World(FleetConfig(policy=policy, **SMALL))
    result = world.run()
    assert world.metrics.host_failures >= 1 and world.metrics.sweep_runs >= 3
    assert result.burst_changes > 0 and result.burst_convergence < 120.0
    assert result.lost_updates == 0 and result.zone_mismatches == 0
    assert world.intents == {}
    assert all(r in world.r53.zone.records() for r in world.foreign)  # foreign records kept
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

"""Fleet simulation: does the design hold Route 53's account-wide budget from 10 to 1,000 hosts?

H hosts x 20 containers, each host running the agent's real planning code (see
benchmarks/fleet/) against one simulated, rate-limited Route 53 in virtual time: container
churn of 1% of all containers replaced per minute, host failures with the health sweep
deleting dead hosts' records every 5 minutes (one full listing each), and a deployment
replacing 20% of all tasks within 30 s. Three daemons are compared:

- ``before issue 10``: the daemon as first written (a full zone listing at startup, on every
  resync (300 s) and after every failed write): it held ~100 hosts;
- ``as built``: ecssd_agent/agent/daemon.py now, with its default settings: one full listing at
  startup, then name-scoped reads only when the fleet-wide read budget allows and not within
  a minute of a Throttling answer, the known state kept after Throttling and
  PriorRequestNotComplete, events gathered >= 10 s for a minute after a Throttling answer,
  failed writes retried by the daemon's own backoff (botocore standard retries inside);
- ``recommended``: the read strategy of ecssd_agent/sync/zone_reads.py (name-scoped reads,
  scheduled within a fleet-wide read budget, postponed while Route 53 pushes back on this
  host), register at startup with one UPSERT and no read, keep the known state after a
  definite Throttling/PriorRequestNotComplete answer, gather events for 10 s while Route 53
  pushes back, and retry throttled writes in the daemon (up to 30 attempts, backoff
  ``rand * min(2^i, 8)`` s), re-planning before each so every attempt carries everything
  pending;
- ``queued mode``: the daemon publishes its whole desired state (DynamoDB + an SQS hint, no
  Route 53 request) after the same coalescing; the zone writer Lambda (the REAL handler and
  ``ZoneWriter.write``, run in virtual time by benchmarks/fleet/writer.py) applies the
  publications of a 2 s batching window together, one writer at a time (a DynamoDB lease;
  the SQS event source mapping runs at most 2 invocations, the second waits for the lease up
  to 120 s), 10 botocore attempts per call, function timeout 300 s and a deadline 60 s
  before it, unfinished hosts handed back to the queue at once, hints of a failed or
  timed-out invocation back after the 1,800 s visibility timeout (cloudformation/
  quickstart.yaml's values). The health sweep still deletes dead hosts' records itself.

A run "holds" when no Throttling lasts 3 or more consecutive minutes (>1% of requests),
the deployment is applied within 120 s, every intended change landed (asserted by the
simulation: the zone ends exactly as the live hosts want it) and no write ever put an older
state of a host over a newer one (a *regression*: see World._check_regression).
``python3 -m benchmarks.bench_fleet [--quick]`` prints the rows alone.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from benchmarks.fleet import (
    AS_BUILT,
    FULL_LISTING,
    HISTORIC,
    QUEUED,
    Bucket,
    DaemonPolicy,
    FleetConfig,
    FleetResult,
    Limits,
    WriterConfig,
    simulate,
)
from benchmarks.fleet.retry import RetryPolicy
from benchmarks.plots import PLOTS, Point, write_fleet_plots
from benchmarks.rows import result_row

AREA = "fleet"
GOAL = "no sustained throttling; 20% deployment applied <= 120 s; 0 lost updates, 0 regressions"
CONVERGENCE_GOAL = 120.0  # seconds: FleetResult.holds
#: The modes the plots and the headline compare: the daemon writing Route 53 itself, and the
#: daemon publishing to the zone writer.
DIRECT, QUEUED_MODE = "direct (daemon as built)", "queued (zone writer)"

RECOMMENDED = DaemonPolicy(
    "recommended (zone_reads)", read="names", resync_reads="budget", startup="upsert",
    forget_on_error=False, pressure=10.0, replan_retries=True, reads_yield=True,
    retry=RetryPolicy(max_attempts=30, max_backoff=8.0))
#: The read side alone (what ecssd_agent/sync/zone_reads.py provides), without the write-side
#: changes (back-pressure window, re-planned retries, reads yielding to writes): shows what
#: each half buys.
READS_ONLY = dataclasses.replace(RECOMMENDED, name="reads only (zone_reads, no write changes)",
                                 pressure=0.0, replan_retries=False, reads_yield=False,
                                 retry=RetryPolicy())

POLICIES = (FULL_LISTING, AS_BUILT, RECOMMENDED, QUEUED)
FULL_SIZES = {FULL_LISTING.name: (10, 50, 100, 150, 200),
              AS_BUILT.name: (10, 50, 100, 200, 300, 500, 700, 1000),
              RECOMMENDED.name: (10, 50, 100, 200, 300, 500, 700, 1000),
              QUEUED.name: (10, 100, 200, 300, 500, 1000, 2000)}
QUICK_SIZES = {FULL_LISTING.name: (10, 100), AS_BUILT.name: (10, 100, 500),
               RECOMMENDED.name: (10, 100, 500), QUEUED.name: (10, 100, 500)}

#: What-if runs of the queued mode (full run only): the writer Lambda without CHANGE_QUEUE
#: (its unfinished hosts' messages are reported failed and come back after the visibility
#: timeout instead of at once), and the model's one undocumented figure the writer depends
#: on, Route 53's change throughput (changes per second per account), at half the assumed rate.
WHAT_IF = (
    ("without CHANGE_QUEUE on the writer (unfinished hosts back after 1,800 s)",
     WriterConfig(change_queue=False), None, (1000,)),
    ("change throughput ASSUMED 50/s instead of 100/s",
     WriterConfig(), dataclasses.replace(Limits(), name="changes 1000 burst, 50/s",
                                         changes=Bucket(1000, 50)), (500, 1000)),
)


def config(hosts: int, policy: DaemonPolicy, quick: bool, limits: Limits | None = None,
           writer: WriterConfig | None = None) -> FleetConfig:
    """A run: 7 (quick: 5) minutes of steady state after a minute of warm-up, the deployment,
    4 (3) more minutes, then up to 10 minutes without new work for everything to land.

    The zone's record-set quota is Route 53's default, or twice what the fleet holds (20 SRV
    record sets and one A per host) where that is more: the increase an operator of such a
    fleet must have asked for (the model refuses a batch past the quota, as Route 53 does)."""
    limits = limits or Limits()
    needed = 2 * hosts * (FleetConfig.containers_per_host + 1)
    limits = dataclasses.replace(limits, zone_record_sets=max(limits.zone_record_sets, needed))
    return FleetConfig(hosts=hosts, policy=policy, limits=limits, warmup=60.0,
                       steady=360.0 if quick else 480.0, observe=180.0 if quick else 240.0,
                       drain=600.0, writer=writer or WriterConfig())


def seconds(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.0f} s"


def verdict(result: FleetResult) -> str:
    if result.holds:
        return "HOLDS"
    writer = result.writer
    return "fails: " + ", ".join(
        reason for reason, bad in (
            ("sustained throttling", result.sustained_throttling),
            ("deployment > 120 s", result.burst_convergence > 120.0),
            ("lost updates", result.lost_updates > 0 or result.zone_mismatches > 0),
            ("regressions", result.regressions > 0),
            ("writer errors", writer is not None and writer.function_errors > 0)) if bad)


def describe(result: FleetResult) -> str:
    ops = ", ".join(f"{op.replace('ResourceRecordSets', 'RRS')} {rate:.2f}"
                    for op, rate in result.steady_by_op.items())
    text = (f"{result.records} records; steady {ops}; Throttling {result.steady_throttled} "
            f"({result.steady_throttle_ratio:.1%}, worst minute {result.worst_minute_throttle_ratio:.0%}), "
            f"PriorRequestNotComplete {result.steady_pnc}; deployment ({result.burst_changes} "
            f"record changes) applied {seconds(result.burst_convergence)} in "
            f"{result.burst_change_requests} change requests, INSYNC "
            f"{seconds(result.burst_insync)}, {result.burst_throttled} throttled meanwhile; "
            f"event->record p50 {result.latency_p50:.2f} s p95 {result.latency_p95:.2f} s; "
            f"lost updates {result.lost_updates}, zone mismatches {result.zone_mismatches}, "
            f"regressions {result.regressions}")
    if result.regressions:
        text += f" (slowest repaired after {result.regression_repair_max:.0f} s)"
    writer = result.writer
    if writer is not None:
        text += (f"; writer: {writer.invocations} invocations ({writer.deployment_invocations} "
                 f"during the deployment, up to {writer.max_hosts} hosts and "
                 f"{writer.max_seconds:.0f} s each, at most {writer.max_running} at once), "
                 f"{writer.timed_out} timed out, {writer.failed} failed (AWS error), "
                 f"{writer.interrupted} interrupted ({writer.interrupted_by_lease} lease busy, "
                 f"{writer.interrupted - writer.interrupted_by_lease} deadline), "
                 f"{writer.handed_back} hints handed back; lease waits "
                 f"{writer.lease_wait_seconds:.0f} s in all; "
                 f"{writer.unleased_changes} change attempts without the lease, "
                 f"{writer.change_retries} sent again by the writer; "
                 f"{result.requests_by_caller.get('writer', 0)} Route 53 attempts in all; the "
                 f"completed writes: {writer.rejected_batches} batches rejected, "
                 f"{writer.read_requests} read requests for {writer.hosts_read} host reads; CPU "
                 f"<= {result.writer_cpu_max:.2f} s per invocation here")
        if writer.function_errors:
            text += f", {writer.function_errors} function errors ({writer.first_error})"
    return f"{text}; {verdict(result)}"


def row(metric: str, value: Any, unit: str, note: str, goal: str = GOAL,
        held: bool | None = None) -> dict[str, Any]:
    """A result row; ``held`` makes it a headline figure (see benchmarks/__main__.py)."""
    return result_row(AREA, metric, value, unit, goal=goal, note=note, held=held)


def sweep(policy: DaemonPolicy, sizes: tuple[int, ...], quick: bool,
          limits: Limits | None = None, writer: WriterConfig | None = None) -> list[FleetResult]:
    results = []
    for hosts in sizes:
        results.append(simulate(config(hosts, policy, quick, limits, writer)))
    return results


def deployment_rows(results: list[FleetResult]) -> list[dict[str, Any]]:
    """The queued mode's deployment cost per fleet size, as figures of their own."""
    rows = []
    for result in results:
        writer = result.writer
        invocations = writer.deployment_invocations if writer is not None else 0
        rows.append(row(f"H={result.hosts} {QUEUED.name}: change requests for the 20% deployment",
                        result.burst_change_requests, "requests",
                        f"{result.burst_changes} record changes over {result.hosts} hosts; "
                        f"{invocations} writer invocations until it was applied "
                        f"({seconds(result.burst_convergence)})",
                        goal="far fewer than hosts (direct mode: >= 1 per host)"))
    return rows


def cost_rows(results: list[FleetResult]) -> list[dict[str, Any]]:
    """What the queued mode costs per fleet size, from the requests and the Lambda time the
    simulation counted over the steady period, so the docs can quote counts, not guesses."""
    rows = []
    for result in results:
        costs = result.writer_costs
        if costs is None:
            continue
        hour = costs.per_hour
        db, items = costs.dynamodb, costs.dynamodb_items
        writer_db = sum(db.values())
        pubs = costs.agent_puts
        per_pub_writer = writer_db / pubs if pubs else 0.0
        per_pub_sqs = (costs.agent_sends + costs.sqs_messages) / pubs if pubs else 0.0
        note = (
            f"steady period t={costs.start:.0f}-{costs.end:.0f} s ({costs.seconds / 60:.0f} "
            "min of churn, host failures, resyncs every "
            f"{QUEUED.resync:.0f} s and sweeps; the deployment after it excluded), counted by the "
            f"simulation and scaled to an hour. Writer Lambda: {hour(costs.invocations):.0f} "
            f"invocations/h ({costs.invocations} in the period, {costs.cold_starts} in a new "
            f"execution environment), billed {hour(costs.billed_ms / 1000):.0f} s/h (virtual-time "
            "durations, each rounded up to 1 ms), "
            f"{hour(costs.gb_seconds):.0f} GB-s/h at {costs.memory_mb} MB. DynamoDB requests/h: "
            f"agents PutItem {hour(pubs):.0f}; writer BatchGetItem "
            f"{hour(db.get('BatchGetItem', 0)):.0f} ({hour(items.get('BatchGetItem', 0)):.0f} "
            f"keys), BatchWriteItem {hour(db.get('BatchWriteItem', 0)):.0f} "
            f"({hour(items.get('BatchWriteItem', 0)):.0f} items), PutItem (lease) "
            f"{hour(db.get('PutItem', 0)):.0f}, DeleteItem (lease) "
            f"{hour(db.get('DeleteItem', 0)):.0f}. SQS requests/h: agents SendMessage "
            f"{hour(costs.agent_sends):.0f}; writer hand-back SendMessageBatch "
            f"{hour(costs.sqs_batches):.0f} ({hour(costs.sqs_messages):.0f} messages); event "
            "source mapping polling not simulated. Per host change (per publication, "
            f"{pubs} in the period, resyncs' forced ones included): {1 + per_pub_writer:.2f} "
            f"DynamoDB requests (1 by the agent, {per_pub_writer:.2f} by the writer), "
            f"{per_pub_sqs:.2f} SQS "
            "messages sent. Not modelled: the event source mapping's ReceiveMessage/"
            "DeleteMessageBatch, Lambda init time, the handler's CPU time in the durations "
            f"(here {hour(result.writer_cpu_steady):.0f} CPU s/h on this machine; the run's "
            f"longest invocation {result.writer_cpu_max:.2f} CPU s), item sizes "
            "(DynamoDB request units), throttling or errors of DynamoDB and SQS")
        rows.append(row(f"H={result.hosts} {QUEUED.name}: what the writer costs per hour of "
                        "steady churn", round(hour(costs.gb_seconds), 1), "GB-s/h", note,
                        goal="measured, for the docs (no goal)"))
    return rows


def largest_holding(results: list[FleetResult]) -> int:
    """The largest fleet that holds, below which every tested size held too."""
    largest = 0
    for result in sorted(results, key=lambda r: r.hosts):
        if not result.holds:
            break
        largest = result.hosts
    return largest


def sensitivity(quick: bool) -> list[dict[str, Any]]:
    """The recommended design under other readings of the undocumented parts."""
    if quick:
        return []
    result = simulate(config(500, READS_ONLY, quick))
    rows = [row(f"ablation H=500 {READS_ONLY.name}", round(result.steady_rps, 2), "req/s",
                describe(result))]
    for seed in (2, 3):
        result = simulate(dataclasses.replace(config(500, RECOMMENDED, quick), seed=seed))
        rows.append(row(f"H=500 {RECOMMENDED.name}, seed {seed} (another random run)",
                        round(result.steady_rps, 2), "req/s", describe(result)))
    base = Limits()
    cases = [
        (500, dataclasses.replace(base, name="PriorRequestNotComplete window 0.1 s", processing=0.1)),
        (700, dataclasses.replace(base, name="PriorRequestNotComplete window 0.02 s", processing=0.02)),
        (300, HISTORIC),
        (50, dataclasses.replace(base, name="zone blocked until INSYNC (5-60 s)", pnc_until_insync=True)),
    ]
    for hosts, limits in cases:
        result = simulate(config(hosts, RECOMMENDED, quick, limits))
        rows.append(row(f"sensitivity H={hosts} {RECOMMENDED.name}, {limits.name}",
                        round(result.steady_rps, 2), "req/s", describe(result)))
    return rows


def what_if(quick: bool) -> list[dict[str, Any]]:
    """The queued mode under other writer settings (see WHAT_IF): not what runs today."""
    if quick:
        return []
    rows = []
    for name, writer, limits, sizes in WHAT_IF:
        for result in sweep(QUEUED, sizes, quick, limits=limits, writer=writer):
            rows.append(row(f"what-if H={result.hosts} {QUEUED.name}, {name}",
                            round(result.steady_rps, 2), "req/s", describe(result),
                            goal=GOAL + " (a what-if, not the shipped configuration)"))
    return rows


def model_note() -> str:
    limits = Limits()
    changes = limits.changes or Bucket(0, 0)
    writer = WriterConfig()
    return (f"Route 53 model: account bucket {limits.account.burst:.0f} burst / "
            f"{limits.account.rate:.0f} per s and the same per operation (Route 53 Developer Guide, "
            "'Throttling for Amazon Route 53 API requests'); change-throughput bucket ASSUMED "
            f"{changes.burst:.0f} / {changes.rate:.0f} changes per s (documented to exist, figures "
            "not retrievable here; UPSERT counts 2); PriorRequestNotComplete while the zone "
            f"processes the previous change, ASSUMED {limits.processing} s, the answer costing a "
            "request token; INSYNC 5-60 s after a change ('changes generally propagate within 60 "
            "seconds'); at most 100 weighted record sets per name and type; zone quota 10,000 "
            "record sets, raised to twice the fleet's record sets where it needs more; "
            "latency List 0.15 s, "
            "Change 0.25 s. Clients: botocore standard mode (8 attempts, rand*min(2^i,20) s "
            "backoff, 500-token retry quota) as Clients configures it. Workload: 20 containers "
            "per host, ~50 tasks per service, 1%/min of containers replaced (2 record changes "
            "each), 1% of hosts failing per hour, sweep every 300 s. Queued mode: publication "
            f"(PutItem + SendMessage) {writer.publish_latency * 1000:.0f} ms, each writer DynamoDB "
            f"request {writer.dynamodb_latency * 1000:.0f} ms and SendMessageBatch "
            f"{writer.sqs_latency * 1000:.0f} ms (ASSUMED); batching window "
            f"{writer.batching_window:.0f} s, batch <= {writer.batch_size} hints, <= "
            f"{writer.max_concurrency} invocations at once, one writer at a time (lease "
            f"{writer.lease:.0f} s, wait <= {writer.lock_wait:.0f} s), function timeout "
            f"{writer.function_timeout:.0f} s (deadline min(60 s, a quarter) before), visibility timeout "
            f"{writer.visibility_timeout:.0f} s, unfinished hosts handed back at once "
            f"(CHANGE_QUEUE), {writer.max_attempts} attempts per call (change requests retried by "
            "the writer, its lease extended before each attempt); the writer knew each "
            "host's state from a "
"read at a random point of the last day (verify_after).")


def run(quick: bool = False) -> list[dict[str, Any]]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    rows: list[dict[str, Any]] = []
    largest: dict[str, int] = {}
    by_mode: dict[str, list[FleetResult]] = {}
    for policy in POLICIES:
        results = sweep(policy, sizes[policy.name], quick)
        for result in results:
            rows.append(row(f"H={result.hosts} x 20 containers, {policy.name}: account requests",
                            round(result.steady_rps, 2), "req/s", describe(result)))
        tested = ", ".join(str(r.hosts) for r in results)
        largest[policy.name] = largest_holding(results)
        mode = {AS_BUILT.name: DIRECT, QUEUED.name: QUEUED_MODE}.get(policy.name)
        rows.append(row(f"largest fleet holding the goal, {policy.name}", largest[policy.name],
                        "hosts", f"tested sizes: {tested}",
                        goal="1000 hosts (500 at least, else change the design)",
                        held=largest[policy.name] >= 1000 if mode else None))
        if mode is not None:
            by_mode[mode] = results
            rows += headline_rows(mode, results)
        if policy is QUEUED:
            rows += deployment_rows(results)
            rows += cost_rows(results)
    rows.append(row("largest fleet holding the goal, direct vs queued mode",
                    f"direct {largest[AS_BUILT.name]}, queued {largest[QUEUED.name]}", "hosts",
                    "the largest tested fleet below which every tested size held, per mode "
                    f"(direct: {AS_BUILT.name}; queued: {QUEUED.name})",
                    goal="1000 hosts"))
    sweep_wall, sweep_cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    if not quick:  # the committed plots show the full sweep only
        rows.append(plot_row(by_mode))
    rows += sensitivity(quick)
    rows += what_if(quick)
    rows.append(row("fleet simulation run time: the sweep of fleet sizes (virtual time)",
                    round(sweep_wall, 1), "s",
                    f"CPU {sweep_cpu:.1f} s for {sum(len(s) for s in sizes.values())} runs; with the "
                    f"ablation, sensitivity and what-if runs {time.perf_counter() - started_wall:.1f} s "
                    f"(CPU {time.process_time() - started_cpu:.1f} s). {model_note()}",
                    goal="< 2 min for the sweep (full: up to 2,000 hosts x 20), faster with --quick",
                    held=sweep_wall < 120.0))
    return rows


def headline_rows(mode: str, results: list[FleetResult]) -> list[dict[str, Any]]:
    """The two plotted figures of one mode at the largest tested fleet up to 1,000 hosts."""
    result = max((r for r in results if r.hosts <= 1000), key=lambda r: r.hosts)
    limit = Limits().account.rate
    return [
        row(f"H={result.hosts} {mode}: Route 53 requests in steady state",
            round(result.steady_rps, 2), "req/s", describe(result),
            goal=f"no sustained throttling (account limit {limit:g} req/s)",
            held=not result.sustained_throttling),
        row(f"H={result.hosts} {mode}: 20% deployment applied after", seconds(result.burst_convergence),
            "", f"{result.burst_changes} record changes; the run as a whole: {verdict(result)}",
            goal=f"<= {CONVERGENCE_GOAL:g} s",
            held=result.burst_convergence <= CONVERGENCE_GOAL),
    ]


def plot_row(by_mode: dict[str, list[FleetResult]]) -> dict[str, Any]:
    """Draw benchmarks/plots/*.png from the sweep; a plot that cannot be drawn is one error
    row, and the figures measured stay."""
    series = {mode: [Point(r.hosts, r.steady_rps, r.burst_convergence, r.holds) for r in results]
              for mode, results in by_mode.items()}
    try:
        paths = write_fleet_plots(series, PLOTS, rate_limit=Limits().account.rate,
                                  convergence_goal=CONVERGENCE_GOAL)
    except Exception as exc:  # matplotlib missing or broken: say so, keep the figures
        return {"area": AREA, "metric": "ERROR (plots)", "value": "error", "unit": "", "goal": "",
                "note": f"{type(exc).__name__}: {exc}"}
    return row("plots: fleet size vs Route 53 requests/s and vs deployment convergence",
               len(paths), "files", ", ".join(f"benchmarks/plots/{p.name}" for p in paths),
               goal="drawn by this run")


if __name__ == "__main__":
    for item in run(quick="--quick" in sys.argv[1:]):
        print(f"{item['metric']}: {item['value']} {item['unit']}  [{item['note']}]")

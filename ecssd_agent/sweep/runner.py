"""One sweep, wired: read the zone, observe ECS/EC2, assess, probe, decide, act, summarise.

The deciding is :mod:`ecssd_agent.sweep.decide` (pure); this module moves data between the
adapters and it, and is the one place that acts (Route 53 deletes, StopTask, the failure
counts tagged on tasks), so ``DRY_RUN`` skips exactly the acting. If Route 53 rejects a batch
of deletions, the zone is read again and the deletions recomputed (same observation, same
verdicts) and applied once more; a second rejection is reported, never sent again blindly.
A run that refused, held verdicts back for a broken path, or failed ends with one log line
an alarm counts (:data:`REFUSED_METRIC`, :data:`FAILED_METRIC`).
"""


from __future__ import annotations

import concurrent.futures
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.aws import ecs as ecs_api
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import BatchRejected, Route53Zone, ZoneError, find_zone
from ecssd_agent.core.model import Action, Change, RecordSet
from ecssd_agent.sweep import decide as sweep
from ecssd_agent.sweep import observe, probe, writer_hints
from ecssd_agent.sweep.settings import SweepSettings

log = logging.getLogger(__name__)

DETAIL_LIMIT = 100  # entries of the per-item lists kept in the summary
STOP_WORKERS = 8  # StopTask and TagResource calls in flight (botocore's retry mode throttles)
#: The words of the one line a run that refused or held verdicts back writes (the stack's
#: metric filter counts it), and of the one line a failed run writes.
REFUSED_METRIC = "ecssd_sweep_refused"
FAILED_METRIC = "ecssd_sweep_failed"


@dataclass
class _Outcome:
    plan: sweep.Plan
    assessment: sweep.Assessment
    requests: int = 0
    deleted: int = 0
    attempts: int = 0


def rules_of(settings: SweepSettings) -> sweep.Rules:
    return sweep.Rules(
        default_path=settings.check_health_path,
        grace_seconds=settings.grace_seconds,
        check_health=settings.check_health,
        stop_unhealthy=settings.stop_unhealthy,
        max_delete_fraction=settings.max_delete_fraction,
        check_failures=settings.check_failures,
    )


def run(
    settings: SweepSettings,
    clients: Clients,
    definitions: ecs_api.TaskDefinitions,
    *,
    now: float | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Sweep once; returns the summary. ``deadline`` (monotonic) bounds the health checks."""
    started = time.monotonic()
    before = clients.stats.snapshot()
    summary: dict[str, Any] = empty_summary(settings.dry_run)
    try:
        _sweep(settings, clients, definitions, summary,
               time.time() if now is None else now, deadline)
    except (ZoneError, ClientError, BotoCoreError) as exc:
        # Reading the zone failed (anything later is caught where it happens): no decision.
        log.error("sweep aborted: %s", exc)
        summary["errors"].append(f"sweep aborted: {exc}")
    except Exception as exc:  # a bug must still end in a summary and an alarm
        log.exception("sweep aborted by an unexpected error")
        summary["errors"].append(f"sweep aborted: {type(exc).__name__}: {exc}")
    summary["aws_requests"] = _delta(before, clients.stats.snapshot())
    summary["duration_s"] = round(time.monotonic() - started, 3)
    log_outcome(summary)
    return summary


def empty_summary(dry_run: bool) -> dict[str, Any]:
    """Every key of the summary, before anything was found or done."""
    return {
        "clusters": [], "tasks": 0, "records_seen": 0, "owned": 0, "healthy": 0,
        "unhealthy": [], "deleted": 0, "deletions": [], "stopped": [], "skipped": 0,
        "skipped_detail": [], "out_of_scope": 0, "unjudged": 0, "errors": [],
        "refused": "", "refused_by": "", "held_back": "", "guard": _guard(sweep.GuardFigures()),
        "failing": [], "held": [], "no_verdict": [], "counts_written": 0,
        "suspect": [], "ecs_healthy": [], "change_requests": 0, "dry_run": dry_run,
        "outcome": "ok",
    }


def _guard(figures: sweep.GuardFigures) -> dict[str, Any]:
    return {"deletable": figures.deletable, "planned": figures.planned,
            "probed": figures.probed, "failed": figures.failed,
            "unreachable": figures.unreachable[:DETAIL_LIMIT], "fail_open": figures.fail_open}


def _sweep(settings: SweepSettings, clients: Clients, definitions: ecs_api.TaskDefinitions,
           summary: dict[str, Any], now: float, deadline: float | None) -> None:
    route53, ecs, ec2 = clients.client("route53"), clients.client("ecs"), clients.client("ec2")
    zone = Route53Zone(route53, find_zone(route53, settings.domain,
                                          settings.hosted_zone_id or None),
                       comment="ecssd health sweep")
    timer = _Timer(summary)
    records = list(zone.records())
    summary["zone"] = zone.zone.name
    timer.lap("read_zone")

    names = observe.cluster_names(ecs, settings.clusters)
    referenced = sweep.referenced_tasks(records, names[0])
    scope = observe.observe(ecs, ec2, settings.clusters, referenced, definitions,
                            need_definitions=settings.check_health, names=names)
    summary["clusters"] = [c.name for c in scope.clusters]
    summary["tasks"] = sum(c.running for c in scope.clusters)
    timer.lap("observe")

    rules = rules_of(settings)
    assessment = sweep.assess(scope, records, rules, now)
    for suspect in assessment.suspect:
        log.warning("suspect record %s: %s", suspect.what, suspect.reason,
                    extra={"set_identifier": suspect.what, "metric": "ecssd_sweep_suspect"})
    for skip in assessment.no_verdict[:DETAIL_LIMIT]:
        _log_no_verdict(skip.what, skip.task, skip.reason)
    verdicts: dict[str, sweep.Verdict] = {}
    if settings.check_health and assessment.targets:
        verdicts = probe.probe_all(
            assessment.targets, timeout=settings.check_timeout,
            attempts=settings.check_retries, concurrency=settings.check_concurrency,
            deadline=deadline)
    timer.lap("check")
    outcome = _delete(zone, scope, records, assessment, verdicts, rules, settings, summary, now)
    for target, cause in outcome.plan.no_verdict[:DETAIL_LIMIT]:
        _log_no_verdict(target.key, target.task_ref, cause)
    if settings.change_queue_url and outcome.deleted:
        writer_hints.send(clients.client("sqs"), settings.change_queue_url, zone.zone.name,
                          [d.record for d in outcome.plan.deletions], summary)
    timer.lap("delete")
    stopped = _stop(ecs, outcome.plan, settings, summary)
    counts = _write_counts(ecs, outcome.plan, settings, summary)
    timer.lap("stop")
    _fill(summary, records, outcome, stopped)
    summary["counts_written"] = counts


def _log_no_verdict(instance: str, task: str, cause: str) -> None:
    """An instance its own configuration or answer kept from a verdict: one line, with the
    task and the cause, and nothing else of the sweep lost."""
    log.warning("no verdict for %s%s: %s", instance, f" (task {task})" if task else "", cause,
                extra={"set_identifier": instance, "task": task, "cause": cause})


class _Timer:
    """Seconds per phase, into ``summary["phases_s"]``: where a slow sweep spends its time."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.phases: dict[str, float] = {}
        summary["phases_s"] = self.phases
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = round(now - self._last, 3)
        self._last = now


def _delete(zone: Route53Zone, scope: sweep.Scope, records: Sequence[RecordSet],
            assessment: sweep.Assessment, verdicts: dict[str, sweep.Verdict],
            rules: sweep.Rules, settings: SweepSettings, summary: dict[str, Any],
            now: float) -> _Outcome:
    outcome = _Outcome(sweep.decide(assessment, verdicts, rules), assessment)
    for attempt in (1, 2):
        outcome.attempts = attempt
        plan = outcome.plan
        if not plan.deletions:
            return outcome
        for deletion in plan.deletions:
            log.info("%s %s: %s", "would delete" if settings.dry_run else "deleting",
                     deletion.record.describe(), deletion.reason,
                     extra={"set_identifier": deletion.record.set_identifier})
        changes = [Change(Action.DELETE, d.record) for d in plan.deletions]
        try:
            outcome.requests += zone.apply(changes, dry_run=settings.dry_run)
        except BatchRejected as exc:
            if attempt == 2:
                summary["errors"].append(f"Route 53 rejected the deletions again: {exc}")
                return outcome
            log.warning("%s; reading the zone again and recomputing the deletions", exc)
            try:
                fresh = list(zone.records())
            except (ClientError, BotoCoreError) as read_exc:
                summary["errors"].append(f"re-reading the zone failed: {read_exc}")
                return outcome
            assessment = sweep.assess(scope, fresh, rules, now)
            outcome = _Outcome(sweep.decide(assessment, verdicts, rules), assessment,
                               requests=outcome.requests)
            continue
        except (ClientError, BotoCoreError) as exc:
            summary["errors"].append(f"deleting records failed: {exc}")
            return outcome
        outcome.deleted = 0 if settings.dry_run else len(changes)
        return outcome
    return outcome


def outcome_of(summary: dict[str, Any]) -> tuple[str, str]:
    """(outcome, why) of a finished run: "failed" (an error: something was not observed or
    not done), "refused" (the delete-fraction guard kept the orphans), "held" (verdicts held
    back because the path looked broken) or "ok"."""
    if summary["errors"]:
        return "failed", "; ".join(str(e) for e in summary["errors"][:5])
    if summary["refused"]:
        return "refused", summary["refused"]
    if summary["held_back"]:
        return "held", summary["held_back"]
    return "ok", ""


def log_outcome(summary: dict[str, Any]) -> None:
    """Name the run's outcome in the summary, and write the one line the stack's alarm counts
    when it is not "ok" (:data:`REFUSED_METRIC` or :data:`FAILED_METRIC` in its ``metric``)."""
    outcome, why = outcome_of(summary)
    summary["outcome"] = outcome
    if outcome == "ok":
        return
    metric = FAILED_METRIC if outcome == "failed" else REFUSED_METRIC
    log.warning("sweep %s: %s", outcome, why,
                extra={"metric": metric, "outcome": outcome, "guard": summary["refused_by"],
                       **summary["guard"]})


def _in_pool(calls: Sequence[Any], one: Any) -> list[str]:
    """Run ``one`` over ``calls`` a few at a time; the errors it returns, in order."""
    if not calls:
        return []
    with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(STOP_WORKERS, len(calls))) as pool:
        return list(pool.map(one, calls))


def _write_counts(ecs: Any, plan: sweep.Plan, settings: SweepSettings,
                  summary: dict[str, Any]) -> int:
    """Tag each counted task with its failures in a row, untag the recovered: the count
    outlives this execution environment (a cold start reads it back from ECS)."""
    if settings.dry_run or not plan.tags:
        return 0

    def one(change: sweep.TagChange) -> str:
        try:
            if change.set:
                ecs_api.tag_task(ecs, change.task_arn, dict(change.set))
            if change.remove:
                ecs_api.untag_task(ecs, change.task_arn, change.remove)
        except (ClientError, BotoCoreError) as exc:
            return f"tagging task {change.task_arn} with its failure count failed: {exc}"
        return ""

    errors = [e for e in _in_pool(plan.tags, one) if e]
    summary["errors"].extend(errors)
    return len(plan.tags) - len(errors)


def _stop(ecs: Any, plan: sweep.Plan, settings: SweepSettings,
          summary: dict[str, Any]) -> list[str]:
    """StopTask each unhealthy instance's task (the plan has none without STOP_UNHEALTHY),
    a few at a time: after a bad deploy there may be dozens."""
    if not plan.stops:
        return []
    if settings.dry_run:
        for stop in plan.stops:
            log.info("would stop task %s/%s: %s", stop.cluster, stop.task, stop.reason)
        return [f"{s.cluster}/{s.task}" for s in plan.stops]

    def one(stop: sweep.Stop) -> str:
        try:
            ecs.stop_task(cluster=stop.cluster, task=stop.task, reason=stop.reason)
        except (ClientError, BotoCoreError) as exc:
            return f"StopTask {stop.cluster}/{stop.task} failed: {exc}"
        log.info("stopped task %s/%s: %s", stop.cluster, stop.task, stop.reason,
                 extra={"cluster": stop.cluster, "task_id": stop.task})
        return ""

    done: list[str] = []
    for stop, error in zip(plan.stops, _in_pool(plan.stops, one), strict=True):
        if error:
            summary["errors"].append(error)
        else:
            done.append(f"{stop.cluster}/{stop.task}")
    return done


def _fill(summary: dict[str, Any], records: Sequence[RecordSet], outcome: _Outcome,
          stopped: list[str]) -> None:
    plan, assessment = outcome.plan, outcome.assessment
    summary["records_seen"] = len(records)
    summary["owned"] = assessment.owned
    summary["healthy"] = len(plan.healthy)
    summary["unhealthy"] = [
        {"instance": t.key, "url": t.url, "task": t.task_ref, "reason": v.detail}
        for t, v in plan.unhealthy]
    summary["failing"] = [
        {"instance": f.target.key, "url": f.target.url, "task": f.target.task_ref,
         "reason": f.verdict.detail, "failures": f.failures}
        for f in plan.failing[:DETAIL_LIMIT]]
    summary["held"] = [
        {"instance": f.target.key, "url": f.target.url, "task": f.target.task_ref,
         "reason": f.verdict.detail, "held": f.held}
        for f in plan.held[:DETAIL_LIMIT]]
    summary["no_verdict"] = [
        *({"instance": s.what, "task": s.task, "reason": s.reason}
          for s in assessment.no_verdict),
        *({"instance": t.key, "task": t.task_ref, "reason": cause}
          for t, cause in plan.no_verdict)][:DETAIL_LIMIT]
    summary["held_back"] = plan.held_back
    summary["deleted"] = outcome.deleted if not summary["dry_run"] else len(plan.deletions)
    summary["deletions"] = [
        {"record": d.record.describe(), "set_identifier": d.record.set_identifier,
         "reason": d.reason} for d in plan.deletions[:DETAIL_LIMIT]]
    summary["deletion_reasons"] = dict(Counter(_reason_kind(d.reason) for d in plan.deletions))
    summary["stopped"] = stopped
    summary["skipped"] = len(assessment.skipped)
    summary["skipped_detail"] = [{"instance": s.what, "reason": s.reason}
                                 for s in assessment.skipped[:DETAIL_LIMIT]]
    summary["out_of_scope"] = assessment.out_of_scope
    summary["unjudged"] = len(plan.unjudged)
    summary["refused"] = plan.refused
    summary["refused_by"] = plan.refused_by
    summary["guard"] = _guard(plan.guard)
    summary["suspect"] = [{"instance": s.what, "reason": s.reason}
                          for s in assessment.suspect[:DETAIL_LIMIT]]
    summary["ecs_healthy"] = [
        {"instance": t.key, "url": t.url, "task": t.task_ref, "reason": v.detail,
         "ecs": t.ecs_healthy}
        for t, v in plan.ecs_healthy[:DETAIL_LIMIT]]
    summary["change_requests"] = outcome.requests
    summary["apply_attempts"] = outcome.attempts
    summary["errors"] = [*assessment.errors, *summary["errors"]]


def _reason_kind(reason: str) -> str:
    if reason.startswith("unhealthy"):
        return "unhealthy"
    if "runs on no live container instance" in reason:
        return "host gone"
    if reason.startswith("task ") or reason.startswith("cluster "):
        return "task gone"
    return "host gone"


def _delta(before: dict[tuple[str, str, str], int],
           after: dict[tuple[str, str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, count in sorted(after.items()):
        service, operation, outcome = key
        if outcome != "attempt":
            continue
        n = count - before.get(key, 0)
        if n:
            out[f"{service}:{operation}"] = n
    return out

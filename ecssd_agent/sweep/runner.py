"""One sweep, wired: read the zone, observe ECS/EC2, assess, probe, decide, act, summarise.

The deciding is :mod:`ecssd_agent.sweep.decide` (pure); this module moves data between the
adapters and it, and is the one place that acts (Route 53 deletes, StopTask), so ``DRY_RUN``
skips exactly the acting. If Route 53 rejects a batch of deletions, the zone is read again
and the deletions recomputed (same observation, same verdicts) and applied once more; a
second rejection is reported, never sent again blindly.
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
STOP_WORKERS = 8  # StopTask calls in flight (botocore's retry mode handles throttling)


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
        probe_outage_fraction=settings.probe_outage_fraction,
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
    summary["aws_requests"] = _delta(before, clients.stats.snapshot())
    summary["duration_s"] = round(time.monotonic() - started, 3)
    return summary


def empty_summary(dry_run: bool) -> dict[str, Any]:
    """Every key of the summary, before anything was found or done."""
    return {
        "clusters": [], "tasks": 0, "records_seen": 0, "owned": 0, "healthy": 0,
        "unhealthy": [], "deleted": 0, "deletions": [], "stopped": [], "skipped": 0,
        "skipped_detail": [], "out_of_scope": 0, "unjudged": 0, "errors": [],
        "refused": "", "refused_by": "", "guard": _guard(sweep.GuardFigures()),
        "suspect": [], "ecs_healthy": [], "change_requests": 0, "dry_run": dry_run,
    }


def _guard(figures: sweep.GuardFigures) -> dict[str, Any]:
    return {"deletable": figures.deletable, "planned": figures.planned,
            "probed": figures.probed, "failed": figures.failed,
            "unreachable": figures.unreachable[:DETAIL_LIMIT]}


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
    verdicts: dict[str, sweep.Verdict] = {}
    if settings.check_health and assessment.targets:
        verdicts = probe.probe_all(
            assessment.targets, timeout=settings.check_timeout,
            attempts=settings.check_retries, concurrency=settings.check_concurrency,
            deadline=deadline)
    timer.lap("check")
    outcome = _delete(zone, scope, records, assessment, verdicts, rules, settings, summary, now)
    if settings.change_queue_url and not settings.dry_run and not outcome.plan.refused:
        writer_hints.send(clients.client("sqs"), settings.change_queue_url, zone.zone.name,
                          [d.record for d in outcome.plan.deletions], summary)
    timer.lap("delete")
    stopped = _stop(ecs, outcome.plan, settings, summary)
    timer.lap("stop")
    _fill(summary, records, outcome, stopped)


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
        if plan.refused:
            _log_refusal(plan)
            return outcome
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
        outcome.deleted = len(changes)
        return outcome
    return outcome


def _log_refusal(plan: sweep.Plan) -> None:
    """One line per refusal, structured so a metric filter or a Logs Insights query can count
    refusals by guard (``metric`` = ``ecssd_sweep_refused``)."""
    log.warning("sweep refused by the %s guard: %s", plan.refused_by, plan.refused,
                extra={"metric": "ecssd_sweep_refused", "guard": plan.refused_by,
                       **_guard(plan.guard)})


def _stop(ecs: Any, plan: sweep.Plan, settings: SweepSettings,
          summary: dict[str, Any]) -> list[str]:
    """StopTask each unhealthy instance's task (the plan has none without STOP_UNHEALTHY),
    a few at a time: after a bad deploy there may be dozens."""
    if plan.refused or not plan.stops:
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
    with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(STOP_WORKERS, len(plan.stops))) as pool:
        for stop, error in zip(plan.stops, pool.map(one, plan.stops), strict=True):
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
        {"instance": t.key, "url": t.url, "task": f"{t.cluster}/{t.task}" if t.task else "",
         "reason": v.detail}
        for t, v in plan.unhealthy]
    summary["deleted"] = outcome.deleted if not summary["dry_run"] else (
        0 if plan.refused else len(plan.deletions))
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
        {"instance": t.key, "url": t.url, "task": f"{t.cluster}/{t.task}" if t.task else "",
         "reason": v.detail, "ecs": t.ecs_healthy}
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

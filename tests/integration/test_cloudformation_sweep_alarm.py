"""The stack's alarm on the health sweep counts the lines the sweep really writes.

The sweep is run for real (moto, loopback HTTP servers, the agent's records) into each of its
outcomes: a run that did its work, one the delete-fraction guard refused, one that held its
verdicts back (every probe failed) and one that failed (a cluster ECS does not know). Every
line of those runs, formatted as the Lambda writes them (JSON lines, the summary a bare JSON
line), goes to moto's CloudWatch Logs, and the template's metric filters are asked which
lines they match: exactly one per run that was not "ok", none of an "ok" run.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest

from ecssd_agent.logs import JsonFormatter
from tests.integration.sweep_world import OK, REFUSE, SweepWorld
from tests.integration.test_cloudformation import load_template, resources_of
from tests.integration.test_health_lambda import fleet, session, sweep, world
from tests.support.moto_server import MotoServer

__all__ = ["fleet", "session", "sweep", "world"]  # fixtures

GROUP = "/aws/lambda/ecssd-test-health-sweep"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The run's log lines as CloudWatch Logs gets them from the Lambda."""
    json_lines, bare = JsonFormatter(), logging.Formatter("%(message)s")
    return [(bare if r.name == "health_lambda.summary" else json_lines).format(r)
            for r in caplog.records]


def _run(sweep: Any, caplog: pytest.LogCaptureFixture, **env: str) -> tuple[str, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        summary = sweep(**env)
    return summary["outcome"], _lines(caplog)


def test_the_template_alarms_on_three_refused_or_failed_runs_in_a_row() -> None:
    template = load_template()
    res = template["Resources"]
    alarm = res["SweepRefusedAlarm"]["Properties"]
    filters = resources_of(template, "AWS::Logs::MetricFilter")
    assert set(filters) == {"SweepRefusedFilter", "SweepFailedFilter"}
    for props in (f["Properties"] for f in filters.values()):
        assert props["LogGroupName"] == {"Ref": "SweepLogGroup"}
        (metric,) = props["MetricTransformations"]
        assert (metric["MetricNamespace"], metric["MetricName"]) == (
            alarm["Namespace"], alarm["MetricName"])
        assert metric["MetricValue"] == "1"
    # "Several runs in a row": every run of the period, at one run per 5 minutes.
    rate = re.fullmatch(r"rate\((\d+) minutes\)",
                        res["SweepSchedule"]["Properties"]["ScheduleExpression"])
    assert rate is not None
    assert alarm["Period"] // (int(rate.group(1)) * 60) == alarm["Threshold"] == 3
    assert (alarm["Statistic"], alarm["EvaluationPeriods"]) == ("Sum", 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    # Beside the task-events alarm, notifying the same topic.
    assert alarm["AlarmActions"] == res["TaskEventsFailureAlarm"]["Properties"]["AlarmActions"]


def test_the_metric_filters_match_the_lines_of_the_runs_that_were_not_ok(
        aws: MotoServer, world: SweepWorld, sweep: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    small, big, broken = world.host("c1"), world.host("c1"), world.host("c2")
    world.task(small, OK)
    for _ in range(4):
        world.task(big, OK)
    for _ in range(2):
        world.task(broken, REFUSE)
    world.sync()

    runs = [_run(sweep, caplog, ECS_CLUSTERS="c1")]  # everything fine
    world.kill_host(big)
    runs.append(_run(sweep, caplog, ECS_CLUSTERS="c1"))  # 5 of 7 would go: refused
    runs.append(_run(sweep, caplog, ECS_CLUSTERS="c2"))  # every probe fails: held
    runs.append(_run(sweep, caplog, ECS_CLUSTERS="c2,nope"))  # ECS knows no "nope": failed
    assert [outcome for outcome, _ in runs] == ["ok", "refused", "held", "failed"]

    logs = aws.client("logs")
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="sweep")
    events = [(n, line) for n, (_, lines) in enumerate(runs) for line in lines]
    now_ms = int(time.time() * 1000)  # CloudWatch Logs refuses events older than 14 days
    put = logs.put_log_events(logGroupName=GROUP, logStreamName="sweep", logEvents=[
        {"timestamp": now_ms + i, "message": line} for i, (_, line) in enumerate(events)])
    assert "rejectedLogEventsInfo" not in put
    run_of = {line: n for n, line in events}

    matched: dict[int, list[str]] = {}
    for props in (f["Properties"] for f in resources_of(
            load_template(), "AWS::Logs::MetricFilter").values()):
        found = logs.filter_log_events(logGroupName=GROUP,
                                       filterPattern=props["FilterPattern"])["events"]
        for event in found:
            matched.setdefault(run_of[event["message"]], []).append(event["message"])
    # One counted line per run that was not "ok", in the run it came from; none of the ok run.
    assert sorted(matched) == [1, 2, 3]
    assert all(len(lines) == 1 for lines in matched.values()), matched
    outcomes: dict[int, Any] = {n: runs[n][0] for n in matched}
    for n, (line,) in matched.items():
        assert f'"outcome": "{outcomes[n]}"' in line

"""Lambda entry point of the health sweep: ``health_lambda.handler.lambda_handler``.

Thin: the runtime (settings, clients, the task-definition cache) is built on the first
invocation (:mod:`health_lambda.runtime`), then :func:`ecssd_agent.sweep.runner.run` sweeps.
The event carries nothing the sweep uses, so any event runs the same sweep; the context is
only asked for the remaining time. A bad setting changes nothing and is reported in the
summary, which is returned and logged as one JSON line (logger ``health_lambda.summary``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.ecs import TaskDefinitions
from ecssd_agent.config_fields import SettingsError
from ecssd_agent.sweep import runner
from ecssd_agent.sweep.settings import SweepSettings
from health_lambda import runtime as lambda_runtime

log = logging.getLogger("health_lambda")
summary_log = logging.getLogger("health_lambda.summary")

#: Seconds of the Lambda's remaining time kept for deleting, stopping and reporting.
FINISH_MARGIN = 10.0


@dataclass
class SweepRuntime:
    settings: SweepSettings
    clients: Clients
    definitions: TaskDefinitions = field(default_factory=TaskDefinitions)


def build(settings: SweepSettings | None = None, clients: Clients | None = None) -> SweepRuntime:
    """The sweep's runtime: settings from the environment, clients for them (Route 53 as
    ``ASSUME_ROLE_ARN`` when set). Raises SettingsError naming a bad variable."""
    settings = settings or SweepSettings.from_env(os.environ)
    if lambda_runtime.in_lambda():
        lambda_runtime.setup_logging(settings.log_level.lower())
        bare = logging.StreamHandler(sys.stderr)  # the summary as a bare JSON line
        bare.setFormatter(logging.Formatter("%(message)s"))
        summary_log.handlers[:] = [bare]
        summary_log.propagate = False
    return SweepRuntime(settings, clients or Clients(region=lambda_runtime.region(),
                                                     zone_role=settings.zone_role()))


runtime: lambda_runtime.Lazy[SweepRuntime] = lambda_runtime.Lazy(build)


def _deadline(context: Any) -> float | None:
    seconds = lambda_runtime.remaining_seconds(context)
    return None if seconds is None else time.monotonic() + max(0.0, seconds - FINISH_MARGIN)


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    if event is not None and not isinstance(event, dict):
        log.warning("ignoring an event of type %s: the sweep needs no input",
                    type(event).__name__)
    try:
        rt = runtime.get()
    except SettingsError as exc:
        log.error("bad configuration: %s", exc)
        summary = runner.empty_summary(dry_run=True)  # nothing was (or could be) changed
        summary["errors"].append(f"configuration: {exc}")
        runner.log_outcome(summary)
    else:
        summary = runner.run(rt.settings, rt.clients, rt.definitions, deadline=_deadline(context))
    summary_log.info(json.dumps(summary, sort_keys=True, default=str))
    return summary

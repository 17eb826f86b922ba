"""Lambda entry point of the health sweep: ``health_lambda.handler.lambda_handler``.

Thin: settings from the environment, clients from a cached factory, then
:func:`health_lambda.runner.run`. Nothing is created at import time (the reference made its
clients and even called Route 53 while being imported). The event is not needed (a
schedule's event carries nothing the sweep uses), so any event, malformed or not, runs the
same sweep; the context is only asked for the remaining time, if it can tell.

The summary is returned and logged as one JSON line (logger ``health_lambda.summary``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ecssd_agent import logs
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.ecs import TaskDefinitions
from ecssd_agent.config_fields import SettingsError
from health_lambda import runner
from health_lambda.config import SweepSettings

log = logging.getLogger("health_lambda")
summary_log = logging.getLogger("health_lambda.summary")

#: Seconds of the Lambda's remaining time kept for deleting, stopping and reporting.
FINISH_MARGIN = 10.0

_lock = threading.Lock()
_clients: Clients | None = None
_definitions = TaskDefinitions()  # task definition revisions never change: keep them warm
_logging_ready = False

ClientsFactory = Callable[[], Clients]


def _default_clients() -> Clients:
    return Clients(region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))


clients_factory: ClientsFactory = _default_clients


def clients() -> Clients:
    """The process's clients, created on first use (tests replace ``clients_factory`` or call
    :func:`reset`)."""
    global _clients
    with _lock:
        if _clients is None:
            _clients = clients_factory()
        return _clients


def reset(factory: ClientsFactory | None = None) -> None:
    """Forget the cached clients and task definitions (and optionally install a factory)."""
    global _clients, _definitions, clients_factory
    with _lock:
        _clients = None
        _definitions = TaskDefinitions()
        clients_factory = factory or _default_clients


def _setup_logging() -> None:
    """In Lambda: JSON log lines, and the summary as a bare JSON line. Elsewhere: untouched."""
    global _logging_ready
    if _logging_ready or not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return
    logs.setup("json", os.environ.get("LOG_LEVEL", "info").lower())
    bare = logging.StreamHandler(sys.stderr)
    bare.setFormatter(logging.Formatter("%(message)s"))
    summary_log.handlers[:] = [bare]
    summary_log.propagate = False
    _logging_ready = True


def _deadline(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        millis = float(remaining())
    except (TypeError, ValueError):
        return None
    return time.monotonic() + max(0.0, millis / 1000.0 - FINISH_MARGIN)


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    _setup_logging()
    if event is not None and not isinstance(event, dict):
        log.warning("ignoring an event of type %s: the sweep needs no input",
                    type(event).__name__)
    try:
        settings = SweepSettings.from_env(os.environ)
    except SettingsError as exc:
        log.error("bad configuration: %s", exc)
        summary = runner.empty_summary(dry_run=True)  # nothing was (or could be) changed
        summary["errors"].append(f"configuration: {exc}")
    else:
        summary = runner.run(settings, clients(), _definitions, deadline=_deadline(context))
    summary_log.info(json.dumps(summary, sort_keys=True, default=str))
    return summary

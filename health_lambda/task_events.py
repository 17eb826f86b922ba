"""Lambda entry point of the task events: ``health_lambda.task_events.lambda_handler``.

Targets of EventBridge rules: "ECS Task State Change" events (``source: aws.ecs``), each
handled by :class:`ecssd_agent.events.handle.TaskEvents`, and schedules, whose invocations
reconcile the running tasks' records (:mod:`ecssd_agent.events.reconcile`: all of them, or
with ``{"reconcile": "health"}`` as the event's detail, the health follow-up). The runtime
(settings, clients, the zone, the task-definition cache) is built on the first invocation
(:mod:`health_lambda.runtime`); a configuration error raises.
"""

from __future__ import annotations

import os
from typing import Any

from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.request_budget import TokenBucket
from ecssd_agent.events import reconcile, settings
from ecssd_agent.events.handle import TaskEvents, TaskEventsRuntime, is_schedule
from ecssd_agent.events.settings import TaskEventSettings
from health_lambda import runtime as lambda_runtime


def build(config: TaskEventSettings | None = None, clients: Clients | None = None
          ) -> TaskEventsRuntime:
    """Settings from the environment (raises SettingsError naming a bad variable) and
    clients for them (Route 53 as ``ASSUME_ROLE_ARN`` when set, within ``ROUTE53_RATE``)."""
    config = config or settings.load(os.environ)
    lambda_runtime.setup_logging(config.log_level)
    budget = TokenBucket(config.route53_rate, config.route53_burst)
    return TaskEventsRuntime(config, clients or Clients(
        region=lambda_runtime.region(), zone_role=config.zone_role(),
        budgets={"route53": budget}))


runtime: lambda_runtime.Lazy[TaskEventsRuntime] = lambda_runtime.Lazy(build)


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """One ECS Task State Change event, or (invoked by a schedule) a reconcile of the running
    tasks' records; returns a summary."""
    events = TaskEvents(runtime.get())
    if is_schedule(event):
        return reconcile.run(events, reconcile.scope_of(event))
    return events.handle(event)

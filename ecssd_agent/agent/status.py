"""The daemon's health and metrics: ``/healthz``, ``/readyz`` and ``/metrics`` on ``--status-port``.

``/healthz`` is liveness (:mod:`ecssd_agent.agent.liveness`): it fails only when the agent's
loop is stuck or the Docker event stream has been lost for long, which a new agent process
would cure; it is what the container health check asks. ``/readyz`` answers "is this host's
registration trustworthy right now?": only when the Docker event stream is connected and the
last reconcile succeeded (Route 53 throttling or an outage makes it 503, and nothing should
replace the agent for that). Metrics answer the budget question the design revolves around:
how many Route 53 requests the agent makes, by operation and outcome, straight from the
request counter every AWS client shares, and why reconciles failed.

A dedicated CollectorRegistry keeps the process-wide default registry (and whatever other
libraries put in it) out of the output, and lets tests build several instances.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ecssd_agent.agent.liveness import Bounds, Liveness
from ecssd_agent.aws.clients import RequestStats
from ecssd_agent.http_serving import DEFAULT_LIMITS, LimitedHandler, LimitedHTTPServer, Limits

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AwsRequestsCollector(Collector):
    """``ecssd_aws_requests_total{service,operation,outcome}`` read from RequestStats at scrape.

    outcome "attempt" counts every HTTP request sent (botocore retries included); "ok" and
    "error" count calls as the agent saw them after botocore's retries.
    """

    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "ecssd_aws_requests", "AWS API requests by service, operation and outcome",
            labels=["service", "operation", "outcome"])
        for (service, operation, outcome), n in sorted(self.stats.snapshot().items()):
            family.add_metric([service, operation, outcome], n)
        yield family


class Status:
    """Metrics and health of one daemon; thread-safe (prometheus_client metrics are)."""

    def __init__(self, stats: RequestStats | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 bounds: Bounds | None = None) -> None:
        self.liveness = Liveness(clock, bounds)
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_owned = Gauge("ecssd_records_owned",
                                   "Record sets this host owns in the zone (as last known)",
                                   registry=r)
        self.changes = Counter("ecssd_changes_applied", "Record set changes applied, by action",
                               ["action"], registry=r)
        self.reconciles = Counter("ecssd_reconciles", "Reconciles by kind and outcome",
                                  ["kind", "outcome"], registry=r)
        self.reconcile_errors = Counter(
            "ecssd_reconcile_errors", "Failed reconciles by reason: the AWS error code "
            "(Throttling, ...), else the exception's class (EndpointConnectionError, "
            "DockerUnavailable, ...)", ["reason"], registry=r)
        self.reconcile_duration = Histogram(
            "ecssd_reconcile_duration_seconds", "Time to observe, plan and apply one reconcile",
            ["kind"], buckets=_DURATION_BUCKETS, registry=r)
        self.event_latency = Histogram(
            "ecssd_event_to_applied_seconds",
            "From a Docker event to the zone holding its outcome", buckets=_LATENCY_BUCKETS,
            registry=r)
        self.last_success = Gauge("ecssd_last_successful_reconcile_timestamp_seconds",
                                  "Unix time of the last successful reconcile", registry=r)
        self.docker_connected = Gauge("ecssd_docker_connected",
                                      "1 while the Docker event stream is connected", registry=r)
        self.containers_withheld = Gauge(
            "ecssd_containers_withheld",
            "Running containers with a health check that Docker does not report healthy "
            "(starting or unhealthy): not published", registry=r)
        self.instance_draining = Gauge("ecssd_instance_draining",
                                       "1 while this host's ECS container instance is DRAINING "
                                       "(its service records withdrawn)", registry=r)
        self.task_events = Counter("ecssd_task_events", "EventBridge task events by outcome",
                                   ["outcome"], registry=r)
        if stats is not None:
            self.count_requests(stats)
        self._lock = threading.Lock()
        self._docker_reason = "not connected to the Docker event stream yet"
        self._reconcile_error: str | None = "no reconcile has completed yet"

    def count_requests(self, stats: RequestStats) -> None:
        """Export ``stats`` (the AWS clients' request counts) from now on."""
        self.registry.register(AwsRequestsCollector(stats))

    # --- updates from the daemon ---------------------------------------------------------

    def docker_up(self) -> None:
        with self._lock:
            self._docker_reason = ""
        self.liveness.docker_up()
        self.docker_connected.set(1)

    def docker_down(self, reason: str) -> None:
        with self._lock:
            self._docker_reason = reason or "disconnected"
        self.liveness.docker_down(reason or "disconnected")
        self.docker_connected.set(0)

    def starting(self, reason: str) -> None:
        """Start-up is not done yet (the agent is being built, retrying AWS): not ready."""
        with self._lock:
            self._reconcile_error = f"starting: {reason}"

    def reconciled(self, kind: str, seconds: float, owned: int) -> None:
        with self._lock:
            self._reconcile_error = None
        self.reconciles.labels(kind, "ok").inc()
        self.reconcile_duration.labels(kind).observe(seconds)
        self.records_owned.set(owned)
        self.last_success.set(time.time())

    def reconcile_failed(self, kind: str, seconds: float, error: str, reason: str) -> None:
        with self._lock:
            self._reconcile_error = error
        self.reconciles.labels(kind, "error").inc()
        self.reconcile_errors.labels(reason).inc()
        self.reconcile_duration.labels(kind).observe(seconds)

    def draining(self, draining: bool) -> None:
        self.instance_draining.set(1 if draining else 0)

    def task_event_result(self, outcome: str, n: int) -> None:
        if n:
            self.task_events.labels(outcome).inc(n)

    # --- reads ---------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """(ready, reason): the body of /readyz. Ready while the Docker event stream is
        connected and the last reconcile succeeded."""
        with self._lock:
            if self._docker_reason:
                return False, f"docker: {self._docker_reason}"
            if self._reconcile_error:
                return False, f"reconcile: {self._reconcile_error}"
        return True, "ok"

    def health(self) -> tuple[bool, str]:
        """(alive, reason): the body of /healthz. Alive unless the loop is stuck or Docker has
        been unreachable beyond its bound (:class:`~ecssd_agent.agent.liveness.Liveness`);
        the reason of a live agent that is not ready follows "ok" for the operator."""
        alive, reason = self.liveness.check()
        if not alive:
            return False, reason
        ready, why = self.ready()
        return True, "ok" if ready else f"ok (alive; not ready: {why})"

    def metrics(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(LimitedHandler):
    status: Status  # set on the subclass made by StatusServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/readyz"):
            good, reason = self.status.health() if path == "/healthz" else self.status.ready()
            self._reply(200 if good else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/metrics":
            self._reply(200, self.status.metrics(), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain; charset=utf-8")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status: " + format, *args)


class StatusServer:
    """Serves a Status over HTTP in a background thread: a thread per connection, within
    the connection caps and deadlines of :mod:`ecssd_agent.http_serving`."""

    def __init__(self, status: Status, address: str, port: int,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        handler = type("StatusHandler", (_Handler,), {"status": status})
        self._server = LimitedHTTPServer((address, port), handler, limits.within_fds())
        self._thread = threading.Thread(target=self._server.serve_forever, name="status",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("status on http://%s:%d/healthz, /readyz and /metrics",
                 self._server.server_address[0], self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""The agent daemon: Docker events in, one coalesced change request out, resyncs for the rest.

Event-driven for speed, level-triggered for truth. An event only marks its container
"dirty"; after a short coalescing window the daemon asks the engine for the current state of
every dirty container, updates its view of the host, computes the desired records of the
WHOLE host and converges them against the zone in one ChangeResourceRecordSets. A lost,
duplicated or reordered event can therefore never leave a wrong record: the next look at
the container (an event, a reconnect, the periodic resync) repairs it.

Route 53 is the scarce resource, shared by every host of the account (the fleet
simulation, benchmarks/bench_fleet.py, showed a full listing per host per resync throttles
the account at ~100 hosts). So the zone is listed in full only when this host knows nothing
of what it owns (startup, where it also finds records of names it no longer publishes, and
--deregister-on-exit without a known state). Every other read is name-scoped
(ecssd_agent/sync/zone_reads.py: only the names this host publishes or owns records under), and
the periodic resync reads only when the fleet-wide read budget allows
(``zone_reads.ReadSchedule``) and not while Route 53 throttled this host in the last minute;
otherwise it plans against what this host knows it owns (updated from every applied change),
as events do. A batch Route 53 rejects is re-planned on a name-scoped read. An event costs
exactly one change request and no listing. That known state and those reads live in the
direct mode's sink (``ecssd_agent.agent.sink.DirectSink``); the loop only says when a read is
wanted.

In queued mode (``--host-table`` and ``--change-queue``) the same loop ends in another sink
(``QueuedSink``): the desired state of the whole host is published for the zone writer
instead of converged, and the agent makes no Route 53 request at all. Events publish only
when the desired state changed; resyncs, retries and startup always publish (a hint lost on
the way is so re-sent). The loop never asks which sink it has.

Two more inputs decide what is published. The health gate: a container with a Docker
HEALTHCHECK is published only while Docker reports it healthy; ``health_status`` events
wake the loop like any other (an ``unhealthy`` one as quickly as a stop), and relists see
the same health, so a resync never publishes a container that is still "starting". The
drain watch (``ecssd_agent.agent.drain``): while ECS drains this host's container instance, the
host publishes its A record only, so clients leave before ECS stops the tasks.

Errors never end the process: an engine that cannot be reached keeps every container's
previous state (unknown is not gone), an AWS error keeps the desired state and retries with
backoff; none of them fails ``/healthz`` (``ecssd_agent.agent.liveness``). Only SIGTERM/SIGINT
end it, after the change in flight (and, with ``--deregister-on-exit`` on a host that is
leaving, ``ecssd_agent.agent.departure``, after this host's records are deleted).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent.agent.departure import Departure, DepartureCheck
from ecssd_agent.agent.docker_events import ContainerEvent, EventSource, EventStream
from ecssd_agent.agent.docker_source import DockerUnavailable
from ecssd_agent.agent.drain import DrainWatch
from ecssd_agent.agent.drain_scope import DrainScope
from ecssd_agent.agent.ecs_introspection import EcsIntrospection, IntrospectionUnavailable
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.status import Status, StatusServer
from ecssd_agent.aws.eventbridge import TaskEventSender
from ecssd_agent.aws.imds import Imds
from ecssd_agent.aws.route53 import Meaning, error_meaning
from ecssd_agent.core.coalescer import Coalescer
from ecssd_agent.core.model import Container
from ecssd_agent.sync.reconcile import NotConverged

if TYPE_CHECKING:
    from ecssd_agent.agent.settings import Settings
    from ecssd_agent.aws.clients import Clients

log = logging.getLogger(__name__)

RETRY_MIN = 0.5
RETRY_MAX = 30.0
RESYNC_JITTER = 0.1
#: How long a container that got SIGTERM/SIGKILL (or ``stop``) stays deregistered while it
#: still runs; after that, a container that ignored the signal is registered again.
ENDING_GRACE = 180.0
#: Shutdown: how long to wait for the change in flight and the deregistration.
SHUTDOWN_GRACE = 8.0
#: Start-up waits this long at most for the drain watch's first check, so that an agent
#: restarted on a DRAINING host does not publish the records the drain withdrew.
DRAIN_FIRST_WAIT = 3.0
#: After Route 53 answers Throttling (the ACCOUNT is over its budget), for this long the
#: budgeted resync reads wait and batches of events gather for at least PRESSURE_WINDOW, so
#: this host's next change requests carry more and come less often.
PRESSURE_SECONDS = 60.0
PRESSURE_WINDOW = 10.0
#: After a definite answer the retry waits random x min(2^k, THROTTLED_RETRY_MAX) seconds (k:
#: definite failures in a row), like botocore's backoff but re-planned each time, so the next
#: request carries everything that became pending meanwhile. The fleet simulation
#: (benchmarks/fleet) measured this against botocore's own retries of the same batch (waits up
#: to 20 s): a 20% deployment over 500 hosts converges well within 2 minutes only this way.
THROTTLED_RETRY_MAX = 8.0


@dataclass
class Work:
    """What one reconcile has to do, taken from the shared state under the lock."""

    kind: str  # "startup" | "relist" | "resync" | "event" | "retry" | "drain"
    dirty: dict[str, float] = field(default_factory=dict)  # container id -> first event time
    ending: dict[str, float] = field(default_factory=dict)  # deregistered early: id -> since
    relist: bool = False  # list every container (startup, reconnect, resync)
    read_zone: bool = False  # read the zone (name-scoped) instead of planning on the known state
    unknown: set[str] = field(default_factory=set)  # could not be inspected: state kept
    draining: bool = False  # the container instance is DRAINING: publish the A record only


class Daemon:
    """Keeps this host's records converged with its containers until :meth:`stop`."""

    def __init__(
        self,
        agent: Agent,
        *,
        coalesce: float = 0.25,
        resync: float = 300.0,
        deregister_on_exit: bool = False,
        docker_url: str | None = None,
        status: Status | None = None,
        task_events: TaskEventSender | None = None,
        drain: DrainWatch | None = None,
        departure: Callable[[], Departure] | None = None,
        drain_scope: DrainScope | None = None,
        stream_factory: Callable[..., EventSource] = EventStream,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.agent = agent
        self.sink = agent.sink
        self.resync = resync
        self.deregister_on_exit = deregister_on_exit
        #: with deregister_on_exit: is the host leaving? (None: the caller says it always is)
        self.departure = departure
        self.status = status or Status()
        self.task_events = task_events
        self.drain = drain
        #: which containers a drain withdraws (None: all of them)
        self.drain_scope = drain_scope
        if drain is not None:
            drain.on_status = self._on_drain_status
        self._clock = clock
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._coalescer = Coalescer(coalesce)
        self._stream = stream_factory(docker_url, self._on_event, self._on_connect,
                                      self._on_disconnect)
        # shared with the stream thread (under _cond)
        self._dirty: dict[str, float] = {}
        self._ending: dict[str, float] = {}
        self._relist = False
        self._connected = False
        self._stopping = False
        self._draining = False  # as the drain watch last said (unknown keeps the last answer)
        self._drain_changed = False
        # the loop thread's own
        self._view: dict[str, Container] = {}
        self._view_known = False
        self._pressure_until = float("-inf")
        self._retry_at: float | None = None
        self._retry_delay = RETRY_MIN
        self._definite_failures = 0
        self._retry_work: Work | None = None
        self._next_resync = clock() + self._resync_interval()
        self._deregistered: bool | None = None
        self._worker: threading.Thread | None = None
        self.sink.attach(resync=resync, clock=clock, rng=self._rng)
        self.sink.watch_throttling(lambda: self._throttled(self._clock()))
        self.reconciles = 0  # completed successfully (tests and benchmarks read it)

    # --- inputs, from the stream thread --------------------------------------------------

    def _on_event(self, event: ContainerEvent) -> None:
        now = self._clock()
        with self._cond:
            self._dirty.setdefault(event.container_id, now)
            if event.ends_container:
                self._ending.setdefault(event.container_id, now)
            elif event.starts_container:
                self._ending.pop(event.container_id, None)
            self._coalescer.add(now, removal=event.ends_container or event.action == "die"
                                or event.turns_unhealthy)
            if now < self._pressure_until:  # Route 53 pushes back: gather longer
                self._coalescer.window = max(self._coalescer.window, PRESSURE_WINDOW)
                self._coalescer.cap = max(self._coalescer.cap, PRESSURE_WINDOW)
            self._cond.notify()
        log.debug("event %s %s", event.action, event.container_id[:12],
                  extra={"container_id": event.container_id[:12], "action": event.action})
        if self.task_events is not None:
            self.task_events.notify(event.action, event.container_id, event.attributes,
                                    event.time_ns)

    def _on_connect(self) -> None:
        with self._cond:
            self._connected = True
            self._relist = True  # events may have been missed: look at every container
            # A stop seen before the gap may have been followed by a start we did not see
            # (an engine restart brings --restart containers back): forget the early
            # deregistrations; kills replayed by the engine set them again.
            self._ending.clear()
            if self._retry_at is not None:  # the engine is back: do not wait out the backoff
                self._retry_at = self._clock()
            self._cond.notify()
        self.status.docker_up()

    def _on_drain_status(self, draining: bool) -> None:
        """The drain watch's answer (only definite ones reach here)."""
        with self._cond:
            if draining == self._draining:
                return
            self._draining = draining
            self._drain_changed = True
            self._cond.notify()
        self.status.draining(draining)
        if draining:
            log.warning("this host's container instance is DRAINING (or being deregistered): "
                        "withdrawing its service records (the host's A record stays)",
                        extra={"draining": True})
        else:
            log.info("this host's container instance is ACTIVE again: publishing its "
                     "service records again", extra={"draining": False})

    def _on_disconnect(self, reason: str) -> None:
        with self._cond:
            self._connected = False
        self.status.docker_down(reason)

    # --- control -------------------------------------------------------------------------

    def start(self) -> None:
        """Start following events and reconciling (in background threads)."""
        self.status.docker_down("connecting to the Docker event stream")
        if self.task_events is not None:
            self.task_events.start()
        if self.drain is not None:
            self.drain.start()
            if not self.drain.first_check.wait(DRAIN_FIRST_WAIT):
                log.warning("no answer about this host's container instance status within "
                            "%.0fs; starting without it", DRAIN_FIRST_WAIT)
        self._worker = threading.Thread(target=self._run_loop, name="reconcile", daemon=True)
        self._worker.start()
        self._stream.start()

    def stop(self) -> None:
        """Ask the loop to finish; safe from any thread (not from a signal handler)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def wait(self, grace: float = SHUTDOWN_GRACE) -> bool:
        """After :meth:`stop`: wait for the change in flight (and the deregistration).

        Returns False when something was left undone: the grace period passed, or the
        deregistration asked for failed.
        """
        self._stream.stop(timeout=1.0)
        if self.drain is not None:
            self.drain.stop(timeout=1.0)
        done = True
        if self._worker is not None:
            self._worker.join(grace)
            if self._worker.is_alive():
                log.error("shutdown: a change was still in flight after %.0fs; exiting anyway",
                          grace)
                done = False
        if self.task_events is not None:
            self.task_events.stop(timeout=2.0)
        return done and self._deregistered is not False

    @property
    def stopping(self) -> bool:
        with self._cond:
            return self._stopping

    @property
    def alive(self) -> bool:
        """False when the reconcile loop ended without being asked to (a bug): exit and restart."""
        return self._worker is not None and (self._worker.is_alive() or self.stopping)

    # --- the loop ------------------------------------------------------------------------

    def _run_loop(self) -> None:
        while True:
            work = self._next_work()
            if work is None:
                break
            self._reconcile(work)
        if self.deregister_on_exit and self._leaving():
            self._deregister()

    def _leaving(self) -> bool:
        """--deregister-on-exit applies only to a host that is going away; say which case."""
        if self.departure is None:
            return True
        departure = self.departure()
        if departure.leaving:
            log.warning("this host is leaving (%s): deregistering its records",
                        departure.reason, extra={"exit": "host leaving"})
        else:
            self._deregistered = True  # nothing was asked of it: not a failure
            log.info("this host stays (%s): its records stay for the next agent on it "
                     "(--deregister-on-exit deletes them only when the host is leaving)",
                     departure.reason, extra={"exit": "host stays"})
        return departure.leaving

    def _next_work(self, block: bool = True) -> Work | None:
        """Wait until there is something to do (or stop); take it from the shared state."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                now = self._clock()
                due = self._due(now)
                if due <= now:
                    return self._take(now)
                if not block:
                    return None
                self.status.liveness.waiting(due)
                self._cond.wait(due - now)

    def poll(self) -> Work | None:
        """Do the work that is due now, if any, in the calling thread (tests drive it so)."""
        work = self._next_work(block=False)
        if work is not None:
            self._reconcile(work)
        return work

    def _due(self, now: float) -> float:
        if self._retry_at is not None:
            return self._retry_at  # after a failure, nothing runs before the backoff ends
        candidates = [self._next_resync]
        if self._relist and self._connected:
            candidates.append(now)
        batch = self._coalescer.due()
        if batch is not None and self._dirty:
            candidates.append(batch)
        if self._ending:
            candidates.append(min(self._ending.values()) + ENDING_GRACE)
        if self._drain_changed and self._view_known:  # else the startup relist takes it
            candidates.append(now)
        return min(candidates)

    def _take(self, now: float) -> Work:
        work = self._retry_work or Work(kind="event")
        self._retry_work, self._retry_at = None, None
        for container_id, since in list(self._ending.items()):
            if now - since >= ENDING_GRACE:
                log.warning("container %s still runs %.0fs after it was told to stop: "
                            "registering it again", container_id[:12], now - since,
                            extra={"container_id": container_id[:12]})
                del self._ending[container_id]
                self._dirty.setdefault(container_id, now)
        if now >= self._next_resync:
            work.kind, work.relist = "resync", True
            # read only when the fleet's read budget allows and Route 53 is not pushing back
            work.read_zone = work.read_zone or (self.sink.read_due(now)
                                                and now >= self._pressure_until)
            self._next_resync = now + self._resync_interval()
        if self._relist and self._connected:
            work.relist = True
            if work.kind == "event":
                work.kind = "startup" if not self._view_known else "relist"
            self._relist = False
        if self._drain_changed:
            self._drain_changed = False
            if work.kind == "event":
                work.kind = "drain"
        work.draining = self._draining
        for container_id, since in self._dirty.items():
            work.dirty[container_id] = min(since, work.dirty.get(container_id, since))
        self._dirty.clear()
        work.ending = dict(self._ending)
        self._coalescer.close()
        return work

    def _resync_interval(self) -> float:
        return self.resync * self._rng.uniform(1 - RESYNC_JITTER, 1 + RESYNC_JITTER)

    # --- one reconcile -------------------------------------------------------------------

    def _reconcile(self, work: Work) -> None:
        started = self._clock()
        self.status.liveness.busy(started)
        try:
            self._attempt(work, started)
        finally:
            self.status.liveness.idle()

    def _attempt(self, work: Work, started: float) -> None:
        try:
            self._observe(work)
            if not self._view_known:
                raise DockerUnavailable("no complete list of the containers yet")
            # draining: the records of what ECS will not stop, and the host's A record (clients
            # holding an SRV answer of a withdrawn task still reach it)
            desired = self.agent.desired(self._kept_while_draining() if work.draining
                                         else self._view.values())
            if not work.draining:
                self.status.containers_withheld.set(self.agent.withheld)
            delivery = self.sink.reconcile(desired, self.agent.owns, full=work.kind != "event",
                                           read_zone=work.read_zone, dry_run=self.agent.dry_run)
            if work.unknown:
                raise DockerUnavailable(f"cannot inspect {len(work.unknown)} container(s); "
                                        "kept their previous state")
        except (DockerUnavailable, NotConverged, ClientError, BotoCoreError) as exc:
            self._failed(work, exc, started)
            return
        finished = self._clock()
        self.reconciles += 1
        if delivery.requests:
            with self._cond:
                self._coalescer.requested(finished)
        self._retry_delay = RETRY_MIN
        self._definite_failures = 0
        self.status.reconciled(work.kind, finished - started, self.sink.owned)
        for since in work.dirty.values():
            self.status.event_latency.observe(max(finished - since, 0.0))
        if not self.agent.dry_run:
            for change in delivery.changes:
                self.status.changes.labels(change.action.value).inc()
        level = logging.INFO if delivery.notable or work.kind != "event" else logging.DEBUG
        log.log(level, "reconciled (%s): %s; %d container(s) looked at, %d running", work.kind,
                delivery.summary, len(work.dirty), len(self._view),
                extra={"reconcile": work.kind, **delivery.extra,
                       "seconds": round(finished - started, 3)})

    def _kept_while_draining(self) -> list[Container]:
        if self.drain_scope is None:
            return []
        return self.drain_scope.kept(self._view.values())

    def _observe(self, work: Work) -> None:
        """Update the view from the engine; containers it cannot tell about go to work.unknown."""
        if work.relist:
            listed = self.agent.docker.containers()  # DockerUnavailable: nothing learned
            self._view = {c.id: c for c in listed if c.id not in work.ending}
            self._view_known = True
            running = {c.id for c in listed}
            self._forget_ending({k: v for k, v in work.ending.items() if k not in running})
            return
        gone: dict[str, float] = {}
        for container_id in work.dirty:
            ending = container_id in work.ending
            if ending:
                self._view.pop(container_id, None)  # deregister early, whatever inspect says
            try:
                container = self.agent.docker.inspect(container_id)
            except DockerUnavailable:
                if not ending:
                    work.unknown.add(container_id)  # keep its previous state
                continue
            if container is None or not container.running:
                self._view.pop(container_id, None)
                if ending:
                    gone[container_id] = work.ending[container_id]
            elif not ending:
                self._view[container_id] = container
        self._forget_ending(gone)

    def _forget_ending(self, marks: dict[str, float]) -> None:
        """Containers that stopped or vanished no longer need their early-deregistration mark
        (unless a newer kill set it again meanwhile)."""
        with self._cond:
            for container_id, since in marks.items():
                if self._ending.get(container_id) == since:
                    del self._ending[container_id]

    def _failed(self, work: Work, exc: Exception, started: float) -> None:
        now = self._clock()
        # Definite answers (throttled, busy): the batch was NOT applied, so the known state
        # stays true. Anything else may hide a change that happened: re-read before planning.
        meaning = error_meaning(exc)
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        definite = meaning.definite
        if meaning.kind is Meaning.THROTTLED:
            self._throttled(now)
        if not definite and not isinstance(exc, DockerUnavailable):
            self.sink.doubt()  # a write may have half-happened: read the zone next time
        if definite:
            delay = self._rng.uniform(0, min(2.0 ** self._definite_failures, THROTTLED_RETRY_MAX))
            self._definite_failures += 1
        else:
            delay = self._retry_delay
            self._retry_delay = min(delay * 2, RETRY_MAX)
        # after a definite answer the known state holds: the retry plans on it (a read that
        # was due waits for a later resync; writes go first)
        retry = Work(kind="retry", dirty=dict(work.dirty), relist=work.relist,
                     read_zone=work.read_zone and not definite)
        if work.unknown and not work.relist:
            retry.dirty = {k: v for k, v in work.dirty.items() if k in work.unknown}
        with self._cond:
            self._retry_work = retry
            self._retry_at = now + delay
        self.status.reconcile_failed(work.kind, now - started, str(exc),
                                     code or type(exc).__name__)
        log.error("reconcile (%s) failed, retrying in %.1fs: %s", work.kind, delay, exc,
                  extra={"reconcile": work.kind, "retry_in": delay})

    def _throttled(self, now: float) -> None:
        """Route 53 answered Throttling: the account is over its budget. For a minute, gather
        events longer (fewer, fuller change requests) and let budgeted reads wait."""
        with self._cond:
            first = self._pressure_until == float("-inf")
            self._pressure_until = now + PRESSURE_SECONDS
            if self._coalescer.first is not None:  # a batch already open gathers longer too
                self._coalescer.window = max(self._coalescer.window, PRESSURE_WINDOW)
                self._coalescer.cap = max(self._coalescer.cap, PRESSURE_WINDOW)
        if first:
            log.warning("Route 53 throttles this account: every host's requests share its "
                        "budget. Changes still land (retried); a fleet of more than a few "
                        "hundred hosts should use the queued mode (--host-table and "
                        "--change-queue, see the README)")

    def _deregister(self) -> None:
        """--deregister-on-exit: delete every record set this host owns."""
        try:
            delivery = self.sink.deregister(self.agent.owns, dry_run=self.agent.dry_run)
        except (NotConverged, ClientError, BotoCoreError) as exc:
            self._deregistered = False
            log.error("deregistration on exit failed: %s", exc)
            return
        self._deregistered = True
        log.info("deregistered on exit: %s", delivery.summary, extra=delivery.extra)


# --- wiring (the CLI's daemon mode) ---------------------------------------------------------

def _arn_resolver(introspection: EcsIntrospection) -> Callable[[str], str | None]:
    def resolve(docker_id: str) -> str | None:
        try:
            return introspection.task_arn(docker_id)
        except IntrospectionUnavailable as exc:
            log.warning("no task ARN for container %s: %s", docker_id[:12], exc,
                        extra={"container_id": docker_id[:12]})
            return None

    return resolve


class _Signals:
    """SIGTERM/SIGINT -> ``on_signal`` in a fresh thread.

    A Python signal handler runs in the main thread between any two bytecodes, possibly while
    that thread holds a (non-reentrant) lock the handler would need: the handler therefore
    only starts a thread, which does the locking.
    """

    def __init__(self, on_signal: Callable[[], None]) -> None:
        self.on_signal = on_signal
        self.received = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=self._deliver, args=(signum,), daemon=True).start()

    def _deliver(self, signum: int) -> None:
        log.info("signal %d: stopping", signum)
        self.received.set()
        self.on_signal()


def build_daemon(agent: Agent, settings: Settings, clients: Clients, status: Status) -> Daemon:
    sender = None
    if settings.cw_send_events:
        sender = TaskEventSender(
            lambda: clients.client("events"),
            hostname=settings.hostname or agent.host.label,
            resolve_arn=_arn_resolver(EcsIntrospection(settings.ecs_agent_url)),
            on_result=status.task_event_result,
        )
    # The drain watch runs with --drain-check > 0; the exit check reads through it either way.
    watch = DrainWatch(EcsIntrospection(settings.ecs_agent_url), lambda: clients.client("ecs"),
                       settings.drain_check)
    departure = DepartureCheck(watch, Imds(settings.imds_endpoint or None, timeout=1.0),
                               ecs_once=lambda: clients.client("ecs", max_attempts=1))
    return Daemon(agent, coalesce=settings.coalesce, resync=settings.resync,
                  deregister_on_exit=settings.deregister_on_exit,
                  docker_url=settings.docker_host or None, status=status, task_events=sender,
                  drain=watch if settings.drain_check > 0 else None,
                  departure=departure.check, drain_scope=DrainScope(lambda: clients.client("ecs")))


def _build_until_stopped(
    settings: Settings, build_agent: Callable[[Settings], tuple[Agent, Clients]],
    stop: threading.Event, status: Status,
) -> tuple[Agent, Clients] | None:
    """Build the agent, retrying while Route 53 cannot be reached; None if stopped first.

    Each attempt runs in a thread, so that a SIGTERM is honoured at once even while botocore
    is still retrying a call to an endpoint that does not answer. Start-up is alive for
    ``/healthz`` (a throttled account must not get its agents replaced while they start) and
    not ready for ``/readyz``.
    """
    def attempt(outcome: list[tuple[Agent, Clients] | BaseException]) -> None:
        try:
            outcome.append(build_agent(settings))
        except BaseException as exc:  # handed over to the waiting thread, which re-raises
            outcome.append(exc)

    delay = RETRY_MIN
    while True:
        outcome: list[tuple[Agent, Clients] | BaseException] = []
        worker = threading.Thread(target=attempt, args=(outcome,), name="startup", daemon=True)
        status.liveness.busy(status.liveness.clock())
        worker.start()
        while worker.is_alive():
            if stop.wait(0.2):
                return None
        result = outcome[0]
        if not isinstance(result, BaseException):
            return result
        if not isinstance(result, (ClientError, BotoCoreError)):
            raise result  # not transient (no such zone, no host identity): the CLI reports it
        log.error("cannot reach Route 53 (retrying in %.1fs): %s", delay, result)
        status.starting(f"cannot reach Route 53 (retrying): {result}")
        status.liveness.waiting(status.liveness.clock() + delay)
        if stop.wait(delay):
            return None
        delay = min(delay * 2, RETRY_MAX)


def serve(settings: Settings, build_agent: Callable[[Settings], tuple[Agent, Clients]]) -> int:
    """Daemon mode: build the agent (retrying transient AWS errors), run until a signal."""
    stop = threading.Event()
    signals = _Signals(stop.set)
    signals.install()
    status = Status()
    status.starting("the agent is being built")
    server: StatusServer | None = None
    if settings.status_port:
        try:
            server = StatusServer(status, settings.status_address, settings.status_port)
        except (OSError, OverflowError) as exc:  # in use, bad address, not a port number
            log.error("cannot serve status on %s:%d: %s", settings.status_address,
                      settings.status_port, exc)
            return 1
        server.start()
    try:
        return _run(settings, build_agent, status, stop, signals)
    finally:
        if server is not None:
            server.stop()


def _run(settings: Settings, build_agent: Callable[[Settings], tuple[Agent, Clients]],
         status: Status, stop: threading.Event, signals: _Signals) -> int:
    built = _build_until_stopped(settings, build_agent, stop, status)
    if built is None:
        return 0
    agent, clients = built
    status.count_requests(clients.stats)
    daemon = build_daemon(agent, settings, clients, status)
    signals.on_signal = daemon.stop
    if stop.is_set():
        return 0
    daemon.start()
    while not signals.received.wait(1.0):
        if not daemon.alive:
            log.critical("the reconcile loop ended unexpectedly; exiting")
            return 1
    ok = daemon.wait(SHUTDOWN_GRACE)
    log.info("stopped", extra={"aws_requests": clients.stats.by_operation()})
    return 0 if ok else 1


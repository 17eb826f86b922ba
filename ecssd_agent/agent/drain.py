"""The drain watch: is ECS draining this host's container instance?

When an instance is set to DRAINING (a scale-in, an AMI roll, a Spot interruption with
``ECS_ENABLE_SPOT_INSTANCE_DRAINING``), ECS starts the service tasks elsewhere and then
stops the ones here. Clients should stop being sent here before that, so the daemon
withdraws the host's service (SRV) records as soon as the instance is DRAINING, and
publishes them again if it is set ACTIVE again. The host's A record stays: a client still
holding an SRV answer (for up to the TTL) can still resolve its target and reach the tasks
while they finish their work.

The status comes from ECS: the ECS agent's introspection API names the cluster and the
container instance (a local call, no AWS request), one DescribeContainerInstances reads the
status, at most once per interval (jittered, so hosts started together do not call
together). ECS allows each account a shared budget of these calls: the interval is a
setting. Anything that cannot be read is "unknown" and changes nothing: an error never
withdraws records, and never brings withdrawn ones back on a guess.

The identity is cached, but only while ECS confirms it: when ECS answers INACTIVE or no
longer describes the cached ARN, the ECS agent is asked again at once, and an instance
registered anew (a new ARN) is judged by its new registration in the same check (one more
DescribeContainerInstances, only then).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from ecssd_agent.agent.ecs_introspection import (
    EcsIntrospection,
    InstanceIdentity,
    IntrospectionUnavailable,
)
from ecssd_agent.aws.ecs import EcsReadError, container_instance_status

log = logging.getLogger(__name__)

#: Statuses whose instance is leaving: DRAINING, and the deregistration that may follow it
#: (the health sweep deletes the records of hosts that are no longer container instances:
#: publishing them again would only make them flap).
LEAVING = frozenset({"DRAINING", "DEREGISTERING", "INACTIVE"})
JITTER = 0.1


class DrainWatch:
    """Checks the container instance status every ``interval`` seconds in its own thread.

    ``on_status(draining)`` is called (in the watch's thread; it must be quick) after every
    check that got an answer: True while the status is DRAINING (or the instance is being
    deregistered), False for any other status ECS reports (ACTIVE, REGISTERING). A check
    without an answer calls nothing.
    """

    def __init__(
        self,
        introspection: EcsIntrospection,
        ecs: Callable[[], Any],
        interval: float,
        on_status: Callable[[bool], None] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.introspection = introspection
        self._ecs = ecs
        self.interval = interval
        self.on_status = on_status
        self._rng = rng or random.Random()
        self._identity: InstanceIdentity | None = None
        self.last_status = ""  # the last status ECS reported for this host's registration
        self._lock = threading.Lock()  # the watch's thread and the exit check both read
        self._problem = ""  # the last failure logged, so a lasting one is logged once
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.first_check = threading.Event()  # set once the first check is over, answer or not
        self.checks = 0  # checks that got an answer (tests read it)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drain-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            finally:
                self.first_check.set()
            self._stopping.wait(self.interval * self._rng.uniform(1 - JITTER, 1 + JITTER))

    def tick(self) -> bool | None:
        """One check, its answer handed to ``on_status`` (tests drive the watch so)."""
        draining = self.check()
        if draining is not None and self.on_status is not None:
            self.on_status(draining)
        return draining

    def check(self) -> bool | None:
        """True: leaving (DRAINING); False: another status; None: unknown (logged once per
        cause)."""
        status = self.read_status()
        return None if status is None else status in LEAVING

    def read_status(self, ecs: Callable[[], Any] | None = None) -> str | None:
        """The ECS status of this host's current registration; None when unknown.

        ``ecs`` overrides the client factory for this read (the exit check uses one that
        does not retry)."""
        with self._lock:
            return self._read_status(ecs or self._ecs)

    def _read_status(self, client: Callable[[], Any]) -> str | None:
        try:
            identity = self._identity or self.introspection.instance()
            self._identity = identity
            status = self._status(client, identity)
            if status in ("", "INACTIVE"):
                # deregistered, or no longer described: the ECS agent may have registered
                # this instance anew; judge the current registration only
                current = self.introspection.instance()
                if current != identity:
                    log.info("this host's container instance is now %s in %s (was %s, %s)",
                             current.container_instance_arn, current.cluster,
                             identity.container_instance_arn, status or "not described")
                    identity = self._identity = current
                    status = self._status(client, identity)
        except IntrospectionUnavailable as exc:
            self._unknown(f"cannot tell this host's container instance: {exc}")
            return None
        except EcsReadError as exc:
            # the ECS agent may have registered the instance anew: ask it again next time
            self._identity = None
            self._unknown(f"cannot read the container instance status: {exc}")
            return None
        if not status:
            self._identity = None
            self._unknown(f"ECS describes no container instance "
                          f"{identity.container_instance_arn} in {identity.cluster}")
            return None
        self.checks += 1
        self.last_status = status
        if self._problem:
            log.info("container instance status readable again: %s", status)
            self._problem = ""
        return status

    @staticmethod
    def _status(ecs: Callable[[], Any], identity: InstanceIdentity) -> str:
        return container_instance_status(ecs(), identity.cluster,
                                         identity.container_instance_arn)

    def _unknown(self, problem: str) -> None:
        kind = problem.split(":", 1)[0]
        if kind != self._problem:
            log.warning("drain watch: %s; records stay as they are", problem)
            self._problem = kind

"""boto3 clients: created lazily, from one botocore Config, with every request counted.

Route 53 is the scarce resource of this system, so every process can say exactly how many
requests it made, by operation and outcome (``--sync`` prints it; the daemon exports it as
metrics; tests assert on it). Counting uses botocore's event hooks, so retries done inside
botocore (standard/adaptive mode) are counted as the requests they are.

Endpoints come from the standard ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``
variables that boto3 honours: the same code talks to AWS or to a moto server.

With a :class:`~.assume_role.ZoneRole` (the zone lives in another account), the Route 53
clients sign with that role's credentials and every other client with the process's own;
see :mod:`.assume_role`. The STS requests that assume the role are counted too.

With ``budgets`` (service -> :class:`~.request_budget.TokenBucket`), every client of that
service waits for the bucket's tokens before each request it sends: one budget for the
whole process, whichever of its clients sends.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

from ecssd_agent.aws.assume_role import ZONE_SERVICES, ZoneRole, role_credentials, role_session
from ecssd_agent.aws.request_budget import TokenBucket, enforce


class RequestStats:
    """Thread-safe counts of AWS requests: ``(service, operation, outcome) -> n``.

    ``attempt`` counts every HTTP request sent (retries included); ``ok`` and ``error`` count
    API calls as the caller saw them, after botocore's retries.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def add(self, service: str, operation: str, outcome: str) -> None:
        with self._lock:
            self._counts[(service, operation, outcome)] += 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def attempts(self, operation: str | None = None, service: str | None = None) -> int:
        """Requests sent, optionally for one operation (e.g. ``ChangeResourceRecordSets``)."""
        return sum(
            n for (svc, op, outcome), n in self.snapshot().items()
            if outcome == "attempt"
            and (operation is None or op == operation)
            and (service is None or svc == service)
        )

    def by_operation(self) -> dict[str, int]:
        """Requests sent per operation: the summary ``--sync`` prints."""
        out: dict[str, int] = {}
        for (_, op, outcome), n in sorted(self.snapshot().items()):
            if outcome == "attempt":
                out[op] = out.get(op, 0) + n
        return out

    def hook(self, client: Any) -> None:
        """Count this client's requests; botocore names the operation in the event name."""
        service = client.meta.service_model.service_name

        def counter(outcome: str) -> Any:
            def count(event_name: str, **kwargs: Any) -> None:
                response = kwargs.get("http_response")
                failed = response is not None and response.status_code >= 300
                self.add(service, event_name.rsplit(".", 1)[-1], "error" if failed else outcome)

            return count

        events = client.meta.events
        events.register(f"before-send.{service}", counter("attempt"))
        events.register(f"after-call.{service}", counter("ok"))
        events.register(f"after-call-error.{service}", counter("error"))


class Clients:
    """A cache of boto3 clients sharing one Config and one RequestStats.

    Nothing is created at import or construction time: Lambda handlers build one of these
    per cold start and tests can hand in their own.
    """

    def __init__(
        self,
        region: str | None = None,
        retry_mode: str = "standard",
        max_attempts: int = 8,
        stats: RequestStats | None = None,
        session: boto3.session.Session | None = None,
        zone_role: ZoneRole | None = None,
        budgets: Mapping[str, TokenBucket] | None = None,
    ) -> None:
        self.region = region
        self.budgets = dict(budgets or {})
        self.zone_role = zone_role
        self.retry_mode = retry_mode
        self.stats = stats or RequestStats()
        retries: Any = {"mode": retry_mode, "max_attempts": max_attempts}
        self.config = Config(
            retries=retries,
            connect_timeout=5,
            read_timeout=20,
            user_agent_extra="ecssd",
        )
        self._session = session
        self._role_session: boto3.session.Session | None = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, max_attempts: int | None = None) -> Any:
        """The service's client; ``max_attempts`` (attempts in all) gives a separate one
        (the daemon writes to Route 53 with one attempt and retries by re-planning)."""
        key = service if max_attempts is None else f"{service}#{max_attempts}"
        with self._lock:
            if key not in self._clients:
                config = self.config
                if max_attempts is not None:
                    retries: Any = {"mode": self.retry_mode, "total_max_attempts": max_attempts}
                    config = self.config.merge(Config(retries=retries))
                session = (self._zone_session() if self.zone_role and service in ZONE_SERVICES
                           else self._base_session())
                client = session.client(  # type: ignore[call-overload, unused-ignore]
                    service, region_name=self.region, config=config)
                self.stats.hook(client)
                if service in self.budgets:
                    enforce(client, self.budgets[service])
                self._clients[key] = client
            return self._clients[key]

    def _base_session(self) -> boto3.session.Session:
        """The process's session (called with the lock held).

        One session for all: a client from its own session loads the service's model again
        (about 10 MB for Route 53's; the daemon has two such clients).
        """
        if self._session is None:
            self._session = boto3.session.Session()
        return self._session

    def _zone_session(self) -> boto3.session.Session:
        """The session signing as the zone role (called with the lock held).

        Its STS client is made now, from the process's session and credentials, so that a
        refresh in any thread finds it ready.
        """
        assert self.zone_role is not None
        if self._role_session is None:
            base = self._base_session()
            sts = base.client(  # type: ignore[call-overload, unused-ignore]
                "sts", region_name=self.region, config=self.config)
            self.stats.hook(sts)
            self._clients["sts"] = sts
            self._role_session = role_session(base, role_credentials(sts, self.zone_role))
        return self._role_session

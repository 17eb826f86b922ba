"""The portal's calls to time and calc: discover on every request, fail over, or say 503.

Why resolve on every request: instances come and go (that is the point of the project),
and the DNS client library already caches each answer for its TTL, so asking it every
time costs nothing while the answer is fresh and sees a change as soon as it is stale.

Failover: the endpoints are tried in RFC 2782 order (the library's); a connection error,
a timeout or a 5xx moves on to the next one. With Route 53's weighted routing a query
returns ONE instance, so when every endpoint of an answer has failed the portal asks
again (a new answer may name another instance), up to ``rounds`` times. 4xx answers are
the service's real answer (a bad formula) and are passed through.

Each call to an instance is bounded by ``timeout`` seconds in all (not per socket read), so
a request costs at most ``timeout`` per instance tried. Error bodies are public: service
and failure class only; the instances and the errors' text are logged.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from ecssd_agent import http_deadline
from examples.common.auth import Credentials
from examples.common.discovery import Discovery, DiscoveryError, Endpoint, ServiceNotFound
from examples.common.tracing import HEADER as TRACE_HEADER
from examples.common.tracing import NO_TRACER, Tracer
from examples.common.web import JSON, Response, error

log = logging.getLogger("examples.portal")


@dataclass(frozen=True)
class Upstream:
    """What a backend answered: status, body, content type."""

    status: int
    body: bytes
    content_type: str


Fetch = Callable[[Endpoint, str, dict[str, str], float], Upstream]


def http_fetch(endpoint: Endpoint, path: str, headers: dict[str, str], timeout: float) -> Upstream:
    """GET ``path`` from ``endpoint`` within ``timeout`` seconds in all (connect, request,
    headers, body: an instance trickling its answer fails over like a hung one); raises
    OSError (TimeoutError at the deadline) or HTTPException when it cannot answer."""
    reply = http_deadline.get(endpoint.address, endpoint.port, path, headers, timeout)
    return Upstream(reply.status, reply.body, reply.content_type or JSON)


class Backend:
    """One backend service (``_calc._tcp``) behind one portal path (``/calc/``)."""

    def __init__(self, kind: str, service: str, discovery: Discovery,
                 credentials: Credentials | None, *, timeout: float = 2.0, rounds: int = 3,
                 fetch: Fetch = http_fetch, tracer: Tracer = NO_TRACER) -> None:
        self.kind = kind
        self.service = service
        self.discovery = discovery
        self.credentials = credentials
        self.timeout = timeout
        self.rounds = rounds
        self.fetch = fetch
        self.tracer = tracer

    def _headers(self, trace_header: str | None) -> dict[str, str]:
        headers = {"Accept": JSON, "Connection": "close"}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.header()
        if trace_header:
            headers[TRACE_HEADER] = trace_header
        return headers

    def call(self, argument: str) -> Response:
        """Ask an instance of the service for ``/<kind>/<argument>``.

        The 503 bodies are public (the portal faces the internet through its load
        balancer): they name the service and the class of each failure, never an
        instance's name, address, port or the error's text, which go to the log.
        """
        path = f"/{self.kind}/{quote(argument, safe='')}"
        failures: list[Failure] = []
        tried: set[tuple[str, int]] = set()
        for _ in range(self.rounds):
            try:
                endpoints = list(self.discovery.endpoints(self.service))
            except ServiceNotFound:
                break
            except DiscoveryError as exc:
                log.warning("cannot resolve %s: %s", self.service, exc)
                return error(HTTPStatus.SERVICE_UNAVAILABLE,
                             f"cannot resolve the {self.kind} service ({self.service})",
                             service=self.service, failures=_classes(failures))
            fresh = [e for e in endpoints if (e.address, e.port) not in tried]
            for endpoint in fresh:
                tried.add((endpoint.address, endpoint.port))
                answer = self._try(endpoint, path)
                if isinstance(answer, Response):
                    return answer
                failures.append(answer)
        if not failures:
            log.warning("%s: no instance of %s was found", self.kind, self.service)
            return error(HTTPStatus.SERVICE_UNAVAILABLE,
                         f"no instance of the {self.kind} service ({self.service}) was found",
                         service=self.service, failures=[])
        log.warning("%s: every instance of %s failed: %s", self.kind, self.service,
                    "; ".join(f"{f.endpoint}: {f.detail}" for f in failures))
        return error(HTTPStatus.SERVICE_UNAVAILABLE,
                     f"every instance of the {self.kind} service ({self.service}) failed",
                     service=self.service, failures=_classes(failures))

    def _try(self, endpoint: Endpoint, path: str) -> Response | Failure:
        """The response to pass on, or why this endpoint failed."""
        with self.tracer.subsegment(self.kind) as trace_header:
            try:
                upstream = self.fetch(endpoint, path, self._headers(trace_header), self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                log.warning("%s instance %s failed: %r", self.kind, endpoint, exc)
                return Failure(endpoint, failure_class(exc), f"{exc!r}")
        if upstream.status >= 500:
            log.warning("%s instance %s answered %d", self.kind, endpoint, upstream.status)
            return Failure(endpoint, f"HTTP {upstream.status}", f"HTTP {upstream.status}")
        return Response(upstream.status, _with_origin(upstream, endpoint), upstream.content_type)


@dataclass(frozen=True)
class Failure:
    """One instance's failure: ``kind`` is public (the 503 body), the rest is for the log."""

    endpoint: Endpoint
    kind: str
    detail: str


def failure_class(exc: BaseException) -> str:
    """The public name of a failed call: what went wrong, without where or the errno text."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionError):
        return "connection lost"
    if isinstance(exc, http.client.HTTPException):
        return "invalid response"
    return "connection failed"


def _classes(failures: list[Failure]) -> list[str]:
    """Each failure class once, in the order first seen."""
    return list(dict.fromkeys(f.kind for f in failures))


def _with_origin(upstream: Upstream, endpoint: Endpoint) -> bytes:
    """Add ``served_by`` to a JSON object answer, so a person sees which instance replied."""
    try:
        payload: Any = json.loads(upstream.body)
    except ValueError:
        return upstream.body
    if not isinstance(payload, dict):
        return upstream.body
    payload["served_by"] = {"target": endpoint.target, "address": endpoint.address,
                            "port": endpoint.port}
    return json.dumps(payload).encode() + b"\n"

"""The portal's calls to time and calc: discover on every request, fail over, or say 503.

Why resolve on every request: instances come and go (that is the point of the project),
and the DNS client library already caches each answer for its TTL, so asking it every
time costs nothing while the answer is fresh and sees a change as soon as it is stale.

Failover: the endpoints are tried in RFC 2782 order (the library's); a connection error,
a timeout or a 5xx moves on to the next one. With Route 53's weighted routing a query
returns ONE instance, so when every endpoint of an answer has failed the portal asks
again (a new answer may name another instance), up to ``rounds`` times. 4xx answers are
the service's real answer (a bad formula) and are passed through.
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
    """GET ``path`` from ``endpoint``; raises OSError/HTTPException when it cannot answer."""
    connection = http.client.HTTPConnection(endpoint.address, endpoint.port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return Upstream(response.status, body, response.getheader("Content-Type", JSON))
    finally:
        connection.close()


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
        """Ask an instance of the service for ``/<kind>/<argument>``."""
        path = f"/{self.kind}/{quote(argument, safe='')}"
        failed: list[str] = []
        tried: set[tuple[str, int]] = set()
        for _ in range(self.rounds):
            try:
                endpoints = list(self.discovery.endpoints(self.service))
            except ServiceNotFound:
                break
            except DiscoveryError as exc:
                log.warning("cannot resolve %s: %s", self.service, exc)
                return error(HTTPStatus.SERVICE_UNAVAILABLE,
                             f"cannot resolve the {self.kind} service ({self.service}): {exc}",
                             service=self.service, tried=failed)
            fresh = [e for e in endpoints if (e.address, e.port) not in tried]
            for endpoint in fresh:
                tried.add((endpoint.address, endpoint.port))
                answer = self._try(endpoint, path)
                if isinstance(answer, Response):
                    return answer
                failed.append(answer)
        if not failed:
            return error(HTTPStatus.SERVICE_UNAVAILABLE,
                         f"no instance of the {self.kind} service ({self.service}) was found",
                         service=self.service, tried=[])
        return error(HTTPStatus.SERVICE_UNAVAILABLE,
                     f"every instance of the {self.kind} service ({self.service}) failed",
                     service=self.service, tried=failed)

    def _try(self, endpoint: Endpoint, path: str) -> Response | str:
        """The response to pass on, or a string saying why this endpoint failed."""
        with self.tracer.subsegment(self.kind) as trace_header:
            try:
                upstream = self.fetch(endpoint, path, self._headers(trace_header), self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                log.warning("%s instance %s failed: %s", self.kind, endpoint, exc)
                return f"{endpoint}: {exc or type(exc).__name__}"
        if upstream.status >= 500:
            log.warning("%s instance %s answered %d", self.kind, endpoint, upstream.status)
            return f"{endpoint}: HTTP {upstream.status}"
        return Response(upstream.status, _with_origin(upstream, endpoint), upstream.content_type)


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

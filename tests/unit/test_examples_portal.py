"""The portal's proxy: failover over real HTTP backends, public 503s that say what class of
failure (the details only in the log), a deadline per upstream request, the page itself.

Discovery is a fake here (the end-to-end test uses the real DNS server); the backends
are real calc services on 127.0.0.1 sockets, so connection failures are real too.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import ThreadingHTTPServer
from typing import TypeVar

import pytest

from examples.calc.app import make_app as make_calc_app
from examples.common.auth import BasicAuth, Credentials
from examples.common.discovery import DiscoveryError, Endpoint, ServiceNotFound
from examples.common.web import Request
from examples.portal.app import make_app as make_portal_app
from examples.portal.proxy import Backend, Upstream
from tests.support.trickle import TrickleServer, bounded

CREDS = Credentials("admin", "s3cret")
T = TypeVar("T")


class Server:
    """A calc service on a real socket that a test can stop."""

    def __init__(self, name: str) -> None:
        self.httpd: ThreadingHTTPServer = make_calc_app(BasicAuth(CREDS), container_id=name).server()
        self.port = self.httpd.server_address[1]
        self.endpoint = Endpoint(f"{name}.zone.", "127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)
            self.running = False


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started = [Server("calc-a"), Server("calc-b")]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


class FakeDiscovery:
    """Returns a fixed list (or raises); counts the lookups."""

    def __init__(self, endpoints: Sequence[Endpoint] | Exception) -> None:
        self.answer = endpoints
        self.lookups = 0

    def endpoints(self, service: str) -> Sequence[Endpoint]:
        self.lookups += 1
        self.service = service
        if isinstance(self.answer, Exception):
            raise self.answer
        return list(self.answer)


def backend(discovery: FakeDiscovery, **kwargs: object) -> Backend:
    return Backend("calc", "_calc._tcp", discovery, CREDS, timeout=2.0, **kwargs)  # type: ignore[arg-type]


def test_first_instance_answers(servers: list[Server]) -> None:
    response = backend(FakeDiscovery([s.endpoint for s in servers])).call("(2+2)*3")
    assert response.status == 200
    body = response.json()
    assert body["value"] == 12 and body["container_id"] == "calc-a"
    assert body["served_by"] == {"target": "calc-a.zone.", "address": "127.0.0.1",
                                 "port": servers[0].port}


def test_a_dead_instance_is_skipped(servers: list[Server]) -> None:
    servers[0].stop()
    response = backend(FakeDiscovery([s.endpoint for s in servers])).call("6*7")
    assert response.status == 200
    assert response.json()["container_id"] == "calc-b"


def test_all_dead_is_503_naming_the_failure_class_only(servers: list[Server],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    for server in servers:
        server.stop()
    discovery = FakeDiscovery([s.endpoint for s in servers])
    with caplog.at_level(logging.WARNING, logger="examples.portal"):
        response = backend(discovery).call("1+1")
    assert response.status == 503
    assert response.json() == {"error": "every instance of the calc service (_calc._tcp) failed",
                               "service": "_calc._tcp", "failures": ["connection refused"]}
    assert discovery.lookups == 3  # asked again in case the answer changed
    # The details (which instance, its address and port, the errno) are in the log only.
    body = response.body.decode()
    summary = next(r.getMessage() for r in caplog.records if "every instance" in r.getMessage())
    for server in servers:
        assert str(server.endpoint) in summary  # calc-a.zone.(127.0.0.1):PORT
        assert str(server.port) not in body
    assert "ConnectionRefusedError" in summary
    assert not re.search(r"127\.0\.0\.1|calc-[ab]|zone\.|errno", body, re.IGNORECASE), body


def test_no_instance_is_503_with_a_clear_message() -> None:
    response = backend(FakeDiscovery(ServiceNotFound("NXDOMAIN"))).call("1+1")
    assert response.status == 503
    assert response.json() == {"error": "no instance of the calc service (_calc._tcp) was found",
                               "service": "_calc._tcp", "failures": []}


def test_resolver_failure_is_503_not_no_instance_and_keeps_the_resolver_to_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    failure = DiscoveryError("no answer from 10.0.0.2:53 within 5 s")
    with caplog.at_level(logging.WARNING, logger="examples.portal"):
        response = backend(FakeDiscovery(failure)).call("1+1")
    assert response.status == 503
    assert response.json() == {"error": "cannot resolve the calc service (_calc._tcp)",
                               "service": "_calc._tcp", "failures": []}
    assert "10.0.0.2:53" in caplog.text


def test_weighted_answers_are_asked_again(servers: list[Server]) -> None:
    """Weighted routing answers one instance per query: a dead one means ask again."""
    servers[0].stop()
    answers = iter([[servers[0].endpoint], [servers[0].endpoint], [servers[1].endpoint]])

    class OnePerQuery(FakeDiscovery):
        def endpoints(self, service: str) -> Sequence[Endpoint]:
            self.lookups += 1
            return next(answers)

    discovery = OnePerQuery([])
    response = backend(discovery).call("2*3")
    assert response.status == 200 and response.json()["value"] == 6
    assert discovery.lookups == 3


def test_client_errors_pass_through_server_errors_fail_over(servers: list[Server]) -> None:
    response = backend(FakeDiscovery([s.endpoint for s in servers])).call("1/0")
    assert response.status == 400
    assert response.json()["error"] == "division by zero"

    calls: list[int] = []

    def flaky(endpoint: Endpoint, path: str, headers: dict[str, str], timeout: float) -> Upstream:
        calls.append(endpoint.port)
        if len(calls) == 1:
            return Upstream(502, b"bad gateway", "text/plain")
        return Upstream(200, b'{"value": 2}', "application/json")

    response = backend(FakeDiscovery([s.endpoint for s in servers]), fetch=flaky).call("1+1")
    assert response.status == 200 and calls == [servers[0].port, servers[1].port]


def test_formula_is_reencoded_and_credentials_sent(servers: list[Server]) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def record(endpoint: Endpoint, path: str, headers: dict[str, str], timeout: float) -> Upstream:
        seen.append((path, headers))
        return Upstream(200, b"{}", "application/json")

    backend(FakeDiscovery([servers[0].endpoint]), fetch=record).call("6/3 + 2^2")
    path, headers = seen[0]
    assert path == "/calc/6%2F3%20%2B%202%5E2"
    assert headers["Authorization"] == CREDS.header()


def test_hung_instance_times_out_and_fails_over(servers: list[Server]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        hung = Endpoint("hung.zone.", "127.0.0.1", listener.getsockname()[1])
        slow = Backend("calc", "_calc._tcp", FakeDiscovery([hung, servers[1].endpoint]), CREDS,
                       timeout=0.3)
        response = slow.call("1+2")
        assert response.status == 200 and response.json()["container_id"] == "calc-b"
    finally:
        listener.close()


def test_portal_routes(servers: list[Server]) -> None:
    calc = backend(FakeDiscovery([servers[1].endpoint]))
    time_backend = Backend("time", "_time._tcp", FakeDiscovery(ServiceNotFound("none")), CREDS)
    app = make_portal_app(time_backend, calc)
    page = app.handle(Request("GET", "/"))
    assert page.status == 200 and page.content_type.startswith("text/html")
    assert b'id="formula"' in page.body and b'id="layout"' in page.body
    assert app.handle(Request("GET", "/calc/2%5E10")).json()["value"] == 1024
    missing = app.handle(Request("GET", "/time/15:04"))
    assert missing.status == 503
    assert missing.json()["error"] == "no instance of the time service (_time._tcp) was found"
    assert app.handle(Request("GET", "/health")).status == 200
    assert app.handle(Request("GET", "/nowhere")).status == 404


def test_a_trickling_instance_times_out_on_the_whole_request_and_fails_over(
        servers: list[Server], caplog: pytest.LogCaptureFixture) -> None:
    """An instance sending one header byte every 0.3 s: each read succeeds, so only a
    deadline on the whole request (0.5 s) moves the portal on to the next instance."""
    with TrickleServer(interval=0.3) as slow:
        trickling = Endpoint("slow.zone.", "127.0.0.1", slow.port)
        only_slow = Backend("calc", "_calc._tcp", FakeDiscovery([trickling]), CREDS, timeout=0.5)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="examples.portal"):
            response = bounded(5, lambda: only_slow.call("1+2"))
        assert time.monotonic() - started < 1.5  # one instance: one deadline of 0.5 s
        assert slow.bytes_sent >= 1
        assert response.status == 503
        assert response.json()["failures"] == ["timed out"]
        assert str(trickling) in caplog.text and "TimeoutError" in caplog.text

        failover = Backend("calc", "_calc._tcp",
                           FakeDiscovery([trickling, servers[1].endpoint]), CREDS, timeout=0.5)
        started = time.monotonic()
        response = bounded(5, lambda: failover.call("1+2"))
        assert time.monotonic() - started < 1.5
        assert response.status == 200 and response.json()["container_id"] == "calc-b"



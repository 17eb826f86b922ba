"""Basic auth from the environment, the shared web layer over real sockets, and the time app."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer

import pytest

from examples.common.auth import AuthConfigError, BasicAuth, Credentials, credentials_from_env
from examples.common.web import App, Request
from examples.time.app import make_app as make_time_app

CREDS = Credentials("admin", "p@ss:word é")
AUTH = BasicAuth(CREDS)


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(("header", "allowed"), [
    (CREDS.header(), True),
    (basic("admin:p@ss:word é".encode()), True),          # ':' in the password is fine
    ("basic " + CREDS.header().split()[1], True),           # the scheme is case-insensitive
    (None, False),
    ("", False),
    ("Basic", False),
    ("Bearer " + CREDS.header().split()[1], False),
    (basic(b"admin:wrong"), False),
    (basic(b"Admin:p@ss:word \xc3\xa9"), False),
    (basic(b"admin"), False),                                # no colon
    (basic(b"admin:p@ss:word \xc3\xa9 "), False),            # trailing space
    ("Basic !!!not-base64!!!", False),
    ("Basic " + "A" * 10_000, False),
])
def test_allows(header: str | None, allowed: bool) -> None:
    assert AUTH.allows(header) is allowed


def test_credentials_from_env() -> None:
    assert credentials_from_env({}) is None
    assert credentials_from_env({"AUTH_USER": "u", "AUTH_PASSWORD": "p"}) == Credentials("u", "p")
    for broken in ({"AUTH_USER": "u"}, {"AUTH_PASSWORD": "p"},
                   {"AUTH_USER": "a:b", "AUTH_PASSWORD": "p"}):
        with pytest.raises(AuthConfigError):
            credentials_from_env(broken)


def test_services_fail_closed_without_credentials() -> None:
    with pytest.raises(AuthConfigError, match="AUTH_USER"):
        BasicAuth.from_env({})
    assert BasicAuth.from_env({"AUTH_DISABLED": "true"}) is None
    assert BasicAuth.from_env({"AUTH_USER": "u", "AUTH_PASSWORD": "p"}) == BasicAuth(
        Credentials("u", "p"))


def test_password_never_in_repr() -> None:
    assert "p@ss" not in repr(CREDS)
    assert "p@ss" not in repr(AUTH)


# --- the web layer over a real socket ---------------------------------------------------


@pytest.fixture
def time_server() -> Iterator[ThreadingHTTPServer]:
    clock = lambda: datetime(2024, 3, 5, 9, 30, 7, tzinfo=timezone(timedelta(hours=1), "CET"))  # noqa: E731
    app = make_time_app(AUTH, clock=clock, container_id="abc123", instance_id="i-0123")
    server = app.server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fetch(server: ThreadingHTTPServer, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_time_over_http(time_server: ThreadingHTTPServer) -> None:
    status, headers, body = fetch(time_server, "/time/15:04%20Jan%202%20MST%20Z07:00",
                                  {"Authorization": CREDS.header()})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"value": "09:30 Mar 5 CET +01:00", "layout": "15:04 Jan 2 MST Z07:00",
                                "container_id": "abc123", "instance_id": "i-0123"}


def test_time_layout_with_slashes_and_errors(time_server: ThreadingHTTPServer) -> None:
    auth = {"Authorization": CREDS.header()}
    assert json.loads(fetch(time_server, "/time/01/02/2006", auth)[2])["value"] == "03/05/2024"
    status, _, body = fetch(time_server, "/time/", auth)
    assert status == 400 and "layout" in json.loads(body)["error"]
    status, _, body = fetch(time_server, "/time/" + "x" * 300, auth)
    assert status == 400 and "longer than" in json.loads(body)["error"]


def test_http_auth_challenge_and_health(time_server: ThreadingHTTPServer) -> None:
    status, headers, body = fetch(time_server, "/time/15:04")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert json.loads(body) == {"error": "authentication required"}
    status, _, body = fetch(time_server, "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok", "service": "time"})


def test_http_errors_are_json(time_server: ThreadingHTTPServer) -> None:
    status, headers, body = fetch(time_server, "/health", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert json.loads(body)["error"] == "POST is not allowed"
    status, _, body = fetch(time_server, "/nope", {"Authorization": CREDS.header()})
    assert status == 404 and json.loads(body)["error"] == "no such path: /nope"
    status, headers, body = fetch(time_server, "/health", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_credentials_are_never_logged(time_server: ThreadingHTTPServer,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fetch(time_server, "/time/15:04", {"Authorization": CREDS.header()})
    fetch(time_server, "/time/15:04", {"Authorization": basic(b"admin:guess")})
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "/time/15:04" in text  # the access log is there...
    assert CREDS.header().split()[1] not in text  # ...without the credentials
    assert "p@ss" not in text and "guess" not in text and "Z3Vlc3" not in text


def test_a_failing_handler_is_a_500_not_a_crash() -> None:
    def broken(_request: Request, _rest: str) -> object:
        raise RuntimeError("boom")

    app = App("broken", auth=None)
    app.route("/x", broken)  # type: ignore[arg-type]
    response = app.handle(Request("GET", "/x"))
    assert response.status == 500 and response.json() == {"error": "internal error"}

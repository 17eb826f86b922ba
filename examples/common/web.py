"""A very small JSON web framework on ``http.server``, shared by the example services.

Why not Flask: the services must run in a bare ``python3`` image with nothing installed
(the offline demo builds its base image from Debian packages, without pip). The part
that matters is kept apart from the sockets: ``App.handle(Request) -> Response`` is a
plain function the unit tests call directly, and ``App.server()`` only adapts it to
``ThreadingHTTPServer``.

Every service gets ``GET /health`` (no auth: Docker's HEALTHCHECK and the health sweep
call it), basic auth on everything else, a JSON error body for every failure, and an
access log that names method, path and status but never a header (so never credentials).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import unquote

from examples.common.auth import AuthConfigError, BasicAuth
from examples.common.discovery import daemon_resolver
from examples.common.tracing import NO_TRACER, Tracer, tracer_from_env

JSON = "application/json"
HTML = "text/html; charset=utf-8"
log = logging.getLogger("examples.web")


@dataclass(frozen=True)
class Request:
    """What a handler sees: method, raw path (no query), query string, headers."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    client: str = ""

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()

    def json(self) -> Any:
        """The body parsed as JSON (tests and the portal use it)."""
        return json.loads(self.body)


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(int(status), json.dumps(payload).encode() + b"\n", JSON, headers)


def error(status: int, message: str, **extra: Any) -> Response:
    """``{"error": message, ...}`` with ``status``: the one error shape of every service."""
    return json_response(status, {"error": message, **extra})


#: A route handler gets the request and the URL-decoded rest of the path after its prefix.
Handler = Callable[[Request, str], Response]


@dataclass(frozen=True)
class Route:
    prefix: str
    handler: Handler
    public: bool = False
    exact: bool = False

    def matches(self, path: str) -> bool:
        return path == self.prefix if self.exact else path.startswith(self.prefix)


class App:
    """Routes by path prefix; auth on every route not marked public; /health built in."""

    def __init__(self, name: str, auth: BasicAuth | None, tracer: Tracer = NO_TRACER) -> None:
        self.name = name
        self.auth = auth
        self.tracer = tracer
        self.routes: list[Route] = [Route("/health", self._health, public=True, exact=True)]

    def route(self, prefix: str, handler: Handler, *, public: bool = False,
              exact: bool = False) -> None:
        self.routes.append(Route(prefix, handler, public, exact))

    def _health(self, _request: Request, _rest: str) -> Response:
        return json_response(HTTPStatus.OK, {"status": "ok", "service": self.name})

    def handle(self, request: Request) -> Response:
        """Dispatch one request; never raises (a bug becomes a logged 500)."""
        if request.method not in ("GET", "HEAD"):
            return json_response(HTTPStatus.METHOD_NOT_ALLOWED,
                                 {"error": f"{request.method} is not allowed"},
                                 (("Allow", "GET, HEAD"),))
        route = next((r for r in self.routes if r.matches(request.path)), None)
        if route is None:
            return error(HTTPStatus.NOT_FOUND, f"no such path: {request.path}")
        if not route.public and self.auth is not None and not self.auth.allows(
                request.header("Authorization")):
            return json_response(HTTPStatus.UNAUTHORIZED, {"error": "authentication required"},
                                 (("WWW-Authenticate", self.auth.challenge()),))
        try:
            rest = unquote(request.path[len(route.prefix):], errors="strict")
        except UnicodeDecodeError:
            return error(HTTPStatus.BAD_REQUEST, "the path is not valid percent-encoded UTF-8")
        with self.tracer.segment(self.name, request) as segment:
            try:
                response = route.handler(request, rest)
            except Exception:  # the last resort of a server: log it, answer 500, keep serving
                log.exception("handler for %s failed", route.prefix)
                response = error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
            segment.status(response.status)
        return response

    def server(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        """A bound (not yet serving) threaded HTTP server for this app."""
        server = ThreadingHTTPServer((host, port), _handler_class(self))
        server.daemon_threads = True
        return server


def _handler_class(app: App) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the portal reuses nothing, browsers do
        server_version = f"ecssd-{app.name}/1"
        timeout = 30  # a client that stalls mid-request frees its thread

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def _other(self) -> None:
            self._serve(send_body=True)

        do_POST = do_PUT = do_DELETE = do_PATCH = _other

        def _serve(self, send_body: bool) -> None:
            started = time.monotonic()
            path, _, query = self.path.partition("?")
            request = Request(self.command, path, query, dict(self.headers.items()),
                              self.client_address[0])
            response = app.handle(request)
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self.wfile.write(response.body)
            log.info("%s %s %d %.1fms", self.command, path, response.status,
                     (time.monotonic() - started) * 1000,
                     extra={"method": self.command, "path": path, "status": response.status,
                            "client": self.client_address[0]})

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """Replaced by the line in ``_serve`` (which never includes headers)."""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return _Handler


def setup_logging() -> None:
    """Plain lines on stderr, level from ``LOG_LEVEL`` (default info)."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def serve(app: App, default_port: int) -> int:
    """Serve ``app`` on ``HOST:PORT`` (env; default 0.0.0.0:default_port) until SIGTERM/SIGINT."""
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", str(default_port)))
    server = app.server(host, port)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: stopping", signum)
            # shutdown() waits for serve_forever() to return: call it from another thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("%s listening on %s:%d", app.name, host, server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def run_service(name: str, make_app: Callable[[BasicAuth | None, Tracer], App],
                default_port: int) -> int:
    """The whole ``main`` of a backend service (time, calc): logging, credentials from the
    environment (exit 2 naming the problem when they are unusable), optional tracing with the
    daemon found through discovery, then serve until SIGTERM."""
    setup_logging()
    try:
        auth = BasicAuth.from_env()
    except AuthConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    return serve(make_app(auth, tracer_from_env(name, daemon_resolver())), default_port)

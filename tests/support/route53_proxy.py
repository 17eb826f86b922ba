"""A proxy in front of the moto server that counts, and can throttle, Route 53 requests.

Why: a budget is proven where requests arrive, not where the code under test says it sent
them. The process under test gets ``AWS_ENDPOINT_URL_ROUTE53`` pointing here; everything
else (and the test's own writes) goes to moto directly. Each request is recorded with its
arrival time, operation and query string (a lookup lists from ``name=``, a sweep page from
the zone's start or from where the last page ended). ``throttle()`` makes the proxy answer
Route 53's own ``Throttling`` error (HTTP 400) instead of forwarding, as an account over its
rate would.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_THROTTLED = (b'<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/'
              b'doc/2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>'
              b'Rate exceeded</Message></Error><RequestId>proxy</RequestId></ErrorResponse>')
_OPERATIONS = (  # (method, path pattern, Route 53 operation)
    ("GET", re.compile(r"/2013-04-01/hostedzone/[^/]+/rrset/?$"), "ListResourceRecordSets"),
    ("POST", re.compile(r"/2013-04-01/hostedzone/[^/]+/rrset/?$"), "ChangeResourceRecordSets"),
    ("GET", re.compile(r"/2013-04-01/hostedzonesbyname/?$"), "ListHostedZonesByName"),
    ("GET", re.compile(r"/2013-04-01/hostedzone/[^/]+/?$"), "GetHostedZone"),
)


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() on arrival
    operation: str
    query: dict[str, str]
    throttled: bool

    @property
    def lookup(self) -> str | None:
        """The name a listing started from (None: from the zone's start)."""
        return self.query.get("name")


def operation(method: str, path: str) -> str:
    for verb, pattern, name in _OPERATIONS:
        if verb == method and pattern.match(path):
            return name
    return f"{method} {path}"


class Route53Proxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._throttling = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-request (a process stopped): not news

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def requests(self, since: float = float("-inf"), until: float = float("inf"),
                 operation: str | None = "ListResourceRecordSets") -> list[Request]:
        with self._lock:
            return [r for r in self._requests if since <= r.at < until
                    and (operation is None or r.operation == operation)]

    @contextmanager
    def throttle(self) -> Iterator[None]:
        """Answer every request with Route 53's Throttling error while inside."""
        self._throttling = True
        try:
            yield
        finally:
            self._throttling = False

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        throttled = self._throttling
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self._requests.append(Request(time.monotonic(), operation(handler.command,
                                                                      parts.path),
                                          query, throttled))
        if throttled:
            status, headers, data = 400, [("Content-Type", "text/xml")], _THROTTLED
        else:
            status, headers, data = self._forward(handler, body)
        handler.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection",
                                    "server", "date"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _forward(self, handler: BaseHTTPRequestHandler,
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
            connection.request(handler.command, handler.path, body=body or None,
                               headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

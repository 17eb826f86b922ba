"""Optional X-Ray tracing (to a UDP "daemon" on 127.0.0.1) and the instance identity lookups."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from examples.calc.app import make_app as make_calc_app
from examples.common import identity
from examples.common.discovery import Endpoint
from examples.common.tracing import NO_TRACER, XRayTracer, tracer_from_env
from examples.common.web import Request
from examples.portal.proxy import Backend, Upstream


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    """A UDP socket standing in for the X-Ray daemon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        yield sock
    finally:
        sock.close()


def received_documents(sock: socket.socket) -> dict[str, object]:
    """One datagram: a JSON header line, then the segment document."""
    data, _ = sock.recvfrom(65536)
    header, _, body = data.decode().partition("\n")
    assert json.loads(header) == {"format": "json", "version": 1}
    document: dict[str, object] = json.loads(body)
    return document


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


def test_tracer_from_env_choices(daemon: socket.socket) -> None:
    assert tracer_from_env("calc", environ={}) is NO_TRACER
    assert tracer_from_env("calc", environ={"AWS_XRAY_DAEMON_ADDRESS": address(daemon),
                                            "XRAY_DISABLED": "true"}) is NO_TRACER
    assert isinstance(tracer_from_env("calc", environ={"AWS_XRAY_DAEMON_ADDRESS": address(daemon)}),
                      XRayTracer)
    # Found through discovery: the resolver turns the SRV name into an address.
    asked: list[str] = []

    def resolve(name: str) -> str | None:
        asked.append(name)
        return address(daemon)

    tracer = tracer_from_env("calc", resolve, environ={"XRAY_DAEMON_SERVICE": "_xray._udp"})
    assert isinstance(tracer, XRayTracer) and tracer.daemon_address == address(daemon)
    assert asked == ["_xray._udp"]
    # Not found: tracing off, the service still starts.
    assert tracer_from_env("calc", lambda _n: None,
                           environ={"XRAY_DAEMON_SERVICE": "_xray._udp"}) is NO_TRACER


def test_each_request_sends_a_segment(daemon: socket.socket) -> None:
    app = make_calc_app(None, XRayTracer("calc", address(daemon)), container_id="c1")
    incoming = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    response = app.handle(Request("GET", "/calc/1%2B1", headers={"X-Amzn-Trace-Id": incoming}))
    assert response.status == 200
    segment = received_documents(daemon)
    assert segment["name"] == "calc"
    assert segment["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert segment["parent_id"] == "53995c3f42cd8ad8"
    http = segment["http"]
    assert isinstance(http, dict)
    assert http["request"] == {"method": "GET", "url": "/calc/1%2B1"}
    assert http["response"] == {"status": 200}


def test_portal_propagates_the_trace(daemon: socket.socket) -> None:
    tracer = XRayTracer("portal", address(daemon))
    sent: list[dict[str, str]] = []

    def fetch(endpoint: Endpoint, path: str, headers: dict[str, str], timeout: float) -> Upstream:
        sent.append(headers)
        return Upstream(200, b'{"value": 2}', "application/json")

    class One:
        def endpoints(self, service: str) -> list[Endpoint]:
            return [Endpoint("h.zone.", "127.0.0.1", 9)]

    calc = Backend("calc", "_calc._tcp", One(), None, fetch=fetch, tracer=tracer)
    with tracer.segment("portal", Request("GET", "/calc/1+1")):
        calc.call("1+1")
    segment = received_documents(daemon)
    subsegments = segment["subsegments"]
    assert isinstance(subsegments, list) and subsegments[0]["name"] == "calc"
    header = sent[0]["X-Amzn-Trace-Id"]
    assert f"Root={segment['trace_id']}" in header
    assert f"Parent={subsegments[0]['id']}" in header


# --- identity --------------------------------------------------------------------------


def test_container_id_from_mountinfo(tmp_path: Path) -> None:
    cid = "4f1c" * 16
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        f"2 1 8:1 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n")
    assert identity.container_id(mountinfo) == cid
    mountinfo.write_text("1 0 0:1 / / rw - overlay overlay rw\n")
    assert identity.container_id(mountinfo) == socket.gethostname()
    assert identity.container_id(tmp_path / "missing") == socket.gethostname()


class FakeImds(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        assert self.path == "/latest/api/token"
        self._send(b"token-123")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != "token-123":
            self.send_response(401)
            self.end_headers()
            return
        assert self.path == "/latest/meta-data/instance-id"
        self._send(b"i-0abc")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_instance_id_sources() -> None:
    assert identity.instance_id({"INSTANCE_ID": "i-env"}) == "i-env"
    assert identity.instance_id({"AWS_EC2_METADATA_DISABLED": "true"}) == "unknown"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
        assert identity.instance_id({"AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint}) == "i-0abc"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    dead = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9/"}
    assert identity.instance_id(dead, timeout=0.5) == "unknown"

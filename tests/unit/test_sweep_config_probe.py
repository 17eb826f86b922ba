"""The sweep's settings (env -> SweepSettings) and its HTTP checks against real local servers.

The probe tests run tiny HTTP servers on 127.0.0.1 that answer 200 or 500, accept and never
answer (hang), answer a byte at a time (trickle), or are not there (refused), and time the
concurrent checks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import pytest

from ecssd_agent.agent.settings import SettingsError
from ecssd_agent.sweep.decide import Target
from ecssd_agent.sweep.probe import check, check_once, probe_all
from ecssd_agent.sweep.settings import SweepSettings
from tests.support.trickle import TrickleServer, bounded

T = TypeVar("T")

# --- settings ----------------------------------------------------------------------------


def test_defaults() -> None:
    s = SweepSettings.from_env({})
    assert s.clusters == () and s.domain == "servicediscovery.internal"
    assert (s.check_health, s.check_health_path, s.check_timeout, s.check_retries) == (
        True, "/health", 2.0, 3)
    assert (s.stop_unhealthy, s.dry_run, s.max_delete_fraction, s.grace_seconds) == (
        True, False, 0.5, 60.0)
    assert s.check_concurrency == 64


def test_every_variable() -> None:
    s = SweepSettings.from_env({
        "ECS_CLUSTERS": " a, arn:aws:ecs:us-east-1:1:cluster/b ,a,", "DOMAIN": "x.internal",
        "HOSTED_ZONE_ID": "Z1", "CHECK_HEALTH": "false", "CHECK_HEALTH_PATH": "/ping",
        "CHECK_TIMEOUT": "0.5", "CHECK_RETRIES": "2", "STOP_UNHEALTHY": "no", "DRY_RUN": "1",
        "MAX_DELETE_FRACTION": "0.25", "CHECK_CONCURRENCY": "8", "GRACE_SECONDS": "0",
    })
    assert s.clusters == ("a", "arn:aws:ecs:us-east-1:1:cluster/b")
    assert (s.domain, s.hosted_zone_id, s.check_health, s.check_health_path) == (
        "x.internal", "Z1", False, "/ping")
    assert (s.check_timeout, s.check_retries, s.stop_unhealthy, s.dry_run) == (0.5, 2, False, True)
    assert (s.max_delete_fraction, s.check_concurrency, s.grace_seconds) == (0.25, 8, 0.0)


@pytest.mark.parametrize(("env", "named"), [
    ({"CHECK_RETRIES": "three"}, "CHECK_RETRIES"),
    ({"CHECK_RETRIES": "0"}, "CHECK_RETRIES"),
    ({"DRY_RUN": "maybe"}, "DRY_RUN"),
    ({"CHECK_TIMEOUT": "nan"}, "CHECK_TIMEOUT"),
    ({"MAX_DELETE_FRACTION": "-1"}, "MAX_DELETE_FRACTION"),
    ({"CHECK_HEALTH_PATH": "health"}, "CHECK_HEALTH_PATH"),
    ({"CHECK_CONCURRENCY": "100000"}, "CHECK_CONCURRENCY"),
])
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        SweepSettings.from_env(env)


# --- probes ------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path in ("/health", "/ready") else 500
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hanging() -> Iterator[int]:
    """Accepts connections (the kernel backlog does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _refused_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_check_2xx_is_healthy_and_others_are_not(web: ThreadingHTTPServer, hanging: int) -> None:
    port = web.server_address[1]
    assert check("127.0.0.1", port, "/health", 1.0, 3).detail == "HTTP 200"
    assert check("127.0.0.1", port, "/health", 1.0, 3).healthy
    bad = check("127.0.0.1", port, "/broken", 1.0, 3)
    assert (bad.healthy, bad.detail) == (False, "HTTP 500")
    assert web.paths.count("/broken") == 3  # type: ignore[attr-defined]  # every attempt made
    refused = check("127.0.0.1", _refused_port(), "/health", 1.0, 2)
    assert (refused.healthy, refused.detail) == (False, "connection refused")
    started = time.monotonic()
    hung = check("127.0.0.1", hanging, "/health", 0.2, 2)
    assert (hung.healthy, hung.detail) == (False, "timed out after 0.2s")
    assert 0.35 < time.monotonic() - started < 2.0


def test_probe_all_is_concurrent(web: ThreadingHTTPServer, hanging: int) -> None:
    port = web.server_address[1]
    targets = [Target(f"hang{i}", "127.0.0.1", hanging, "/health") for i in range(20)]
    targets += [Target(f"ok{i}", "127.0.0.1", port, "/ready") for i in range(20)]
    started = time.monotonic()
    verdicts = probe_all(targets, timeout=2.0, attempts=2, concurrency=40)
    elapsed = time.monotonic() - started
    assert sum(v.healthy for v in verdicts.values()) == 20
    assert {k for k, v in verdicts.items() if not v.healthy} == {f"hang{i}" for i in range(20)}
    # 20 hung instances x 2 attempts x 2 s = 80 s serially; concurrently about 4 s. The
    # timeout is 2 s, not less, so a healthy answer is never late on a loaded machine (0.5 s
    # was, once in a full run); the bound stays far from serial.
    assert elapsed < 30.0, elapsed


def test_probe_all_deadline_leaves_slow_instances_unjudged(web: ThreadingHTTPServer,
                                                           hanging: int) -> None:
    port = web.server_address[1]
    targets = [Target("hang", "127.0.0.1", hanging, "/health"),
               Target("ok", "127.0.0.1", port, "/health")]
    started = time.monotonic()
    verdicts = probe_all(targets, timeout=2.0, attempts=3, concurrency=2,
                         deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 1.5
    assert set(verdicts) == {"ok"}  # the hung one has no verdict: not judged


@pytest.mark.parametrize("handler", ["handler", "task_events", "zone_writer_handler"])
def test_a_handler_builds_nothing_at_import(handler: str) -> None:
    """Each Lambda's runtime (settings, clients) is built at its first invocation: importing
    the handler with no configuration at all must work and create no client."""
    code = (f"import health_lambda.{handler} as h; "
            "assert h.runtime.current is None; assert 'botocore.client' not in str(h.__dict__)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOMAIN", "HOSTED_ZONE_ID", "HOST_TABLE")}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


def test_a_trickling_instance_times_out_on_the_whole_request_not_per_read() -> None:
    """One header byte every 0.3 s: every read succeeds, the request never completes."""
    with TrickleServer(interval=0.3) as slow:
        started = time.monotonic()
        verdict = bounded(5, lambda: check_once("127.0.0.1", slow.port, "/health", 1.0))
        elapsed = time.monotonic() - started
        assert (verdict.healthy, verdict.detail) == (False, "timed out after 1s")
        assert slow.bytes_sent >= 2  # it did trickle: a per-read timeout would never fire
        assert elapsed < 1.5, elapsed
        started = time.monotonic()
        verdicts = bounded(5, lambda: probe_all(
            [Target("slow", "127.0.0.1", slow.port, "/health")], timeout=0.5, attempts=2,
            concurrency=1))
        assert verdicts["slow"].detail == "timed out after 0.5s"
        assert time.monotonic() - started < 1.5  # 2 attempts x 0.5 s

"""The README's main command, ``python3 -m examples.demo``, run as a person runs it.

It must start everything, print the zone, a dig answer and two answers through the portal,
keep serving until Ctrl-C, then remove its containers and records and exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import docker
import pytest

from examples.demo.base import offline_rootfs_cached
from examples.demo.run import DEMO_LABEL, http_get
from tests.support.dockerd import DockerEngine
from tests.support.env import is_ci
from tests.support.poll import wait_for

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.python_image,
    # The offline base needs the debootstrap'd rootfs: ~40 s the first time, cached after.
    pytest.mark.skipif(not (is_ci() or os.environ.get("ECSSD_TEST_PYTHON_IMAGE") == "1"
                            or offline_rootfs_cached()),
                       reason="builds the offline python base (debootstrap, ~40 s once); runs with "
                              "make test, on CI, with ECSSD_TEST_PYTHON_IMAGE=1, or once it is cached"),
]


def test_demo_runs_until_ctrl_c_then_cleans_up(docker_engine: DockerEngine,
                                               tmp_path: Path) -> None:
    stderr_path = tmp_path / "demo.stderr"
    lines: list[str] = []
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.demo", "--offline", "--portal-port", "0",
             "--docker-host", docker_engine.base_url],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                                  daemon=True)
        reader.start()
        try:
            def running() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the demo exited with {proc.returncode}:\n"
                                         + "".join(lines) + stderr_path.read_text())
                return any(line.startswith("Running. Press Ctrl-C") for line in lines)

            wait_for(running, timeout=400, what="the demo to be running")
            output = "".join(lines)
            assert "_calc._tcp.servicediscovery.internal." in output
            assert "ANSWER SECTION" in output and "IN SRV\t1 1 " in output
            assert re.search(r'GET /calc/\(2\+2\)\*3 -> 200 \{"value": 12', output), output
            assert re.search(r"GET /time/Mon Jan 2 15:04:05 MST 2006 -> 200", output), output
            assert '"healthy": 4' in output  # the sweep probed the four instances
            match = re.search(r"Portal: +http://127\.0\.0\.1:(\d+)/", output)
            assert match, output
            portal = int(match.group(1))
            # Still serving while it waits for Ctrl-C.
            assert http_get(portal, "/calc/6*7")[1]["value"] == 42
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 0, output + stderr_path.read_text()
    assert "Removed the containers and 5 of 5 records (0 left)." in output
    client = docker.DockerClient(base_url=docker_engine.base_url)
    try:
        assert client.containers.list(all=True, filters={"label": DEMO_LABEL}) == []
    finally:
        client.close()
    with pytest.raises(OSError):
        http_get(portal, "/health", timeout=2)

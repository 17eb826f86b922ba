"""A private Docker engine for the test session (fixture ``docker_engine``).

Why private: the tests create, kill and restart containers and even restart the engine;
doing that to a developer's or CI host's own engine would be rude and flaky. Why these
dockerd flags (all seen necessary or useful on Debian 12's docker.io 20.10):

- ``--iptables=false --ip-forward=false``: leave the host firewall alone. Published
  ports still work because docker-proxy (the userland proxy) forwards 127.0.0.1:PORT.
- ``--storage-driver=vfs``: works on any filesystem, no overlay mounts to leak.
- ``--bridge ecssdN`` + ``--default-address-pool``: a bridge and subnets per session
  (see bridge.py), so parallel sessions never share ``docker0`` or container IPs.
- ``--config-file D/daemon.json`` (empty): ignore a host /etc/docker/daemon.json, whose
  directives would conflict with these flags.
- ``--containerd-namespace``: isolation even if dockerd attaches to a system containerd.
- ``--init``: containers get tini as PID 1, so SIGTERM stops them at once; without it a
  busybox httpd (PID 1 ignores SIGTERM) makes every ``docker stop`` and every engine
  stop wait 10 s.

Set ECSSD_TEST_DOCKER_HOST (e.g. unix:///run/docker.sock) to use an existing engine instead;
it cannot be stopped/restarted by the tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import docker
import pytest

from tests.support.bridge import STATE_DIR_PREFIX, Bridge, BridgeError, allocate_bridge
from tests.support.env import skip_or_fail
from tests.support.host import pids_with_cmdline, unmount_under
from tests.support.poll import WaitTimeout, wait_for

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


class EngineUnavailable(RuntimeError):
    """The engine could not be started or reached; the message says why."""


class DockerCLIError(subprocess.CalledProcessError):
    """A failed ``docker`` CLI call, with its stderr in the message."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM dockerd if pytest dies without cleanup."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DockerEngine:
    """A Docker engine the tests may use freely: private (``start_private_engine``) or external."""

    def __init__(self, base_url: str, daemon: PrivateDaemon | None = None) -> None:
        self.base_url = base_url
        self._daemon = daemon
        self._docker = shutil.which("docker")

    @property
    def restartable(self) -> bool:
        return self._daemon is not None

    @property
    def stopped(self) -> bool:
        """True between ``stop()`` and ``start()`` of a private engine."""
        return self._daemon is not None and not self._daemon.running

    @property
    def bridge_network(self) -> str | None:
        """Subnet of the default bridge (private engine only), e.g. 10.213.3.0/24."""
        return str(self._daemon.bridge.network) if self._daemon else None

    def client(self, timeout: int = 60) -> docker.DockerClient:
        """A new Python SDK client for this engine (API version negotiated)."""
        return docker.DockerClient(base_url=self.base_url, version="auto", timeout=timeout)

    def env(self) -> dict[str, str]:
        """Env vars pointing a subprocess (agent, docker CLI) at this engine."""
        return {"DOCKER_HOST": self.base_url}

    def cli(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        input: bytes | None = None,
        stdin: IO[bytes] | int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker -H <this engine> *args``; stdout/stderr decoded as text."""
        if self._docker is None:
            raise EngineUnavailable("docker CLI not found on PATH (apt-get install docker.io)")
        cmd = [self._docker, "-H", self.base_url, *args]
        if input is None and stdin is None:
            stdin = subprocess.DEVNULL  # never read pytest's stdin
        proc = subprocess.run(
            cmd, input=input, stdin=stdin, capture_output=True, timeout=timeout, check=False
        )
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if check and proc.returncode != 0:
            raise DockerCLIError(proc.returncode, cmd, out, err)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def answers(self) -> bool:
        """True when ``docker info`` succeeds against this engine."""
        try:
            return self.cli("info", "--format", "{{.ServerVersion}}", check=False, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """Stop the engine in place (containers stop; dirs, images and bridge stay)."""
        self._require_daemon().stop()

    def start(self) -> None:
        """Start the engine again after ``stop()``, with the same socket and data."""
        self._require_daemon().start(self)

    def close(self) -> None:
        """End of session: stop and remove everything a private engine created."""
        if self._daemon is not None:
            self._daemon.close()

    def _require_daemon(self) -> PrivateDaemon:
        if self._daemon is None:
            pytest.skip("the engine is external (ECSSD_TEST_DOCKER_HOST); it cannot be restarted")
        return self._daemon


class PrivateDaemon:
    """One dockerd process tree in its own session, rooted in a short /tmp directory."""

    def __init__(self, root: Path, bridge: Bridge) -> None:
        self.root = root
        self.bridge = bridge
        self.socket = root / "docker.sock"
        self.log = root / "dockerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        (root / "daemon.json").write_text("{}\n")

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise EngineUnavailable("dockerd not found (apt-get install docker.io)")
        ns = f"ecssd-{self.bridge.slot}"
        return [
            dockerd,
            "--iptables=false",
            "--ip-forward=false",
            "--storage-driver=vfs",
            f"--data-root={self.root / 'root'}",
            f"--exec-root={self.root / 'exec'}",
            f"--host={self.base_url}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--config-file={self.root / 'daemon.json'}",
            f"--bridge={self.bridge.name}",
            f"--default-address-pool={self.bridge.address_pool}",
            f"--containerd-namespace={ns}",
            f"--containerd-plugins-namespace={ns}-plugins",
            "--init",
            "--log-level=warn",
        ]

    def start(self, engine: DockerEngine | None = None) -> None:
        """Launch dockerd and wait until ``docker info`` answers (or raise with the log)."""
        if self.running:
            return
        cmd = self.command()
        main = threading.main_thread()
        with self.log.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: own session and process group
                # PDEATHSIG fires when the forking *thread* exits: only from the main thread.
                preexec_fn=_die_with_parent if threading.current_thread() is main else None,
            )
        probe = engine or DockerEngine(self.base_url)

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise EngineUnavailable(f"dockerd exited with {self._proc.returncode}:\n{self.log_tail()}")
            return probe.answers()

        try:
            wait_for(ready, timeout=READY_TIMEOUT, what="dockerd to answer `docker info`")
        except WaitTimeout as exc:
            self.stop()
            raise EngineUnavailable(f"{exc}\n{self.log_tail()}") from exc

    def stop(self) -> None:
        """SIGTERM dockerd (it stops containers and containerd), SIGKILL after a deadline."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # pgid == pid (setsid)
                proc.wait(timeout=STOP_TIMEOUT)
        self._kill_leftovers()

    def close(self) -> None:
        try:
            self.stop()
            unmount_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
        finally:
            self.bridge.close()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no dockerd log)"
        return "\n".join(text.splitlines()[-lines:])

    def _kill_leftovers(self) -> None:
        """Kill processes still naming our exec-root (containerd shims after a SIGKILL).

        The needle is the exec-root, not the socket path, so an agent under test that was
        given ``unix://D/docker.sock`` on its command line survives an engine restart.
        """
        for pid in pids_with_cmdline(f"{self.root / 'exec'}/".encode()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_private_engine() -> DockerEngine:
    """Start a private dockerd; raise EngineUnavailable with the reason if impossible."""
    if os.geteuid() != 0:
        raise EngineUnavailable("a private dockerd needs root")
    for tool in ("dockerd", "docker", "ip"):
        if shutil.which(tool) is None:
            raise EngineUnavailable(f"{tool} not found (run scripts/setup.sh)")
    # Short on purpose: unix socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix=STATE_DIR_PREFIX, dir="/tmp"))
    try:
        bridge = allocate_bridge(owner=root)
    except BridgeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise EngineUnavailable(f"cannot create the engine's bridge: {exc}") from exc
    daemon = PrivateDaemon(root, bridge)
    engine = DockerEngine(daemon.base_url, daemon)
    try:
        daemon.start(engine)
    except BaseException:
        daemon.close()
        raise
    return engine


def connect_external_engine(base_url: str) -> DockerEngine:
    engine = DockerEngine(base_url)
    if not engine.answers():
        raise EngineUnavailable(f"ECSSD_TEST_DOCKER_HOST={base_url} does not answer `docker info`")
    return engine


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The session's Docker engine: private dockerd, or ECSSD_TEST_DOCKER_HOST if set.

    Skips (fails under ECSSD_REQUIRE_DOCKER=1) when no engine can be had; pytest caches
    that outcome, so later tests skip at once instead of retrying the start.
    """
    external = os.environ.get("ECSSD_TEST_DOCKER_HOST")
    try:
        engine = connect_external_engine(external) if external else start_private_engine()
    except EngineUnavailable as exc:
        reason = f"no Docker engine: {exc}"
    else:
        reason = ""
    if reason:  # outside the except block: no "during handling..." noise in the report
        skip_or_fail(reason)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(autouse=True)
def _engine_running_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stopped the engine and failed before ``start()`` must not take the
    engine down for the rest of the session: restart it after such a test."""
    yield
    if "docker_engine" in request.fixturenames:
        engine: DockerEngine = request.getfixturevalue("docker_engine")
        if engine.stopped:
            engine.start()

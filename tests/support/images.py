"""Offline images and container helpers.

No registry is reachable (and none may be contacted), so images are imported from
Debian's own bits: ``ecssd-busybox:latest`` from the busybox-static binary (< 1 s), and
``ecssd-python:3`` from a debootstrap'd rootfs whose tarball is cached across runs
(35-45 s once, then a 2-5 s ``docker import``). Every ``docker run`` uses ``--pull never``:
a missing image must fail fast, not try a public registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.dockerd import DockerEngine
from tests.support.host import unmount_under
from tests.support.sources import debian_mirror

BUSYBOX_IMAGE = "ecssd-busybox:latest"
PYTHON_IMAGE = "ecssd-python:3"
HEALTH_PORT = 8081
#: Default container command: a static file server answering GET /health with "ok".
HTTPD_CMD: tuple[str, ...] = ("httpd", "-f", "-p", str(HEALTH_PORT), "-h", "/www")
BUSYBOX_APPLETS = (
    "sh",
    "sleep",
    "httpd",
    "echo",
    "cat",
    "nc",
    "mkdir",
    "true",
    "false",
    "wget",
    "ls",
    "ps",
    "kill",
    "env",
    "hostname",
)
DEBIAN_SUITE = "bookworm"


def cache_dir() -> Path:
    """Persistent cache ($ECSSD_CACHE or ~/.cache/ecssd): survives test sessions."""
    path = Path(os.environ.get("ECSSD_CACHE") or Path.home() / ".cache" / "ecssd")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _cache_lock(name: str) -> Iterator[None]:
    """Serialize builders of one cache entry across concurrent test sessions."""
    with open(cache_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def image_exists(engine: DockerEngine, name: str) -> bool:
    return engine.cli("image", "inspect", name, check=False).returncode == 0


# --- busybox ---------------------------------------------------------------------------


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP segment (no dynamic loader needed)."""
    with path.open("rb") as handle:
        head = handle.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            return False
        end = "<" if head[5] == 1 else ">"
        if head[4] == 2:  # ELFCLASS64
            (phoff,) = struct.unpack_from(end + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
        else:  # ELFCLASS32
            (phoff,) = struct.unpack_from(end + "I", head, 0x1C)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
        for index in range(phnum):
            handle.seek(phoff + index * phentsize)
            (p_type,) = struct.unpack(end + "I", handle.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def _dpkg_installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() == "installed"


def static_busybox() -> Path:
    """Path to a static busybox: the installed busybox-static, else a cached download.

    The dynamic ``busybox`` package also ships /bin/busybox, hence the ELF check: a
    dynamic binary would not run in an image with no libc.
    """
    if _dpkg_installed("busybox-static"):
        for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
            if candidate.exists() and _is_static_elf(candidate):
                return candidate
    cached = cache_dir() / "busybox-static" / "bin" / "busybox"
    with _cache_lock("busybox-static"):
        if not cached.exists():
            with tempfile.TemporaryDirectory(prefix="ecssd-bb-") as tmp:
                subprocess.run(
                    ["apt-get", "download", "busybox-static"],
                    cwd=tmp,
                    capture_output=True,
                    check=True,
                    timeout=300,
                )
                (deb,) = Path(tmp).glob("busybox-static_*.deb")
                subprocess.run(["dpkg", "-x", str(deb), str(cached.parent.parent)], check=True, timeout=60)
    if not _is_static_elf(cached):
        raise RuntimeError(f"{cached} is not a static executable")
    return cached


def build_busybox_image(engine: DockerEngine, name: str = BUSYBOX_IMAGE) -> str:
    """Import a tiny image: /bin/busybox + applet links, /www/health -> "ok"."""
    with tempfile.TemporaryDirectory(prefix="ecssd-bbroot-") as tmp:
        root = Path(tmp)
        for sub in ("bin", "www", "tmp", "etc"):
            (root / sub).mkdir()
        (root / "tmp").chmod(0o1777)
        shutil.copy2(static_busybox(), root / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        (root / "www" / "health").write_text("ok\n")
        tar_path = root.with_suffix(".tar")
        try:
            with tarfile.open(tar_path, "w") as tar:
                tar.add(root, arcname=".")
            with tar_path.open("rb") as tar_file:
                engine.cli(
                    "import",
                    "--change",
                    f"CMD {json.dumps(list(HTTPD_CMD))}",
                    "--change",
                    "ENV PATH=/bin",
                    "-",
                    name,
                    stdin=tar_file,
                )
        finally:
            tar_path.unlink(missing_ok=True)
    return name


def ensure_busybox_image(engine: DockerEngine) -> str:
    if not image_exists(engine, BUSYBOX_IMAGE):
        build_busybox_image(engine)
    return BUSYBOX_IMAGE


# --- python ----------------------------------------------------------------------------


def python_rootfs_tarball(suite: str = DEBIAN_SUITE) -> Path:
    """A cached tarball of ``debootstrap --variant=minbase --include=python3 <suite>``.

    Built once per cache dir (~35 s, ~260 MB) from the Debian mirror apt already uses.
    """
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    final = cache_dir() / f"python3-{suite}-{arch}-rootfs.tar"
    with _cache_lock(final.name):
        if final.exists():
            return final
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            raise RuntimeError("building the python image needs root and debootstrap")
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
        try:
            rootfs = work / "rootfs"
            log = work / "debootstrap.log"
            cmd = [
                "debootstrap",
                "--variant=minbase",
                "--include=python3",
                suite,
                str(rootfs),
                debian_mirror(suite),
            ]
            with log.open("wb") as out:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1200, check=False)
            if proc.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / junk).glob("*"):
                    if item.is_file():
                        item.unlink()
            partial = work / "rootfs.tar"
            subprocess.run(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
                check=True,
                timeout=600,
            )
            os.replace(partial, final)
        finally:
            unmount_under(work)  # debootstrap mounts /proc and /sys in the target
            shutil.rmtree(work, ignore_errors=True)
    return final


def python_image(engine: DockerEngine, name: str = PYTHON_IMAGE) -> str:
    """``ecssd-python:3`` (Debian python3) in ``engine``, importing the cached rootfs."""
    if not image_exists(engine, name):
        with python_rootfs_tarball().open("rb") as tar_file:
            engine.cli("import", "--change", 'CMD ["python3"]', "-", name, stdin=tar_file, timeout=300)
    return name


# --- containers ------------------------------------------------------------------------


def run_container(
    engine: DockerEngine,
    *,
    image: str = BUSYBOX_IMAGE,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    ports: Sequence[str] | None = None,
    network: str | None = None,
    cmd: Sequence[str] | None = None,
    name: str | None = None,
    extra_args: Sequence[str] = (),
) -> str:
    """``docker run -d --pull never ...``; returns the full container id.

    ``ports`` are ``docker run -p`` specs, e.g. ``["127.0.0.1::8081", "127.0.0.1::53/udp"]``
    (host port chosen by the engine: read it back with ``host_port``). The default
    command serves /www on port 8081, so GET /health answers 200 "ok".
    """
    args = ["run", "-d", "--pull", "never"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    for key, value in (labels or {}).items():
        args += ["--label", f"{key}={value}"]
    for spec in ports or ():
        args += ["-p", spec]
    if network:
        args += ["--network", network]
    if name:
        args += ["--name", name]
    args += [*extra_args, image, *(cmd if cmd is not None else HTTPD_CMD)]
    # stderr may carry "WARNING: IPv4 forwarding is disabled": expected (--ip-forward=false).
    return engine.cli(*args).stdout.strip().splitlines()[-1]


def host_port(engine: DockerEngine, container_id: str, port: str = f"{HEALTH_PORT}/tcp") -> int:
    """The host port published for ``port`` (e.g. "8081/tcp", "53/udp") of a container."""
    out = engine.cli("port", container_id, port).stdout
    for line in out.splitlines():  # "127.0.0.1:32768" (and maybe "[::]:32768")
        host, _, number = line.strip().rpartition(":")
        if host and number.isdigit():
            return int(number)
    raise LookupError(f"{container_id[:12]} publishes no host port for {port}: {out!r}")


def container_ip(engine: DockerEngine, container_id: str) -> str:
    """The container's address on its first network."""
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    return engine.cli("inspect", "-f", fmt, container_id).stdout.split()[0]


class Containers:
    """Starts containers for one test and removes them afterwards (test isolation)."""

    def __init__(self, engine: DockerEngine, image: str) -> None:
        self.engine = engine
        self.image = image
        self.ids: list[str] = []

    def run(self, **kwargs: Any) -> str:
        """Same keywords as ``run_container``; the image defaults to busybox."""
        kwargs.setdefault("image", self.image)
        cid = run_container(self.engine, **kwargs)
        self.ids.append(cid)
        return cid

    def remove_all(self) -> None:
        if self.ids:
            if self.engine.stopped:  # the test stopped the engine and failed before start()
                self.engine.start()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.engine.cli("rm", "-f", "-v", *self.ids, check=False, timeout=60)
            self.ids.clear()


@pytest.fixture(scope="session")
def busybox_image(docker_engine: DockerEngine) -> str:
    """Name of the busybox image in the session engine (built only if missing)."""
    return ensure_busybox_image(docker_engine)


@pytest.fixture
def containers(docker_engine: DockerEngine, busybox_image: str) -> Iterator[Containers]:
    """``containers.run(...)`` like ``run_container``; all removed when the test ends."""
    factory = Containers(docker_engine, busybox_image)
    try:
        yield factory
    finally:
        factory.remove_all()

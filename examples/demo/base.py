"""The examples' base image: ``python:3.12-slim`` when it can be had, else one built offline.

Offline (no registry answers), the image comes from the Debian rootfs the test suite
already builds and caches (``debootstrap --variant=minbase --include=python3``, see
tests/support/images.py), cut down to what a Python service needs: the interpreter, its
standard library, the shared libraries they link (found by reading the ELF files'
DT_NEEDED entries), and a few files of /etc. Why cut it: the engines this project starts
use the vfs storage driver, which copies an image's whole filesystem for every container
and every build step, so 8,200 files and 161 MB per copy (the full rootfs) made a demo
start take minutes; the slim rootfs is about a quarter of that.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import posixpath
import socket
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

log = logging.getLogger("examples.demo")

REGISTRY_IMAGE = "python:3.12-slim"
OFFLINE_IMAGE = "ecssd-python-slim:3"
REGISTRY_HOST = "registry-1.docker.io"
PYTHON = "usr/bin/python3.11"
STDLIB = "usr/lib/python3.11/"
#: Parts of the standard library no service uses (GUI, the 2to3 tool, pip's bootstrap).
STDLIB_SKIP = ("idlelib/", "tkinter/", "turtledemo/", "ensurepip/", "lib2to3/", "pydoc_data/",
               "test/", "config-3.11")
ETC_FILES = ("etc/passwd", "etc/group", "etc/nsswitch.conf", "etc/ld.so.cache", "etc/ld.so.conf",
             "etc/os-release", "etc/debian_version", "etc/gai.conf", "usr/bin/python3")
ETC_DIRS = ("etc/ld.so.conf.d/", "etc/python3/", "etc/python3.11/")
_DT_NEEDED = 1
_SHT_DYNAMIC = 6


class BaseImageError(RuntimeError):
    pass


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def registry_reachable(host: str = REGISTRY_HOST, timeout: float = 3.0) -> bool:
    """Whether Docker Hub answers a TCP connection (a failed name lookup answers at once)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def needed_libraries(elf: bytes) -> list[str]:
    """The DT_NEEDED sonames of a 64-bit little-endian ELF file ([] for anything else)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    names: list[str] = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != _SHT_DYNAMIC:
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, entsize or 16):
            tag, value = struct.unpack_from("<qQ", elf, pos)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                start = strtab_offset + value
                names.append(elf[start:elf.index(b"\0", start)].decode())
    return names


class Rootfs:
    """Random access to a rootfs tarball's members, with symlinks resolved like the kernel."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members = {m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers()}
        self.members.pop(".", None)
        self.members.pop("", None)

    def resolve(self, path: str, used: set[str], depth: int = 0) -> str | None:
        """``path`` with every symlink followed; the links on the way are added to ``used``."""
        if depth > 40:
            return None
        parts = [p for p in path.strip("/").split("/") if p]
        current = ""
        for index, part in enumerate(parts):
            current = posixpath.join(current, part) if current else part
            member = self.members.get(current)
            if member is None:
                return None
            if member.issym():
                used.add(current)
                base = "" if member.linkname.startswith("/") else posixpath.dirname(current)
                target = posixpath.normpath(posixpath.join("/", base, member.linkname))
                rest = "/".join(parts[index + 1:])
                return self.resolve(posixpath.join(target, rest) if rest else target, used,
                                    depth + 1)
        return current

    def read(self, name: str) -> bytes:
        handle = self.tar.extractfile(self.members[name])
        return handle.read() if handle is not None else b""

    def library_dirs(self) -> list[str]:
        dirs = sorted({posixpath.dirname(n) for n in self.members if n.endswith("/libc.so.6")})
        return [*dirs, "usr/lib", "lib"]


def _closure(rootfs: Rootfs) -> set[str]:
    """Every member the slim image needs (files, the symlinks leading to them)."""
    def wanted(name: str, member: tarfile.TarInfo) -> bool:
        if name.startswith(STDLIB):
            return not any(name[len(STDLIB):].startswith(skip) for skip in STDLIB_SKIP)
        if name in ETC_FILES or any(name.startswith(d) for d in ETC_DIRS):
            return True
        return member.issym() and "/" not in name  # merged-/usr links: /bin, /lib, /lib64

    keep = {name for name, member in rootfs.members.items() if wanted(name, member)}
    keep.add(PYTHON)
    elves = [PYTHON, *(n for n in keep if n.endswith(".so") and rootfs.members[n].isfile())]
    interpreter = rootfs.resolve("lib64/ld-linux-x86-64.so.2", keep)
    if interpreter:
        keep.add(interpreter)
    seen: set[str] = set()
    while elves:
        name = elves.pop()
        if name in seen:
            continue
        seen.add(name)
        for soname in needed_libraries(rootfs.read(name)):
            for directory in rootfs.library_dirs():
                found = rootfs.resolve(f"{directory}/{soname}", keep)
                if found:
                    keep.add(found)
                    elves.append(found)
                    break
            else:
                raise BaseImageError(f"{name} needs {soname}, which the rootfs does not have")
    # Symlinks followed inside the stdlib (sitecustomize.py -> /etc/...) need their targets.
    for name in list(keep):
        if rootfs.members[name].issym():
            target = rootfs.resolve(name, keep)
            if target:
                keep.add(target)
    return keep


def slim_rootfs(source: Path, dest: Path) -> Path:
    """Write the slim rootfs tarball ``dest`` from the full rootfs tarball ``source``."""
    with tarfile.open(source) as tar:
        rootfs = Rootfs(tar)
        keep = _closure(rootfs)
        dirs = {posixpath.dirname(n) for n in keep}
        while "" not in dirs:
            dirs |= {posixpath.dirname(d) for d in dirs}
        dirs.discard("")
        with tarfile.open(dest, "w") as out:
            for name in sorted(dirs | keep):
                member = rootfs.members.get(name)
                if member is None or (name in dirs and not member.isdir() and name not in keep):
                    continue
                clone = copy.copy(member)
                clone.name = name
                handle = tar.extractfile(member) if member.isfile() else None
                out.addfile(clone, handle)
            tmp = tarfile.TarInfo("tmp")
            tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
            out.addfile(tmp)
    return dest


def offline_rootfs_cached() -> bool:
    """Whether the Debian rootfs is already cached (else building it takes ~40 s once)."""
    from tests.support.images import cache_dir

    return any(cache_dir().glob("python3-*-rootfs.tar"))


def build_offline_image(client: docker.DockerClient, name: str = OFFLINE_IMAGE) -> str:
    """Import the slim Python image into ``client``'s engine (the rootfs is cached)."""
    from tests.support.images import python_rootfs_tarball  # the cached debootstrap rootfs

    source = python_rootfs_tarball()
    with tempfile.TemporaryDirectory(prefix="ecssd-slim-") as tmp:
        slim = slim_rootfs(source, Path(tmp) / "rootfs.tar")
        repository, _, tag = name.partition(":")
        with slim.open("rb") as data:
            client.api.import_image_from_data(
                data.read(), repository=repository, tag=tag or "latest",
                changes=['CMD ["python3"]',
                         "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                         "ENV LANG=C.UTF-8"])
    if not image_exists(client, name):
        raise BaseImageError(f"importing {name} did not create it")
    return name


@contextlib.contextmanager
def _quiet_timeout(client: docker.DockerClient, seconds: float) -> Iterator[None]:
    previous = client.api.timeout
    client.api.timeout = seconds
    try:
        yield
    finally:
        client.api.timeout = previous


def base_image(client: docker.DockerClient, wanted: str | None = None, offline: bool = False,
               pull_timeout: float = 180.0) -> str:
    """The base image to build on, making sure it is in the engine.

    ``wanted`` (``--base-image``) must exist or be pullable. Otherwise ``python:3.12-slim``
    when the engine has it or can pull it (skipped with ``offline`` or when the registry
    does not answer), else the offline image.
    """
    candidates = [wanted] if wanted else [REGISTRY_IMAGE]
    for image in candidates:
        if image_exists(client, image):
            return image
        if offline or not registry_reachable():
            continue
        log.info("pulling %s", image)
        try:
            with _quiet_timeout(client, pull_timeout):
                client.images.pull(image)
            return image
        except (docker.errors.APIError, OSError) as exc:
            log.warning("cannot pull %s: %s", image, exc)
    if wanted:
        raise BaseImageError(f"the base image {wanted} is neither in the engine nor pullable")
    if not image_exists(client, OFFLINE_IMAGE):
        log.info("no registry: building %s from Debian packages (cached after the first time)",
                 OFFLINE_IMAGE)
        build_offline_image(client)
    return OFFLINE_IMAGE


"""A Linux bridge and address pool of its own for each private Docker engine.

Why: dockerd's default bridge is the shared ``docker0`` (172.17.0.0/16). Two test sessions
(or a test session and a system dockerd) would share it and hand out the same container
IPs. Each session therefore takes a numbered slot N, guarded by a lock file held for the
whole session, and gets bridge ``ecssdN`` with 10.213.N.1/24 for the default network plus
10.214.N.0/24 (carved into /28s) for user-defined networks.

A session killed with SIGKILL leaves its bridge and state directory behind (its dockerd
stops itself, see dockerd.py). The next allocation of that slot reclaims them, but only
when it can prove they are ours and dead: the slot lock is free, the link carries exactly
our address, no live process names the bridge, and the state dir is the one recorded in
the lock file. Anything else that overlaps a slot's subnets makes the slot be skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.host import pids_with_cmdline, unmount_under

LOCK_DIR = Path("/tmp/ecssd-locks")
STATE_DIR_PREFIX = "ecd"  # /tmp/ecd<8 random characters>, see dockerd.py
BRIDGE_NET = "10.213.{n}.0/24"
POOL_NET = "10.214.{n}.0/24"
SLOTS = range(1, 255)


class BridgeError(RuntimeError):
    """No bridge could be created (no ``ip``, not root, no free slot)."""


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)
    if proc.returncode != 0:
        raise BridgeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 route destination on the host (all tables), to avoid overlaps."""
    nets = []
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


@dataclass
class Bridge:
    """A bridge owned by this process; ``close()`` deletes it and releases the slot."""

    slot: int
    _lock_fd: int = field(repr=False)

    @property
    def name(self) -> str:
        return f"ecssd{self.slot}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(BRIDGE_NET.format(n=self.slot))

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.network.hosts())

    @property
    def address_pool(self) -> str:
        """Value for dockerd --default-address-pool (user-defined networks)."""
        return f"base={POOL_NET.format(n=self.slot)},size=28"

    def subnets(self) -> list[ipaddress.IPv4Network]:
        return [self.network, ipaddress.IPv4Network(POOL_NET.format(n=self.slot))]

    def close(self) -> None:
        if _link_exists(self.name):
            _ip("link", "del", self.name)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _record_owner(self, owner: Path) -> None:
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(owner).encode(), 0)

    def _recorded_owner(self) -> Path | None:
        text = os.pread(self._lock_fd, 4096, 0).decode(errors="replace").strip()
        return Path(text) if text else None


def _try_lock(slot: int) -> int | None:
    fd = os.open(LOCK_DIR / f"bridge-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _reclaim_if_stale(bridge: Bridge) -> bool:
    """Delete a dead session's bridge (and state dir) for this locked slot; True if done."""
    link = json.loads(_ip("-j", "-4", "addr", "show", "dev", bridge.name) or "[]")
    addrs = {f"{a['local']}/{a['prefixlen']}" for entry in link for a in entry.get("addr_info", [])}
    if addrs != {f"{bridge.gateway}/{bridge.network.prefixlen}"}:
        return False  # not made by us
    if pids_with_cmdline(f"--bridge={bridge.name}\0".encode()):
        return False  # a dockerd still uses it
    _ip("link", "del", bridge.name)
    owner = bridge._recorded_owner()
    if owner and owner.parent == Path("/tmp") and owner.name.startswith(STATE_DIR_PREFIX):
        with contextlib.suppress(OSError):
            unmount_under(owner)
            shutil.rmtree(owner, ignore_errors=True)
    return True


def allocate_bridge(owner: Path) -> Bridge:
    """Create and bring up a bridge in the first free slot; raise BridgeError if none.

    ``owner`` (the session's state dir) is recorded in the slot's lock file, so that a
    later session can clean it up if this one dies without teardown.
    """
    LOCK_DIR.mkdir(mode=0o755, exist_ok=True)
    for slot in SLOTS:
        fd = _try_lock(slot)
        if fd is None:
            continue
        bridge = Bridge(slot, fd)
        usable = not _link_exists(bridge.name) or _reclaim_if_stale(bridge)
        if usable:
            host_nets = _host_networks()
            usable = not any(w.overlaps(h) for w in bridge.subnets() for h in host_nets)
        if not usable:
            os.close(fd)
            continue
        try:
            _ip("link", "add", "name", bridge.name, "type", "bridge")
            _ip("addr", "add", f"{bridge.gateway}/{bridge.network.prefixlen}", "dev", bridge.name)
            _ip("link", "set", bridge.name, "up")
        except BridgeError:
            bridge.close()
            raise
        bridge._record_owner(owner)
        return bridge
    raise BridgeError("no free bridge slot (10.213.N.0/24 and 10.214.N.0/24 all taken)")

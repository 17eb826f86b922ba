"""Host-level cleanup helpers: find our processes by pid, unmount our leftovers.

Cleanup never goes by process name: a process is ours when its command line names a
directory or bridge that this test infrastructure created with a unique name.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

_MNT_DETACH = 2


def pids_with_cmdline(needle: bytes) -> list[int]:
    """Pids whose NUL-separated command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def unmount_under(path: Path) -> None:
    """Lazily unmount everything mounted below ``path`` (deepest first), so rmtree works."""
    prefix = f"{path}/"
    try:
        with open("/proc/self/mountinfo") as info:
            mounts = [line.split()[4] for line in info]
    except OSError:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for mount_point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        libc.umount2(mount_point.encode(), _MNT_DETACH)

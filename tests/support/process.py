"""Stopping a server process a test started: SIGTERM (the way operators and systemd stop it,
so its shutdown path runs), then SIGKILL if it outlives the deadline."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop ``process`` if it still runs; drains its pipes, so a chatty one cannot block."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=timeout)

"""Run the real ``ecssd-agent`` command as a subprocess, the way an operator or systemd does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def agent_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m ecssd_agent``."""
    script = Path(sys.executable).parent / "ecssd-agent"
    if script.exists():
        return [str(script)]
    found = shutil.which("ecssd-agent")
    return [found] if found else [sys.executable, "-m", "ecssd_agent"]


def run_agent(args: Sequence[str], env: Mapping[str, str], timeout: float = 120.0
              ) -> subprocess.CompletedProcess[str]:
    """Run one agent command to completion with JSON logs, so tests can read its summary."""
    return subprocess.run([*agent_command(), "--log-format", "json", *args], env=dict(env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def log_lines(stderr: str) -> list[dict[str, object]]:
    lines = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The ``sync done`` / ``remove done`` line: changes, change requests, AWS requests."""
    for line in reversed(log_lines(result.stderr)):
        if "aws_requests" in line:
            return line
    raise AssertionError(f"no summary line (exit {result.returncode}):\n{result.stderr}")


def subprocess_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    env = {**os.environ, **base, **extra}
    env.pop("ECSSD_SYNC", None)
    env.pop("ECSSD_REMOVE", None)
    return env

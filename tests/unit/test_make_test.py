"""``make test``, the README's test command, runs everything CI runs: CI runs ``make test``
too, and the target turns on the tests that build the offline Python base image."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_make_test() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in run


def test_make_test_runs_the_python_image_tests() -> None:
    recipe = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True).stdout
    pytest_line = next(line for line in recipe.splitlines() if "-m pytest" in line)
    assert "ECSSD_TEST_PYTHON_IMAGE=1" in pytest_line

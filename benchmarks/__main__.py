"""``python3 -m benchmarks [--quick]``: run every benchmark, print one table, write RESULTS.md.

Every ``benchmarks/bench_*.py`` module is imported and its ``run(quick)`` called, one after
the other; a module that cannot be imported, raises, or returns malformed rows becomes an
error row and the others still run. The exit status is 1 when any module failed.

A row is a dict of COLUMNS; a row that also has ``headline: True`` and ``held`` (whether the
value met its goal) is repeated in the short headline table at the top of RESULTS.md. Plots a
module drew during the run (``benchmarks/plots/*.png``) are shown below the headline.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
PLOTS = HERE / "plots"
COLUMNS = ("area", "metric", "value", "unit", "goal", "note")


def modules() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def error_row(module: str, stage: str, exc: BaseException) -> dict[str, Any]:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return {"area": module.removeprefix("bench_"), "metric": f"ERROR ({stage} {module})",
            "value": "error", "unit": "", "goal": "", "note": last}


def checked(module: str, rows: Any) -> list[dict[str, Any]]:
    """Rows as the contract says, else one error row naming what is wrong."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"run() returned {type(rows).__name__}, not a list of dicts")
    for item in rows:
        missing = [c for c in COLUMNS if c not in item]
        if missing:
            raise TypeError(f"a row lacks {', '.join(missing)}: {item!r}")
        if item.get("headline") and not isinstance(item.get("held"), bool):
            raise TypeError(f"a headline row needs held (True or False): {item!r}")
    return rows


def run_module(module: str, quick: bool) -> tuple[list[dict[str, Any]], float, bool]:
    """(rows, seconds, ok) for one module; never raises."""
    started = time.perf_counter()
    try:
        loaded = importlib.import_module(f"benchmarks.{module}")
    except Exception as exc:
        return [error_row(module, "import", exc)], time.perf_counter() - started, False
    try:
        rows = checked(module, loaded.run(quick=quick))
    except Exception as exc:
        logging.getLogger("benchmarks").debug("%s failed", module, exc_info=True)
        return [error_row(module, "run", exc)], time.perf_counter() - started, False
    return rows, time.perf_counter() - started, True


# --- the machine --------------------------------------------------------------------------

def _meminfo_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def docker_engine_version() -> str:
    """The engine the benchmarks use: ECSSD_TEST_DOCKER_HOST, else the local default socket."""
    url = os.environ.get("ECSSD_TEST_DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        import docker

        client = docker.DockerClient(base_url=url, timeout=5)
        try:
            return f"{client.version().get('Version', '?')} ({url})"
        finally:
            client.close()
    except Exception as exc:
        return f"not reachable at {url} ({type(exc).__name__})"


def machine() -> dict[str, str]:
    return {
        "cores": str(os.cpu_count()),
        "memory": _meminfo_gib(),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?",
    }


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "boto3": _version("boto3"),
            "botocore": _version("botocore"), "moto": _version("moto"),
            "dnspython": _version("dnspython"), "docker (SDK)": _version("docker"),
            "docker engine": docker_engine_version()}


# --- output -------------------------------------------------------------------------------

def cell(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def headline(rows: Sequence[dict[str, Any]]) -> str:
    """One line per headline figure: its value against its goal, and whether it held."""
    lines = ["| area | figure | value | goal | held |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join((cell(r["area"]), cell(r["metric"]),
                                 cell(f"{cell(r['value'])} {r['unit']}".strip()), cell(r["goal"]),
                                 "yes" if r["held"] else "**no**")) + " |"
              for r in rows if r.get("headline")]
    return "\n".join(lines)


def plots_drawn(since: datetime.datetime, directory: Path = PLOTS) -> list[Path]:
    """The PNGs written into ``directory`` during this run (older ones are not its figures)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.png") if p.stat().st_mtime >= since.timestamp())


def report(rows: Sequence[dict[str, Any]], timings: dict[str, float], failed: list[str],
           quick: bool, started: datetime.datetime, plots: Sequence[Path] = ()) -> str:
    mach, vers = machine(), versions()
    lines = [
        "# ecssd benchmark results",
        "",
        f"Generated by `python3 -m benchmarks{' --quick' if quick else ''}` (`make bench`); "
        "every figure below was measured by that run.",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- mode: {'quick' if quick else 'full'}",
        f"- machine: {mach['cores']} cores, {mach['memory']} memory, {mach['cpu']}, "
        f"{mach['os']} (load average at the end: {mach['load']})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "- modules: " + ", ".join(f"{m} {s:.1f} s" for m, s in timings.items()),
    ]
    if failed:
        lines.append("- FAILED: " + ", ".join(failed))
    lines += ["", "## Headline", "", headline(rows), ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(HERE).as_posix()})" for p in plots]
        lines.append("")
    lines += ["## Every figure", "", table(rows), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, faster runs")
    parser.add_argument("--only", action="append", default=[], metavar="AREA",
                        help="run only bench_AREA (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    started = datetime.datetime.now(datetime.timezone.utc)
    selected = [m for m in modules() if not args.only or m.removeprefix("bench_") in args.only]
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    failed: list[str] = []
    for module in selected:
        print(f"running {module} ...", file=sys.stderr, flush=True)
        module_rows, seconds, ok = run_module(module, args.quick)
        rows += module_rows
        timings[module] = seconds
        if not ok:
            failed.append(module)
    text = report(rows, timings, failed, args.quick, started, plots_drawn(started))
    args.output.write_text(text)
    print(table(rows))
    print(f"\nwritten to {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

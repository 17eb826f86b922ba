"""The fleet benchmark's figures as pictures: fleet size against Route 53 requests per second
and against the deployment's convergence time, one line per mode, with the goal drawn in.

Why pictures: the table says whether each size held; only a plot shows how far from the limit
a mode runs and how it grows with the fleet, which is what decides between the modes.

matplotlib draws with the Agg backend (files only, no display), imported when a plot is
made so that nothing else in the benchmarks pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PLOTS = Path(__file__).resolve().parent / "plots"
REQUESTS_PNG = "fleet-requests.png"
CONVERGENCE_PNG = "fleet-convergence.png"


@dataclass(frozen=True)
class Point:
    """One fleet run: its size and the two figures plotted (``convergence`` is inf when the
    deployment never converged); ``holds``: the run met the whole goal."""

    hosts: int
    requests_per_second: float
    convergence: float
    holds: bool


def write_fleet_plots(series: Mapping[str, Sequence[Point]], directory: Path, *,
                      rate_limit: float, convergence_goal: float) -> list[Path]:
    """Write the two PNGs into ``directory`` (made if missing); returns their paths.

    ``series``: mode label -> its runs. ``rate_limit``: Route 53's account-wide refill rate
    (requests/s) that steady traffic must stay under; ``convergence_goal``: seconds within
    which the deployment must be applied. A run that failed the goal is drawn hollow; a
    deployment that never converged is drawn as an x on the plot's top edge.
    """
    if not series or not any(series.values()):
        raise ValueError("no fleet runs to plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    directory.mkdir(parents=True, exist_ok=True)
    finite = [p.convergence for points in series.values() for p in points
              if math.isfinite(p.convergence)]
    ceiling = max([*finite, convergence_goal]) * 1.25
    sizes = sorted({p.hosts for points in series.values() for p in points})
    paths = []
    for name, title, ylabel, goal, goal_label in (
            (REQUESTS_PNG, "Route 53 requests in steady state", "requests/s (whole account)",
             rate_limit, f"Route 53 account rate limit ({rate_limit:g} req/s)"),
            (CONVERGENCE_PNG, "20% deployment: time until every change is applied",
             "seconds after the deployment started", convergence_goal,
             f"goal: applied within {convergence_goal:g} s")):
        figure, axes = pyplot.subplots(figsize=(8, 5), dpi=100)
        try:
            for index, (label, points) in enumerate(series.items()):
                ordered = sorted(points, key=lambda p: p.hosts)
                color = f"C{index}"
                xs = [p.hosts for p in ordered]
                if name == REQUESTS_PNG:
                    ys = [p.requests_per_second for p in ordered]
                else:
                    ys = [p.convergence if math.isfinite(p.convergence) else ceiling
                          for p in ordered]
                axes.plot(xs, ys, "-", color=color, label=label)
                for point, x, y in zip(ordered, xs, ys, strict=True):
                    never = name == CONVERGENCE_PNG and not math.isfinite(point.convergence)
                    axes.plot([x], [y], "x" if never else "o", color=color, markersize=8,
                              markerfacecolor=color if point.holds else "white")
            axes.axhline(goal, color="black", linestyle="--", linewidth=1.2, label=goal_label)
            axes.plot([], [], "o", color="gray", markerfacecolor="white",
                      label="hollow: that run failed the goal")
            if name == CONVERGENCE_PNG and len(finite) < sum(len(p) for p in series.values()):
                axes.plot([], [], "x", color="gray", label="never converged (drawn at the top)")
                axes.set_ylim(0, ceiling * 1.05)
            else:
                axes.set_ylim(bottom=0)
            axes.set_xscale("log")
            axes.set_xticks(sizes, [str(size) for size in sizes])  # the tested sizes, as numbers
            axes.minorticks_off()
            axes.set_xlabel("fleet size (hosts, 20 containers each; log scale)")
            axes.set_ylabel(ylabel)
            axes.set_title(title)
            axes.grid(True, which="both", alpha=0.3)
            axes.legend(loc="upper left", fontsize="small")
            figure.tight_layout()
            path = directory / name
            figure.savefig(path, format="png")
            paths.append(path)
        finally:
            pyplot.close(figure)
    return paths

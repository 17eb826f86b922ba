"""The benchmark report's presentation: the fleet plots are real PNGs drawn from results, and
RESULTS.md opens with a headline table that says which figures held their goal."""

from __future__ import annotations

import datetime
import os
import re

import pytest
from matplotlib import image

from benchmarks import __main__ as bench_main
from benchmarks.plots import CONVERGENCE_PNG, REQUESTS_PNG, Point, write_fleet_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STARTED = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def small_series() -> dict[str, list[Point]]:
    return {"direct": [Point(10, 0.1, 20.0, True), Point(100, 0.9, 60.0, True),
                       Point(1000, 11.4, float("inf"), False)],
            "queued": [Point(10, 0.07, 15.0, True), Point(1000, 0.86, 95.0, True)]}


def test_the_fleet_plots_are_written_as_png_from_a_small_result_set(tmp_path):
    paths = write_fleet_plots(small_series(), tmp_path / "plots", rate_limit=10.0,
                              convergence_goal=120.0)
    assert [p.name for p in paths] == [REQUESTS_PNG, CONVERGENCE_PNG]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width = image.imread(path).shape[:2]
        assert (width, height) == (800, 500)


def test_plotting_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no fleet runs"):
        write_fleet_plots({"direct": []}, tmp_path, rate_limit=10.0, convergence_goal=120.0)
    assert not any(tmp_path.iterdir())


def row(metric: str, value: object, **extra: object) -> dict[str, object]:
    return {"area": "fleet", "metric": metric, "value": value, "unit": "req/s",
            "goal": "< 10", "note": "n", **extra}


def test_the_report_opens_with_the_headline_figures_and_whether_each_held(tmp_path):
    rows = [row("direct H=1000", 11.36, headline=True, held=False),
            row("queued H=1000", 0.86, headline=True, held=True),
            row("a detail", 3.0)]
    plot = bench_main.HERE / "plots" / REQUESTS_PNG
    text = bench_main.report(rows, {"bench_fleet": 1.0}, [], False, STARTED, [plot])
    headline = text[text.index("## Headline"):text.index("## Plots")]
    assert "| fleet | direct H=1000 | 11.36 req/s | < 10 | **no** |" in headline
    assert "| fleet | queued H=1000 | 0.86 req/s | < 10 | yes |" in headline
    assert "a detail" not in headline
    assert f"![fleet-requests](plots/{REQUESTS_PNG})" in text
    assert "a detail" in text[text.index("## Every figure"):]


def test_a_headline_row_must_say_whether_it_held():
    with pytest.raises(TypeError, match="held"):
        bench_main.checked("bench_x", [row("m", 1, headline=True)])
    assert bench_main.checked("bench_x", [row("m", 1)])  # an ordinary row needs no verdict


def test_only_plots_drawn_by_this_run_are_shown(tmp_path):
    old, new = tmp_path / "old.png", tmp_path / "new.png"
    old.write_bytes(PNG_SIGNATURE)
    new.write_bytes(PNG_SIGNATURE)
    before = STARTED.timestamp() - 60
    os.utime(old, (before, before))
    assert bench_main.plots_drawn(STARTED, tmp_path) == [new]
    assert bench_main.plots_drawn(STARTED, tmp_path / "missing") == []



def test_the_plots_the_readme_shows_are_committed():
    """README shows the fleet plots the full benchmark run draws: each one must exist."""
    readme = (bench_main.HERE.parent / "README.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\((benchmarks/plots/[^)]+\.png)\)", readme)
    assert sorted(shown) == sorted(f"benchmarks/plots/{n}" for n in (REQUESTS_PNG, CONVERGENCE_PNG))
    for link in shown:
        assert (bench_main.HERE.parent / link).read_bytes()[:8] == PNG_SIGNATURE, link

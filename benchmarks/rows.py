"""One result row of a benchmark, the shape ``benchmarks/__main__.py`` writes into RESULTS.md.

Each benchmark module keeps its own short ``row``/``_row`` (with its area and its argument
order); they all build the dict here, so a column added to the report is added once.
"""

from __future__ import annotations

from typing import Any


def result_row(area: str, metric: str, value: Any, unit: str, *, goal: str = "",
               note: str = "", held: bool | None = None) -> dict[str, Any]:
    """A result row; ``held`` (did the value meet its goal) makes it a headline figure."""
    row: dict[str, Any] = {"area": area, "metric": metric, "value": value, "unit": unit,
                           "goal": goal, "note": note}
    if held is not None:
        row.update(headline=True, held=held)
    return row

"""Comparisons: a report's figures next to an earlier period's, with the change.

``--compare previous`` compares the period with the one of the same length just before it
(November 1-30 with October 2-31); ``--compare year`` with the same dates a year earlier (a
29 February becomes the 28th). Both need a period (``--from`` and ``--to``).

The answer is a table with a leading ``period`` column: for each row of the report (a step,
a channel, a breakdown value), the row for this period (``current``), the row for the earlier
one (``previous`` or ``year_ago``; the dates are in the title and the meta), and a
``change`` row holding the differences (this minus earlier: counts and money as amounts,
rates in points). A row found in one period only is compared with zeros. Every figure keeps
its column's kind, so a table, JSON and CSV show the change as they show the figure.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from funnel.report import FunnelReport, Table
from storage.reports.scope import ReportScope

__all__ = ["COMPARISONS", "compared", "earlier", "funnel_table", "label"]

COMPARISONS = ("previous", "year")


def earlier(scope: ReportScope, how: str) -> ReportScope:
    """The period ``scope``'s figures are compared with."""
    if scope.start is None or scope.end is None:
        raise ValueError("a comparison needs a period: give --from and --to")
    if how == "previous":
        span = scope.end - scope.start
        return replace(scope, start=scope.start - span, end=scope.start)
    if how == "year":
        return replace(scope, start=_year_before(scope.start), end=_year_before(scope.end))
    raise ValueError(f"unknown comparison {how!r}: one of {', '.join(COMPARISONS)}")


def label(scope: ReportScope) -> str:
    """``2026-11-01..2026-11-30`` (the last day included), or times when not whole days."""
    assert scope.start is not None
    assert scope.end is not None
    if scope.aligned_to(timedelta(days=1)):
        last = scope.end - timedelta(days=1)
        return f"{scope.start:%Y-%m-%d}..{last:%Y-%m-%d}"
    return f"{scope.start:%Y-%m-%dT%H:%M}..{scope.end:%Y-%m-%dT%H:%M}"


def compared(
    now: Table,
    then: Table,
    *,
    keys: tuple[str, ...],
    labels: tuple[str, str],
    periods: tuple[str, str],
) -> Table:
    """``now`` and ``then`` (the same columns) row by row, with the change (module
    docstring); rows are matched on the ``keys`` columns. ``labels`` name the two periods'
    rows, ``periods`` are their dates (in the title and the meta)."""
    if now.columns != then.columns:
        raise ValueError("only tables of the same columns compare")
    at = [now.columns.index(k) for k in keys]
    earlier_rows = {tuple(row[i] for i in at): row for row in then.rows}
    order = [tuple(row[i] for i in at) for row in now.rows]
    order += [k for k in earlier_rows if k not in set(order)]
    current = {tuple(row[i] for i in at): row for row in now.rows}
    rows: list[tuple[object, ...]] = []
    for key in order:
        a = current.get(key) or _zeros(now.columns, at, key)
        b = earlier_rows.get(key) or _zeros(now.columns, at, key)
        change = tuple(
            x if i in at else _difference(x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
        rows += [(labels[0], *a), (labels[1], *b), ("change", *change)]
    return Table(
        title=f"{now.title}: {periods[0]} against {periods[1]}",
        columns=("period", *now.columns),
        rows=tuple(rows),
        meta={**now.meta, labels[0]: periods[0], labels[1]: periods[1]},
    )


def funnel_table(reports: list[FunnelReport], *, grouped: bool) -> Table:
    """Funnel reports as one table: a row per breakdown value (``grouped``) and step."""
    split = bool(reports) and reports[0].steps[0].stopped_dropped is not None
    columns: tuple[str, ...] = ("step", "people", "step_conversion", "overall_conversion")
    if split:
        columns += ("stopped_in_window", "stopped_dropped")
    rows = []
    for report in reports:
        if grouped and report.group is None:
            continue  # the all-zero placeholder of a breakdown with no values
        for s in report.steps:
            row: tuple[object, ...] = (s.step, s.count, s.step_conversion, s.overall_conversion)
            if split:
                row += (s.stopped_in_window, s.stopped_dropped)
            rows.append(((report.group or "",) if grouped else ()) + row)
    name = reports[0].funnel if reports else ""
    return Table(
        title=f"Funnel {name!r}",
        columns=(("group",) if grouped else ()) + columns,
        rows=tuple(rows),
        meta={"funnel": name},
    )


def _zeros(columns: tuple[str, ...], at: list[int], key: tuple[object, ...]) -> tuple[object, ...]:
    values = dict(zip(at, key, strict=True))
    return tuple(values.get(i, 0) for i in range(len(columns)))


def _difference(now: object, then: object) -> object:
    """``now - then`` for two numbers (not flags); ``None`` otherwise (a rate of 0 / 0)."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (now, then))
    return now - then if numbers else None  # type: ignore[operator]


def _year_before(moment: datetime) -> datetime:
    try:
        return moment.replace(year=moment.year - 1)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - 1, day=28)

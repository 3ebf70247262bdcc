"""Funnel report arithmetic (DESIGN §6 rates): pure functions over step counts, and the one
number format of every report's output.

Step conversion is step n / step n-1, overall conversion is step n / step 1, and ``1:N``
says "one in N" of the people who entered the funnel got this far. With nobody at step 1 no
step has a rate (0 / 0 is not 100 %).

Numbers (:func:`column_kind`): JSON and CSV carry the same values — rates as fractions with
4 decimals, money with 2, credited (fractional) conversions with 4, durations and other
averages with 2, counts as integers; a table shows rates as percentages. ``canonical()``
(of a :class:`Table` or a :class:`FunnelReport`) rounds a report once, so every output of it
(JSON, CSV, table, the owner's API) starts from the same numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "DropoffRow",
    "FunnelReport",
    "Kind",
    "StepRow",
    "Table",
    "cell_text",
    "column_kind",
    "csv_text",
    "dropoffs",
    "one_in",
    "ratio",
]

Kind = Literal["auto", "count", "credit", "rate", "money", "decimal", "flag", "text"]
"""How a column's numbers are rounded and shown: ``count`` (an integer), ``credit`` (credited,
fractional conversions), ``rate`` (a fraction, a percentage in a table), ``money``,
``decimal`` (durations, averages, multiples such as ROAS), ``flag`` (true/false), ``text``;
``auto`` goes by the value (an int is a count, a float a credit)."""

#: Decimal places a kind carries in JSON and CSV.
PLACES: dict[str, int] = {"credit": 4, "rate": 4, "money": 2, "decimal": 2}

_KINDS: dict[str, Kind] = {
    **dict.fromkeys(
        (
            "step_conversion",
            "overall_conversion",
            "dropoff_rate",
            "repeat_rate",
            "churn_rate",
            "conversion",
            "rate",
            "conversion_rate",
            "share",
        ),
        "rate",
    ),
    **dict.fromkeys(("revenue", "spend", "cpl", "cac", "aov", "ltv", "expected_revenue"), "money"),
    **dict.fromkeys(
        ("roas", "cpl_vs_target", "touches_before_sale", "assisted_per_last"), "decimal"
    ),
    "expected_payments": "credit",
    "biggest_leak": "flag",
}


def column_kind(column: str) -> Kind:
    """The kind of a report column, by its name (the same name means the same kind in every
    report): ``*_revenue`` is money, ``*_hours`` a decimal, anything else ``auto``."""
    if column in _KINDS:
        return _KINDS[column]
    if column.endswith("_revenue"):
        return "money"
    if column.endswith("_hours"):
        return "decimal"
    return "auto"


def _kind_of(kind: Kind, value: object) -> Kind:
    if kind != "auto":
        return kind
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, int):
        return "count"
    if isinstance(value, float):
        return "credit"
    return "text"


def _rounded(kind: Kind, value: object) -> object:
    """``value`` in the precision of ``kind`` (``None`` and text as they are)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    kind = _kind_of(kind, value)
    if kind == "count":
        return value if isinstance(value, int) else round(value)
    if kind in PLACES:
        return round(float(value), PLACES[kind])
    return value


def csv_text(kind: Kind, value: object) -> str:
    """A value as a CSV cell: the number :func:`canonical` keeps, with all its places
    (``2260.90``); ``true``/``false`` as in JSON; nothing for ``None``."""
    if value is None:
        return ""
    kind = _kind_of(kind, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind in PLACES and isinstance(value, int | float):
        return f"{value:.{PLACES[kind]}f}"
    return str(value)


def cell_text(kind: Kind, value: object) -> str:
    """A value as a table cell: rates as percentages, money and credits with 2 decimals,
    counts with thousands separators, ``-`` for ``None``."""
    if value is None:
        return "-"
    kind = _kind_of(kind, value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "count":
        return f"{int(value):,}"
    return f"{value:,.2f}"


def one_in(rate: float | None) -> str:
    """``0.001`` → ``"1:1000"``; ``0.0125`` → ``"1:80"``; ``0.26`` → ``"1:3.8"``.

    One decimal below ten, whole numbers above (``1:235``); no conversion is ``"-"``.
    """
    if rate is None or rate <= 0:
        return "-"
    n = 1 / rate
    if math.isclose(n, round(n), rel_tol=1e-9) or n >= 10:
        return f"1:{round(n)}"
    return f"1:{n:.1f}"


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step of a funnel report. Rates are fractions in [0, 1] or ``None`` (0 / 0)."""

    index: int
    step: str
    count: int
    step_conversion: float | None
    overall_conversion: float | None
    dropped_from_previous: int
    stopped_in_window: int | None = None
    """People whose furthest step is this one and who can still go on (``None``: not split)."""
    stopped_dropped: int | None = None
    """People whose furthest step is this one and whose window expired (``None``: not split)."""

    @property
    def one_in(self) -> str:
        return one_in(self.overall_conversion)


@dataclass(frozen=True, slots=True)
class FunnelReport:
    """A funnel's step counts with conversion rates."""

    funnel: str
    site_id: str | None
    steps: tuple[StepRow, ...]
    group: str | None = None
    """The breakdown value (a channel, a period, …) this funnel is for; ``None``: everyone."""

    @classmethod
    def from_counts(
        cls,
        funnel: str,
        site_id: str | None,
        names: list[str],
        counts: list[int],
        *,
        group: str | None = None,
        stopped: list[tuple[int, int]] | None = None,
    ) -> FunnelReport:
        """Rates from step counts; ``stopped`` gives per step ``(in_window, dropped)`` of the
        people whose furthest step it is."""
        if len(names) != len(counts) or (stopped is not None and len(stopped) != len(counts)):
            raise ValueError("one count per step is required")
        rows = []
        first = counts[0] if counts else 0
        for i, (name, count) in enumerate(zip(names, counts, strict=True)):
            previous = counts[i - 1] if i else None
            rows.append(
                StepRow(
                    index=i + 1,
                    step=name,
                    count=count,
                    # Step 1's rate is 1 of itself: none when nobody entered (0 / 0).
                    step_conversion=_ratio(count, count if previous is None else previous),
                    overall_conversion=_ratio(count, first),
                    dropped_from_previous=(previous - count) if previous is not None else 0,
                    stopped_in_window=stopped[i][0] if stopped is not None else None,
                    stopped_dropped=stopped[i][1] if stopped is not None else None,
                )
            )
        return cls(funnel=funnel, site_id=site_id, steps=tuple(rows), group=group)

    @property
    def converted(self) -> int:
        """People who reached the last step."""
        return self.steps[-1].count if self.steps else 0

    @property
    def overall_conversion(self) -> float | None:
        return self.steps[-1].overall_conversion if self.steps else None

    def one_in_at(self, step: StepRow | None = None) -> str:
        """``1:N`` of ``step`` (default: the last) from the counts, so it stays exact when the
        rates are rounded (a rate of 0.00005 is 0.0001 with 4 decimals, but 1:20000)."""
        step = step or (self.steps[-1] if self.steps else None)
        if step is None:
            return "-"
        return one_in(_ratio(step.count, self.steps[0].count))

    def canonical(self) -> FunnelReport:
        """The report with its rates in the output precision (module docstring)."""
        return replace(
            self,
            steps=tuple(
                replace(
                    s,
                    step_conversion=_rate(s.step_conversion),
                    overall_conversion=_rate(s.overall_conversion),
                )
                for s in self.steps
            ),
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (rates as fractions, plus ``one_in``)."""
        return {
            "funnel": self.funnel,
            "site_id": self.site_id,
            "group": self.group,
            "converted": self.converted,
            "in_window": _total(s.stopped_in_window for s in self.steps[:-1]),
            "dropped": _total(s.stopped_dropped for s in self.steps[:-1]),
            "overall_conversion": self.overall_conversion,
            "one_in": self.one_in_at(),
            "steps": [
                {
                    "index": s.index,
                    "step": s.step,
                    "count": s.count,
                    "step_conversion": s.step_conversion,
                    "overall_conversion": s.overall_conversion,
                    "one_in": self.one_in_at(s),
                    "dropped_from_previous": s.dropped_from_previous,
                    "stopped_in_window": s.stopped_in_window,
                    "stopped_dropped": s.stopped_dropped,
                }
                for s in self.steps
            ],
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, PLACES["rate"])


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _total(values: Iterable[int | None]) -> int | None:
    items = list(values)
    return None if any(v is None for v in items) else sum(v for v in items if v is not None)


@dataclass(frozen=True, slots=True)
class DropoffRow:
    """Where people leave: of those who reached ``step``, how many went on to ``next_step``,
    how many dropped there (window expired) and how many can still go on."""

    group: str | None
    index: int
    step: str
    next_step: str
    reached: int
    continued: int
    dropped: int
    in_window: int
    biggest_leak: bool = False

    @property
    def dropoff_rate(self) -> float | None:
        """Dropped / reached: people still in their window are never counted as dropped."""
        return _ratio(self.dropped, self.reached)


def dropoffs(report: FunnelReport) -> list[DropoffRow]:
    """The drop-off between each step and the next, the biggest leak (the highest drop-off
    rate; the earlier step on a tie) flagged. Needs a report split by status."""
    rows = []
    for here, there in itertools.pairwise(report.steps):
        if here.stopped_dropped is None or here.stopped_in_window is None:
            raise ValueError("drop-off needs a funnel report split by status")
        rows.append(
            DropoffRow(
                group=report.group,
                index=here.index,
                step=here.step,
                next_step=there.step,
                reached=here.count,
                continued=there.count,
                dropped=here.stopped_dropped,
                in_window=here.stopped_in_window,
            )
        )
    rated = [r for r in rows if r.dropoff_rate]
    if rated:
        worst = max(rated, key=lambda r: (r.dropoff_rate or 0.0, -r.index))
        rows = [replace(r, biggest_leak=True) if r is worst else r for r in rows]
    return rows


@dataclass(frozen=True, slots=True)
class Table:
    """A report as a table: named columns and rows of plain values (str, int, float, None).

    The CLI prints it as a table, JSON or CSV; ``meta`` holds what the rows do not (the
    period, the model, notes).
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """The kind of each column (:func:`column_kind`)."""
        return tuple(column_kind(c) for c in self.columns)

    def canonical(self) -> Table:
        """The table with every number in its column's output precision (idempotent)."""
        kinds = self.kinds
        rows = tuple(
            tuple(_rounded(k, v) for k, v in zip(kinds, row, strict=True)) for row in self.rows
        )
        return replace(self, rows=rows)

    def records(self) -> list[dict[str, object]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_dict(self) -> dict[str, object]:
        return {"title": self.title, **self.meta, "rows": self.records()}

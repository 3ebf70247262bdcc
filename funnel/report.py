"""Funnel report arithmetic (DESIGN §6 rates): pure functions over step counts.

Step conversion is step n / step n-1, overall conversion is step n / step 1, and ``1:N``
says "one in N" of the people who entered the funnel got this far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FunnelReport", "StepRow", "one_in"]


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

    @property
    def one_in(self) -> str:
        return one_in(self.overall_conversion)


@dataclass(frozen=True, slots=True)
class FunnelReport:
    """A funnel's step counts with conversion rates."""

    funnel: str
    site_id: str | None
    steps: tuple[StepRow, ...]

    @classmethod
    def from_counts(
        cls, funnel: str, site_id: str | None, names: list[str], counts: list[int]
    ) -> FunnelReport:
        if len(names) != len(counts):
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
                    step_conversion=_ratio(count, previous) if previous is not None else 1.0,
                    overall_conversion=_ratio(count, first),
                    dropped_from_previous=(previous - count) if previous is not None else 0,
                )
            )
        return cls(funnel=funnel, site_id=site_id, steps=tuple(rows))

    @property
    def overall_conversion(self) -> float | None:
        return self.steps[-1].overall_conversion if self.steps else None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (rates as fractions, plus ``one_in``)."""
        return {
            "funnel": self.funnel,
            "site_id": self.site_id,
            "overall_conversion": self.overall_conversion,
            "one_in": one_in(self.overall_conversion),
            "steps": [
                {
                    "index": s.index,
                    "step": s.step,
                    "count": s.count,
                    "step_conversion": s.step_conversion,
                    "overall_conversion": s.overall_conversion,
                    "one_in": s.one_in,
                    "dropped_from_previous": s.dropped_from_previous,
                }
                for s in self.steps
            ],
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None

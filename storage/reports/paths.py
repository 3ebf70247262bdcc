"""The paths report: which sequences of channels lead to conversions, how long and how many
touches they take, and which channels assist.

Built on the attribution report's journeys (:func:`storage.reports.attribution.journeys`):
each person's touches (impressions and clicks, resolved through merges) up to their first
conversion of the chosen type within the lookback, or all their touches in the period if they
did not convert; a conversion with no touch is a ``Direct`` path. ``--show``:

* ``paths`` (default): channel paths (repeats of a channel in a row collapsed, as
  ``Paid Search > Email``) with how many journeys on each converted and how many did not; the
  top ``top`` converting paths and the top ``top`` non-converting ones;
* ``length``: conversions by how many touches their path had (``0``: none, a Direct
  conversion);
* ``lag``: conversions by the days from the path's first touch to the conversion;
* ``assists``: per channel, the conversions whose last touch it was and those it assisted
  (it appears before the last touch), and their ratio (above 1: the channel mostly opens or
  nurtures rather than closes).

A time or person-level breakdown (``--by``) adds a leading ``group`` column.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from funnel.datadriven import Journey, collapse
from funnel.report import Table, ratio
from storage.backends import Store
from storage.reports.attribution import journeys
from storage.reports.scope import ReportScope

__all__ = ["LAG_DAYS", "SHOWS", "paths_report"]

SHOWS = ("paths", "length", "lag", "assists")
#: Time-lag buckets: (label, upper bound in days, exclusive); the last is open.
LAG_DAYS: tuple[tuple[str, float], ...] = (
    ("<1", 1),
    ("1-2", 3),
    ("3-6", 7),
    ("7-13", 14),
    ("14-29", 30),
    ("30+", float("inf")),
)
_MAX_LENGTH = 10
_DAY_MS = 86_400_000


def paths_report(
    store: Store,
    scope: ReportScope | None = None,
    *,
    conversion: str = "payment",
    lookback: timedelta = timedelta(days=30),
    show: str = "paths",
    top: int = 20,
) -> Table:
    scope = scope or ReportScope()
    if scope.by is not None and scope.by not in ("day", "week", "month", "temperature", "manager"):
        raise ValueError("the paths report breaks down by day, week, month, temperature or manager")
    if show not in SHOWS:
        raise ValueError(f"unknown view {show!r}: one of {', '.join(SHOWS)}")
    grouped = scope.by is not None
    by_group = journeys(store, scope, conversion=conversion, lookback=lookback)
    build = {"paths": _paths, "length": _length, "lag": _lag, "assists": _assists}[show]
    columns: tuple[str, ...] = ()
    rows: list[tuple[object, ...]] = []
    for group in sorted(by_group):
        columns, part = build(by_group[group], top)
        rows.extend(((group, *row) if grouped else row) for row in part)
    if not columns:
        columns = build([], top)[0]
    titles = {
        "paths": "Channel paths",
        "length": "Path length",
        "lag": "Time lag",
        "assists": "Assisted conversions",
    }
    return Table(
        title=f"{titles[show]} ({conversion} conversions)",
        columns=(("group",) if grouped else ()) + columns,
        rows=tuple(rows),
        meta={"conversion": conversion, "lookback_days": lookback.days, "show": show},
    )


Part = tuple[tuple[str, ...], list[tuple[object, ...]]]


def _paths(items: list[Journey], top: int) -> Part:
    converting: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for journey in items:
        path = " > ".join(collapse(journey.channels))
        (converting if journey.converted else other)[path] += 1
    chosen = {*_best(converting, top), *_best(other, top)}
    ordered = sorted(chosen, key=lambda p: (-converting[p], -other[p], p))
    rows: list[tuple[object, ...]] = [
        (
            p,
            len(collapse(p.split(" > "))),
            converting[p],
            other[p],
            _share(ratio(converting[p], converting[p] + other[p])),
        )
        for p in ordered
    ]
    return ("path", "channels", "conversions", "not_converted", "conversion_rate"), rows


def _best(counts: Counter[str], top: int) -> list[str]:
    """The ``top`` most frequent paths, ties by name."""
    return sorted(counts, key=lambda p: (-counts[p], p))[:top]


def _length(items: list[Journey], top: int) -> Part:
    del top
    converted = [j for j in items if j.converted]
    counts = Counter(min(j.touches, _MAX_LENGTH) for j in converted)
    rows: list[tuple[object, ...]] = [
        (
            f"{n}+" if n == _MAX_LENGTH else str(n),
            counts[n],
            _share(ratio(counts[n], len(converted))),
        )
        for n in sorted(counts)
    ]
    return ("touches", "conversions", "share"), rows


def _lag(items: list[Journey], top: int) -> Part:
    del top
    lags = [j.lag_ms for j in items if j.converted and j.lag_ms is not None]
    counts: Counter[str] = Counter()
    for lag in lags:
        days = lag / _DAY_MS
        counts[next(label for label, upper in LAG_DAYS if days < upper)] += 1
    rows: list[tuple[object, ...]] = [
        (label, counts[label], _share(ratio(counts[label], len(lags))))
        for label, _ in LAG_DAYS
        if counts[label]
    ]
    return ("days", "conversions", "share"), rows


def _assists(items: list[Journey], top: int) -> Part:
    del top
    last: Counter[str] = Counter()
    assisted: Counter[str] = Counter()
    for journey in items:
        if not journey.converted:
            continue
        *before, closing = journey.channels
        last[closing] += 1
        for channel in set(before):  # once per conversion, even if it also closed
            assisted[channel] += 1
    channels = sorted(set(last) | set(assisted), key=lambda c: (-assisted[c] - last[c], c))
    rows: list[tuple[object, ...]] = [
        (c, last[c], assisted[c], _round(ratio(assisted[c], last[c]))) for c in channels
    ]
    return ("channel", "last_touch_conversions", "assisted_conversions", "assisted_per_last"), rows


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

"""The attribution report: every model side by side, per channel (or campaign).

Rule-based models (DESIGN §7) were credited in the stream: their sums come from
``agg_attribution_day`` when the period is on day boundaries and the breakdown is not
person-level, else from ``attributions``. The data-driven ``markov`` and ``shapley`` models
are computed here from the stored journeys of the period (:mod:`funnel.datadriven`): each
person's touches (impressions and clicks, resolved through merges) up to their first conversion
of the chosen type within the lookback, or all their touches in the period if they did not
convert. A conversion with no touch is a ``Direct`` journey.

Per model the credited conversions of the channels add up to the conversions of the period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

from funnel.attribution import MODELS
from funnel.datadriven import Journey, markov_shares, shapley_shares
from funnel.report import Table
from storage.backends import Store
from storage.reports.scope import ReportScope, person_groups, resolved_events

__all__ = ["ATTRIBUTION_MODELS", "DATA_DRIVEN", "attribution_report", "journeys"]

DATA_DRIVEN = ("markov", "shapley")
#: The report's models: the stream's, then the data-driven ones.
ATTRIBUTION_MODELS = (*MODELS, *DATA_DRIVEN)
_DAY = timedelta(days=1)


def attribution_report(
    store: Store,
    scope: ReportScope | None = None,
    *,
    conversion: str = "payment",
    lookback: timedelta = timedelta(days=30),
    models: Sequence[str] | None = None,
) -> Table:
    """Credited conversions and revenue per channel (``by="campaign"``: per campaign) and
    model (``models``: only these, in this order; default every model, the stream's then
    the data-driven ones); a time or person-level breakdown adds a leading ``group``
    column."""
    scope = (scope or ReportScope()).answerable_by("attribution")
    key = "campaign" if scope.by == "campaign" else "channel"
    grouped = scope.by not in (None, "channel", "campaign")
    credits, revenue = _rule_based(store, scope, conversion, key)
    paths = journeys(store, scope, conversion=conversion, lookback=lookback, key=key)
    for group, group_paths in paths.items():
        # Scaled to the conversions the stream credited (a person may convert more than once;
        # a journey ends at the first), so every model's column adds up to the same total.
        credited = sum(credits.get((group, k, "last_touch"), 0.0) for k in _keys(credits))
        converted = credited or sum(j.converted for j in group_paths)
        total_revenue = sum(revenue.get((group, k, "last_touch"), 0.0) for k in _keys(revenue))
        for name, shares in (
            ("markov", markov_shares(group_paths)),
            ("shapley", shapley_shares(group_paths)),
        ):
            for k, share in shares.items():
                credits[(group, k, name)] = share * converted
                revenue[(group, k, name)] = share * total_revenue
    models = tuple(models) if models else ATTRIBUTION_MODELS
    rows = []
    for group, k in sorted({(g, k) for g, k, _ in credits}):
        row: list[object] = [group] if grouped else []
        row.append(k)
        row.extend(round(credits.get((group, k, m), 0.0), 6) for m in models)
        row.extend(round(revenue.get((group, k, m), 0.0), 2) for m in models)
        rows.append(tuple(row))
    columns = (
        *(("group",) if grouped else ()),
        key,
        *models,
        *(f"{m}_revenue" for m in models),
    )
    return Table(
        title=f"Attribution of {conversion} conversions",
        columns=columns,
        rows=tuple(rows),
        meta={"conversion": conversion, "models": list(models)},
    )


def _keys(values: dict[tuple[str, str, str], float]) -> set[str]:
    return {k for _, k, _ in values}


def _rule_based(
    store: Store, scope: ReportScope, conversion: str, key: str
) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str, str], float]]:
    db = store.database
    params = {**scope.params(), "conversion": conversion}
    person_level = scope.by in ("temperature", "manager")
    if scope.aligned_to(_DAY) and not person_level:
        group = scope.period_group("bucket")
        sql = (
            f"SELECT {group} AS g, {key} AS k, model, sum(credit) AS credit, "
            f"sum(revenue_credit) AS revenue FROM {db}.agg_attribution_day "
            f"WHERE conversion_type = {{conversion:String}} AND {scope.site_filter()} "
            "AND toUnixTimestamp(bucket) * 1000 >= {start:Int64} "
            "AND toUnixTimestamp(bucket) * 1000 < {end:Int64} GROUP BY g, k, model"
        )
    else:
        if person_level:
            assert scope.by is not None
            source = (
                f"(SELECT a.*, ifNull(p.g, '(unknown)') AS g FROM {db}.attributions AS a "
                f"LEFT JOIN {person_groups(db, scope.by)} AS p "
                "ON a.site_id = p.site_id AND a.person_id = p.person_id "
                "SETTINGS join_use_nulls = 1)"
            )
        else:
            group = scope.period_group("converted_at")
            source = f"(SELECT *, {group} AS g FROM {db}.attributions)"
        sql = (
            f"SELECT g, {key} AS k, model, sum(credit) AS credit, "
            f"sum(revenue_credit) AS revenue FROM {source} "
            f"WHERE conversion_type = {{conversion:String}} AND {scope.site_filter()} "
            f"AND {scope.period_filter('converted_at')} GROUP BY g, k, model"
        )
    credits: dict[tuple[str, str, str], float] = {}
    revenue: dict[tuple[str, str, str], float] = {}
    for row in store.query(sql, params):
        credit = float(row["credit"])
        if abs(credit) < 1e-9:  # retracted by corrections
            continue
        index = (str(row["g"]), str(row["k"]), str(row["model"]))
        credits[index] = credit
        revenue[index] = float(row["revenue"])
    return credits, revenue


def journeys(
    store: Store,
    scope: ReportScope,
    *,
    conversion: str = "payment",
    lookback: timedelta = timedelta(days=30),
    key: str = "channel",
) -> dict[str, list[Journey]]:
    """Breakdown value → the journeys of the period, converting and not (module docstring).

    A person converts in the period when their first conversion of the type falls in it; a
    person who converted before the period is left out.
    """
    db = store.database
    lookback_ms = int(lookback.total_seconds() * 1000)
    params = {**scope.params(), "conversion": conversion, "lookback": lookback_ms}
    if scope.by in ("temperature", "manager"):
        assert scope.by is not None
        group_join = (
            f"LEFT JOIN {person_groups(db, scope.by)} AS p "
            "ON j.site_id = p.site_id AND j.person_id = p.person_id"
        )
        group = "ifNull(p.g, '(unknown)')"
    else:
        group_join = ""
        group = scope.period_group(
            "fromUnixTimestamp64Milli(if(j.converted > 0, j.converted, j.last), 'UTC')"
        )
    sql = (
        f"SELECT {group} AS g, j.converted AS converted, j.touches AS touches FROM ("
        "SELECT site_id, person_id, "
        "minIf(toUnixTimestamp64Milli(occurred_at), event_type = {conversion:String}) "
        "AS converted, "
        "max(toUnixTimestamp64Milli(occurred_at)) AS last, "
        f"arraySort(t -> t.1, groupArrayIf((toUnixTimestamp64Milli(occurred_at), {key}), "
        "event_type IN ('impression', 'click') "
        "AND toUnixTimestamp64Milli(occurred_at) >= {start:Int64} - {lookback:Int64})) "
        "AS touches "
        # No lower bound on the scan: a person's first conversion may lie before the period
        # (then they are not a conversion of the period, nor a journey of it).
        f"FROM {resolved_events(db, include_bots=scope.include_bots)} "
        f"WHERE {scope.site_filter()} "
        "AND toUnixTimestamp64Milli(occurred_at) < {end:Int64} "
        "GROUP BY site_id, person_id) AS j "
        f"{group_join} "
        "WHERE (j.converted > 0 AND j.converted >= {start:Int64}) "
        "OR (j.converted = 0 AND j.last >= {start:Int64}) "
        "SETTINGS join_use_nulls = 1"
    )
    out: dict[str, list[Journey]] = defaultdict(list)
    start = int(params["start"])  # type: ignore[call-overload]  # an int, from params()
    for row in store.query(sql, params):
        converted_at = int(row["converted"])
        touches = [(int(t[0]), str(t[1])) for t in row["touches"]]
        if converted_at:
            kept = [(t, c) for t, c in touches if converted_at - lookback_ms <= t <= converted_at]
            lag = converted_at - kept[0][0] if kept else None
            path = tuple(c for _, c in kept) or ("Direct",)
            out[str(row["g"])].append(Journey(path, True, lag))
        else:
            path = tuple(c for t, c in touches if t >= start)
            if path:
                out[str(row["g"])].append(Journey(path, False))
    return dict(out)

"""The channels report: volume, cost and return per channel (or campaign).

Per channel: impressions and clicks (the events' own touch, from ``events`` without bots'
events; from ``agg_events_minute``, which counts every event, when bots are included and the
period is on minute boundaries), and the leads, customers, payments and revenue credited to it
under one attribution model (``model``, default ``last_non_direct``; from
``agg_attribution_day`` on day boundaries). Payments are purchases: ``payment`` and ``repeat``
conversions; customers are the credited *first* payments of persons. With spend loaded
(``funnel spend load``): CPL = spend / leads, CAC = spend / customers, ROAS = revenue / spend,
and AOV (the average check) = revenue / payments. ``target_cpl`` adds each channel's CPL as a
ratio of the target (above 1: over target).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from funnel.report import Table, ratio
from storage.backends import Store
from storage.reports.scope import PURCHASES, ReportScope

__all__ = ["channels_report"]

_MINUTE, _DAY = timedelta(minutes=1), timedelta(days=1)
_METRICS = ("impressions", "clicks", "leads", "customers", "payments", "revenue", "spend")


def channels_report(
    store: Store,
    scope: ReportScope | None = None,
    *,
    model: str = "last_non_direct",
    target_cpl: float | None = None,
) -> Table:
    scope = (scope or ReportScope()).answerable_by("channels")
    key = "campaign" if scope.by == "campaign" else "channel"
    grouped = scope.by not in (None, "channel", "campaign")
    if scope.by in ("temperature", "manager"):
        raise ValueError("the channels report breaks down by channel, campaign or period")
    values: dict[tuple[str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(_METRICS, 0.0)
    )
    for (g, k), counts in _touches(store, scope, key).items():
        values[(g, k)].update(counts)
    for (g, k), credited in _credited(store, scope, key, model).items():
        values[(g, k)].update(credited)
    for (g, k), customers in _customers(store, scope, key, model).items():
        values[(g, k)]["customers"] = customers
    for (g, k), spend in _spend(store, scope, key).items():
        values[(g, k)]["spend"] = spend
    rows = []
    for (g, k), v in sorted(values.items(), key=lambda item: (item[0][0], -item[1]["revenue"])):
        cpl = ratio(v["spend"], v["leads"]) if v["spend"] else None
        row: list[object] = [g] if grouped else []
        row += [k, int(v["impressions"]), int(v["clicks"])]
        row += [round(v[m], 4) for m in ("leads", "customers", "payments")]
        row += [round(v["revenue"], 2), round(v["spend"], 2)]
        row += [_round(cpl), _round(ratio(v["spend"], v["customers"]) if v["spend"] else None)]
        row += [_round(ratio(v["revenue"], v["spend"])), _round(ratio(v["revenue"], v["payments"]))]
        if target_cpl is not None:
            row.append(_round(ratio(cpl, target_cpl)))
        rows.append(tuple(row))
    columns = (
        *(("group",) if grouped else ()),
        key,
        *_METRICS,
        "cpl",
        "cac",
        "roas",
        "aov",
        *(("cpl_vs_target",) if target_cpl is not None else ()),
    )
    return Table(
        title=f"Channels ({model})",
        columns=columns,
        rows=tuple(rows),
        meta={"model": model, "target_cpl": target_cpl},
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _touches(store: Store, scope: ReportScope, key: str) -> dict[tuple[str, str], dict[str, float]]:
    db = store.database
    # agg_events_minute counts every event, bots' too: it answers only when they are asked for.
    bots = "" if scope.include_bots else " AND NOT is_bot"
    if scope.include_bots and scope.aligned_to(_MINUTE):
        sql = (
            f"SELECT {scope.period_group('bucket')} AS g, {key} AS k, "
            "sumIf(events, event_type = 'impression') AS impressions, "
            "sumIf(events, event_type = 'click') AS clicks "
            f"FROM {db}.agg_events_minute WHERE {scope.site_filter()} "
            "AND toUnixTimestamp(bucket) * 1000 >= {start:Int64} "
            "AND toUnixTimestamp(bucket) * 1000 < {end:Int64} GROUP BY g, k"
        )
    else:
        sql = (
            f"SELECT {scope.period_group('occurred_at')} AS g, {key} AS k, "
            "countIf(event_type = 'impression') AS impressions, "
            "countIf(event_type = 'click') AS clicks "
            f"FROM {db}.events WHERE {scope.site_filter()} "
            f"AND {scope.period_filter('occurred_at')}{bots} GROUP BY g, k"
        )
    return {
        (str(r["g"]), str(r["k"])): {
            "impressions": float(r["impressions"]),
            "clicks": float(r["clicks"]),
        }
        for r in store.query(sql, scope.params())
    }


def _credited(
    store: Store, scope: ReportScope, key: str, model: str
) -> dict[tuple[str, str], dict[str, float]]:
    db = store.database
    purchases = ", ".join(f"'{p}'" for p in PURCHASES)
    sums = (
        "sumIf(credit, conversion_type = 'lead') AS leads, "
        f"sumIf(credit, conversion_type IN ({purchases})) AS payments, "
        f"sumIf(revenue_credit, conversion_type IN ({purchases})) AS revenue"
    )
    if scope.aligned_to(_DAY):
        sql = (
            f"SELECT {scope.period_group('bucket')} AS g, {key} AS k, {sums} "
            f"FROM {db}.agg_attribution_day WHERE model = {{model:String}} "
            f"AND {scope.site_filter()} AND toUnixTimestamp(bucket) * 1000 >= {{start:Int64}} "
            "AND toUnixTimestamp(bucket) * 1000 < {end:Int64} GROUP BY g, k"
        )
    else:
        sql = (
            f"SELECT {scope.period_group('converted_at')} AS g, {key} AS k, {sums} "
            f"FROM {db}.attributions WHERE model = {{model:String}} AND {scope.site_filter()} "
            f"AND {scope.period_filter('converted_at')} GROUP BY g, k"
        )
    return {
        (str(r["g"]), str(r["k"])): {
            "leads": float(r["leads"]),
            "payments": float(r["payments"]),
            "revenue": float(r["revenue"]),
        }
        for r in store.query(sql, {**scope.params(), "model": model})
    }


def _customers(
    store: Store, scope: ReportScope, key: str, model: str
) -> dict[tuple[str, str], float]:
    """Credited first payments: each person's earliest payment conversion, in the period."""
    db = store.database
    sql = (
        f"SELECT {scope.period_group('converted_at')} AS g, {key} AS k, sum(credit) AS customers "
        f"FROM {db}.attributions WHERE model = {{model:String}} "
        "AND conversion_type = 'payment' "
        f"AND {scope.site_filter()} AND {scope.period_filter('converted_at')} "
        "AND (site_id, person_id, conversion_id) IN ("
        "SELECT site_id, person_id, argMin(conversion_id, converted_at) "
        f"FROM {db}.attributions WHERE model = {{model:String}} "
        "AND conversion_type = 'payment' AND credit > 0 GROUP BY site_id, person_id) "
        "GROUP BY g, k"
    )
    return {
        (str(r["g"]), str(r["k"])): float(r["customers"])
        for r in store.query(sql, {**scope.params(), "model": model})
    }


def _spend(store: Store, scope: ReportScope, key: str) -> dict[tuple[str, str], float]:
    db = store.database
    sql = (
        f"SELECT {scope.period_group('date')} AS g, {key} AS k, sum(cost) AS cost "
        f"FROM {db}.spend FINAL WHERE {scope.site_filter()} "
        "AND toUnixTimestamp(date) * 1000 >= {start:Int64} "
        "AND toUnixTimestamp(date) * 1000 < {end:Int64} GROUP BY g, k"
    )
    return {(str(r["g"]), str(r["k"])): float(r["cost"]) for r in store.query(sql, scope.params())}

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

**By a touch field** (``by`` = ``utm_source``, ``device``, ``property:NAME``…, or ``where``
conditions): rows are per value of that field of the touch and channel. Impressions and
clicks are the events' own; leads, customers, payments and revenue are credited at query
time, conversion by conversion, with the stream's rule-based models over each person's
touches (impressions and clicks within the lookback, resolved through merges), so a credit
goes to the field value of the touch that earned it; ``where`` keeps the touches (and their
credits) that meet it. Spend is loaded per channel and campaign, not per touch field: it is
left out of such rows (CPL, CAC and ROAS with it).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from funnel.attribution import (
    DIRECT,
    AttributionSettings,
    Conversion,
    PathTouch,
    credit_history,
)
from funnel.report import Table, ratio
from storage.backends import Store
from storage.reports.query import Condition, all_of
from storage.reports.scope import PURCHASES, ReportScope, resolved_events

__all__ = ["channels_report"]

_MINUTE, _DAY = timedelta(minutes=1), timedelta(days=1)
_METRICS = ("impressions", "clicks", "leads", "customers", "payments", "revenue", "spend")


def channels_report(
    store: Store,
    scope: ReportScope | None = None,
    *,
    model: str = "last_non_direct",
    target_cpl: float | None = None,
    where: tuple[Condition, ...] = (),
    settings: AttributionSettings | None = None,
) -> Table:
    """``settings``: the attribution settings of touch-field rows (the stream's defaults)."""
    scope = scope or ReportScope()
    if scope.by in ("temperature", "manager"):
        raise ValueError("the channels report breaks down by channel, campaign or period")
    touch = bool(where) or scope.by_touch
    if touch and scope.by not in (None, "channel") and not scope.by_touch:
        raise ValueError("--where on the channels report goes with no breakdown or a touch field")
    key = "campaign" if scope.by == "campaign" else "channel"
    grouped = scope.by not in (None, "channel", "campaign")
    values: dict[tuple[str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(_METRICS, 0.0)
    )
    for (g, k), counts in _touches(store, scope, key, where).items():
        values[(g, k)].update(counts)
    if touch:
        for (g, k), credited in touch_credits(store, scope, model, where, settings).items():
            values[(g, k)].update(credited)
    else:
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
        row += [round(v["revenue"], 2), None if touch else round(v["spend"], 2)]
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


def _touches(
    store: Store, scope: ReportScope, key: str, where: tuple[Condition, ...] = ()
) -> dict[tuple[str, str], dict[str, float]]:
    db = store.database
    params = scope.params()
    # agg_events_minute counts every event, bots' too: it answers only when they are asked for.
    bots = "" if scope.include_bots else " AND NOT is_bot"
    if scope.by_touch or where:
        group = scope.touch_group(params)
        conditions = f" AND {all_of(where, params)}"
        sql = (
            f"SELECT {group} AS g, {key} AS k, "
            "countIf(event_type = 'impression') AS impressions, "
            "countIf(event_type = 'click') AS clicks "
            f"FROM {db}.events WHERE {scope.site_filter()} "
            f"AND {scope.period_filter('occurred_at')}{bots}{conditions} GROUP BY g, k"
        )
    elif scope.include_bots and scope.aligned_to(_MINUTE):
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
        for r in store.query(sql, params)
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


def touch_credits(
    store: Store,
    scope: ReportScope,
    model: str,
    where: tuple[Condition, ...] = (),
    settings: AttributionSettings | None = None,
) -> dict[tuple[str, str], dict[str, float]]:
    """``(touch field value, channel)`` → leads, customers, payments and revenue credited
    at query time under ``model`` (module docstring): every lead, payment and repeat of the
    period, its credit split over the touches that earned it, as the stream splits it."""
    db = store.database
    settings = settings or AttributionSettings()
    params = scope.params()
    group = scope.touch_group(params)
    meets = all_of(where, params)
    ms = "toUnixTimestamp64Milli(occurred_at)"
    sql = (
        "SELECT arraySort(x -> x.1, groupArrayIf((ts, channel, toString(g), toUInt8(meets)), "
        "event_type IN ('impression', 'click'))) AS touches, "
        "arraySort(x -> x.1, groupArrayIf((ts, event_type, toString(revenue)), "
        "event_type IN ('lead', 'order', 'payment', 'repeat'))) AS conversions "
        f"FROM (SELECT site_id, person_id, event_type, channel, revenue, {ms} AS ts, "
        f"{group} AS g, {meets} AS meets "
        f"FROM {resolved_events(db, include_bots=scope.include_bots)} "
        # No lower bound: whether a payment is a person's first depends on all before it.
        f"WHERE {scope.site_filter()} AND {ms} < {{end:Int64}}) "
        "GROUP BY site_id, person_id "
        "HAVING countIf(event_type IN ('lead', 'payment', 'repeat') "
        "AND ts >= {start:Int64}) > 0"
    )
    start = int(params["start"])  # type: ignore[call-overload]  # an int, from params()
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(("leads", "customers", "payments", "revenue"), 0.0)
    )
    sep = "\x1f"
    for row in store.query(sql, params):
        # The touch field's value and whether the touch meets ``where`` ride in the campaign
        # slot: credits are merged per (channel, slot), so they come back per value.
        path = [PathTouch(int(t[0]), str(t[1]), f"{t[2]}{sep}{int(t[3])}") for t in row["touches"]]
        history = [
            Conversion(int(at), str(kind), Decimal(str(r))) for at, kind, r in row["conversions"]
        ]
        for conversion, first_payment, credits in credit_history(
            path, history, since_ms=start, settings=settings
        ):
            for credit in credits:
                if credit.model != model:
                    continue
                value, _, kept = credit.campaign.partition(sep)
                if credit.channel == DIRECT and not credit.campaign:
                    value, kept = "(none)", "1" if not where else "0"
                if kept != "1":
                    continue
                cell = out[(value, credit.channel)]
                if conversion.kind == "lead":
                    cell["leads"] += credit.credit
                else:
                    cell["payments"] += credit.credit
                    cell["revenue"] += float(credit.revenue_credit)
                    if first_payment:
                        cell["customers"] += credit.credit
    return dict(out)

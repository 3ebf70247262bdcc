"""Channels & attribution: what each channel is credited with under the chosen model, every
rule-based model side by side, and channel economics (CPL, CAC, ROAS) against the spend.

Credits come from ``agg_attribution_day`` (credit and revenue sums per day; corrections are
negated credits, so the sums are exact), hence whole days of the range (``$__dateFilter``).
Customers are each person's first credited payment (``attributions``), as in
``funnel report channels``; spend comes from ``spend FINAL`` (a re-loaded day replaces the
old one). The data-driven models (markov, shapley) are computed at query time by
``funnel report attribution``, not here.
"""

from __future__ import annotations

from funnel.attribution import MODELS

from .common import (
    CAMPAIGN,
    CHANNEL,
    DB,
    SITE,
    campaign_filter,
    channel_filter,
    series_options,
    stat_options,
)
from .model import CustomVariable, Dashboard, Format, Panel, SqlQuery

__all__ = ["channels"]

UID = "funnel-channels"
PURCHASES = ("payment", "repeat")

MODEL = CustomVariable("model", "Attribution model", tuple(MODELS), default=("last_non_direct",))
CONVERSION = CustomVariable(
    "conversion",
    "Conversion",
    ("lead", "order", "payment", "repeat"),
    default=PURCHASES,
    multi=True,
)


def channels() -> Dashboard:
    return Dashboard(
        uid=UID,
        title="Channels & attribution",
        description="Credited conversions and revenue per channel under an attribution model, "
        "the models side by side, and CPL / CAC / ROAS from the loaded spend.",
        variables=(DB, SITE, MODEL, CONVERSION, CHANNEL, CAMPAIGN),
        time_from="now-30d",
        panels=(
            _total(
                "revenue",
                "Credited revenue (${model})",
                "Revenue credited to the selected channels: payments and repeats.",
                "currencyUSD",
            ),
            _total("spend", "Spend", "Loaded spend of the selected channels.", "currencyUSD"),
            _total("roas", "ROAS", "Credited revenue / spend.", "none"),
            _credited(),
            _revenue_over_time(),
            _side_by_side("credit", "conversions", "Models side by side: credited conversions"),
            _side_by_side("revenue_credit", "revenue", "Models side by side: credited revenue"),
            _economics(),
        ),
    )


def _where(time: str) -> str:
    return f"""site_id = ${{site:singlequote}}
          AND {time}
          AND {channel_filter()}
          AND {campaign_filter()}"""


def _purchases() -> str:
    return ", ".join(f"'{p}'" for p in PURCHASES)


def _credited() -> Panel:
    sql = f"""
SELECT
    channel,
    round(sum(credit), 2) AS conversions,
    round(toFloat64(sum(revenue_credit)), 2) AS revenue
FROM ${{db}}.agg_attribution_day
WHERE model = ${{model:singlequote}} AND conversion_type IN (${{conversion:singlequote}})
  AND {_where("$__dateFilter(bucket)")}
GROUP BY channel
ORDER BY revenue DESC, conversions DESC
"""
    return Panel(
        type="table",
        title="Credited conversions and revenue per channel (${model})",
        description="Sum of the credits (each conversion's credits add up to 1) and revenue "
        "credits of the selected conversion types.",
        targets=(SqlQuery(sql, ("channel", "conversions", "revenue")),),
        height=9,
        rename={"channel": "Channel", "conversions": "Conversions", "revenue": "Revenue"},
        options={"showHeader": True, "cellHeight": "sm"},
    )


def _revenue_over_time() -> Panel:
    sql = f"""
SELECT
    $__timeInterval(bucket) AS time,
    channel,
    toFloat64(sum(revenue_credit)) AS revenue
FROM ${{db}}.agg_attribution_day
WHERE model = ${{model:singlequote}} AND conversion_type IN (${{conversion:singlequote}})
  AND {_where("$__dateFilter(bucket)")}
GROUP BY time, channel
ORDER BY time
"""
    return Panel(
        type="timeseries",
        title="Credited revenue per channel (${model})",
        description="Revenue credits per channel and interval (days at the finest).",
        targets=(SqlQuery(sql, ("time", "channel", "revenue"), Format.TIME_SERIES),),
        height=9,
        unit="currencyUSD",
        options=series_options(),
        defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
    )


def _side_by_side(column: str, label: str, title: str) -> Panel:
    per_model = ",\n    ".join(
        f"round(toFloat64(sumIf({column}, model = '{m}')), 2) AS {m}" for m in MODELS
    )
    sql = f"""
SELECT
    channel,
    {per_model}
FROM ${{db}}.agg_attribution_day
WHERE conversion_type IN (${{conversion:singlequote}})
  AND {_where("$__dateFilter(bucket)")}
GROUP BY channel
ORDER BY last_non_direct DESC
"""
    return Panel(
        type="table",
        title=title,
        description=f"Credited {label} of the selected conversion types per channel under "
        "every rule-based model (each column sums to the same total).",
        targets=(SqlQuery(sql, ("channel", *MODELS)),),
        width=24,
        height=9,
        rename={"channel": "Channel", **{m: m.replace("_", " ") for m in MODELS}},
        options={"showHeader": True, "cellHeight": "sm"},
    )


def _economics_cte() -> str:
    purchases = _purchases()
    return f"""
WITH
    credited AS (
        SELECT
            channel,
            sumIf(credit, conversion_type = 'lead') AS leads,
            sumIf(credit, conversion_type IN ({purchases})) AS payments,
            toFloat64(sumIf(revenue_credit, conversion_type IN ({purchases}))) AS revenue
        FROM ${{db}}.agg_attribution_day
        WHERE model = ${{model:singlequote}}
          AND {_where("$__dateFilter(bucket)")}
        GROUP BY channel
    ),
    customers AS (
        SELECT channel, sum(credit) AS customers
        FROM ${{db}}.attributions
        WHERE model = ${{model:singlequote}} AND conversion_type = 'payment'
          AND {_where("$__timeFilter(converted_at)")}
          AND (person_id, conversion_id) IN (
              SELECT person_id, argMin(conversion_id, converted_at)
              FROM ${{db}}.attributions
              WHERE site_id = ${{site:singlequote}} AND model = ${{model:singlequote}}
                AND conversion_type = 'payment' AND credit > 0
              GROUP BY person_id
          )
        GROUP BY channel
    ),
    cost AS (
        SELECT channel, toFloat64(sum(cost)) AS spend
        FROM ${{db}}.spend FINAL
        WHERE {_where("$__dateFilter(date)")}
        GROUP BY channel
    ),
    economics AS (
        SELECT
            k.channel AS channel,
            ifNull(s.spend, 0) AS spend,
            ifNull(c.leads, 0) AS leads,
            ifNull(u.customers, 0) AS customers,
            ifNull(c.payments, 0) AS payments,
            ifNull(c.revenue, 0) AS revenue
        FROM (SELECT channel FROM credited UNION DISTINCT SELECT channel FROM cost) AS k
        LEFT JOIN credited AS c ON c.channel = k.channel
        LEFT JOIN customers AS u ON u.channel = k.channel
        LEFT JOIN cost AS s ON s.channel = k.channel
    )"""


def _economics() -> Panel:
    sql = f"""{_economics_cte()}
SELECT
    channel,
    round(spend, 2) AS spend,
    round(leads, 2) AS leads,
    round(customers, 2) AS customers,
    round(payments, 2) AS payments,
    round(revenue, 2) AS revenue,
    if(spend > 0, round(spend / nullIf(leads, 0), 2), NULL) AS cpl,
    if(spend > 0, round(spend / nullIf(customers, 0), 2), NULL) AS cac,
    if(spend > 0, round(revenue / spend, 2), NULL) AS roas,
    round(revenue / nullIf(payments, 0), 2) AS aov
FROM economics
ORDER BY spend DESC, revenue DESC
"""
    columns = (
        "channel",
        "spend",
        "leads",
        "customers",
        "payments",
        "revenue",
        "cpl",
        "cac",
        "roas",
        "aov",
    )
    return Panel(
        type="table",
        title="Channel economics (${model}): CPL, CAC, ROAS",
        description="CPL = spend / credited leads; CAC = spend / credited first payments "
        "(customers); ROAS = credited revenue / spend; AOV = revenue / payments. Empty "
        "without spend (organic channels).",
        targets=(SqlQuery(sql, columns),),
        width=24,
        height=9,
        rename={
            "channel": "Channel",
            "spend": "Spend",
            "leads": "Leads",
            "customers": "Customers",
            "payments": "Payments",
            "revenue": "Revenue",
            "cpl": "CPL",
            "cac": "CAC",
            "roas": "ROAS",
            "aov": "AOV",
        },
        options={"showHeader": True, "cellHeight": "sm"},
    )


def _total(column: str, title: str, description: str, unit: str) -> Panel:
    value = (
        "round(sum(revenue) / nullIf(sum(spend), 0), 2)" if column == "roas" else f"sum({column})"
    )
    sql = f"""{_economics_cte()}
SELECT {value} AS {column}
FROM economics
"""
    return Panel(
        type="stat",
        title=title,
        description=description,
        targets=(SqlQuery(sql, (column,)),),
        width=8,
        height=4,
        unit=unit,
        defaults={"decimals": 2},
        options=stat_options(),
    )

"""Live: events per second, the last 15 minutes, end-to-end freshness and the latest events.

Counts read ``agg_events_minute`` (events land exactly once, so its ``sum(events)`` is exact;
``uniqMerge(persons)`` is ClickHouse's approximate distinct count). Rates are per second over
the panel's interval, or per minute bucket when the interval is shorter than the buckets.
"The last 15 minutes" ends at the end of the time range, so the panels also read history.
Freshness (collector receipt → row committed in ClickHouse) comes from Prometheus.
"""

from __future__ import annotations

from .common import CHANNEL, DB, SITE, channel_filter, series_options, stat_options
from .model import Dashboard, Format, Panel, PromQuery, SqlQuery

__all__ = ["live"]

UID = "funnel-live"
_LAST_15 = "bucket >= $__toTime - INTERVAL 15 MINUTE AND bucket <= $__toTime"


def live() -> Dashboard:
    return Dashboard(
        uid=UID,
        title="Live",
        description="What is arriving now: events per second, the last 15 minutes, "
        "freshness p50/p99 and the latest events.",
        variables=(DB, SITE, CHANNEL),
        time_from="now-15m",
        refresh="10s",
        panels=(
            _last_15(),
            _revenue_15(),
            _freshness_now(),
            _per_second("event_type", "Events per second by type"),
            _per_second("channel", "Events per second by channel"),
            _freshness(),
            _latest(),
        ),
    )


def _per_second(label: str, title: str) -> Panel:
    sql = f"""
SELECT
    $__timeInterval(bucket) AS time,
    {label},
    sum(events) / greatest($__interval_s, 60) AS events_per_second
FROM ${{db}}.agg_events_minute
WHERE site_id = ${{site:singlequote}} AND $__timeFilter(bucket)
  AND {channel_filter()}
GROUP BY time, {label}
ORDER BY time
"""
    return Panel(
        type="timeseries",
        title=title,
        description="Accepted events per second (agg_events_minute), stacked.",
        targets=(SqlQuery(sql, ("time", label, "events_per_second"), Format.TIME_SERIES),),
        height=8,
        unit="reqps",
        options=series_options(),
        defaults={
            "custom": {"drawStyle": "line", "fillOpacity": 20, "stacking": {"mode": "normal"}}
        },
    )


def _last_15() -> Panel:
    sql = f"""
SELECT
    sum(a.events) AS events,
    uniqMerge(a.persons) AS persons,
    sumIf(a.events, a.event_type = 'lead') AS leads,
    sumIf(a.events, a.event_type IN ('payment', 'repeat')) AS payments
FROM ${{db}}.agg_events_minute AS a
WHERE site_id = ${{site:singlequote}} AND {_LAST_15}
  AND {channel_filter()}
"""
    return Panel(
        type="stat",
        title="Last 15 minutes",
        description="Events, persons (approximate distinct), leads and payments in the 15 "
        "minutes up to the end of the range.",
        targets=(SqlQuery(sql, ("events", "persons", "leads", "payments")),),
        height=5,
        options=stat_options(),
    )


def _revenue_15() -> Panel:
    sql = f"""
SELECT toFloat64(sum(a.revenue)) AS revenue
FROM ${{db}}.agg_events_minute AS a
WHERE site_id = ${{site:singlequote}} AND {_LAST_15}
  AND {channel_filter()}
"""
    return Panel(
        type="stat",
        title="Revenue, last 15 minutes",
        description="Revenue of the payment and repeat events of the last 15 minutes.",
        targets=(SqlQuery(sql, ("revenue",)),),
        width=6,
        height=5,
        unit="currencyUSD",
        defaults={"decimals": 2},
        options=stat_options(),
    )


def _quantile(q: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) "
        "(rate(funnel_freshness_seconds_bucket[$__rate_interval])))"
    )


def _freshness_now() -> Panel:
    return Panel(
        type="stat",
        title="Freshness p50 / p99",
        description="Collector receipt → row committed in ClickHouse (funnel_freshness_seconds).",
        targets=(
            PromQuery(_quantile("0.5"), "p50", "A"),
            PromQuery(_quantile("0.99"), "p99", "B"),
        ),
        width=6,
        height=5,
        unit="s",
        defaults={"decimals": 2},
        options=stat_options(),
    )


def _freshness() -> Panel:
    return Panel(
        type="timeseries",
        title="Freshness p50 / p99",
        description="End-to-end freshness over time: seconds from the collector's receipt of "
        "an event to its row committed in ClickHouse.",
        targets=(
            PromQuery(_quantile("0.5"), "p50", "A"),
            PromQuery(_quantile("0.99"), "p99", "B"),
        ),
        height=8,
        unit="s",
        options=series_options(),
    )


def _latest() -> Panel:
    sql = f"""
SELECT
    received_at,
    occurred_at,
    event_type,
    channel,
    campaign,
    person_id,
    toFloat64(revenue) AS revenue
FROM ${{db}}.events
WHERE site_id = ${{site:singlequote}} AND $__timeFilter(received_at)
  AND {channel_filter()}
ORDER BY received_at DESC
LIMIT 50
"""
    columns = (
        "received_at",
        "occurred_at",
        "event_type",
        "channel",
        "campaign",
        "person_id",
        "revenue",
    )
    return Panel(
        type="table",
        title="Latest events",
        description="The 50 events received last in the range (events table).",
        targets=(SqlQuery(sql, columns),),
        width=24,
        height=10,
        rename={
            "received_at": "Received",
            "occurred_at": "Occurred",
            "event_type": "Type",
            "channel": "Channel",
            "campaign": "Campaign",
            "person_id": "Person",
            "revenue": "Revenue",
        },
        options={"showHeader": True, "cellHeight": "sm"},
    )

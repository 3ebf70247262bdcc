"""Leads: temperature flow, routing queues, conversion to payment by temperature, and the
open leads by age with a simple 30-day forecast.

A lead is a person with a ``lead`` event; persons are resolved through identity merges
(``persons.merged_into``), as ``funnel report leads`` does. A lead's temperature and queue
are those of its latest ``lead_changes`` row (no change recorded: cold), except in the
conversion panel, which, as ``funnel report leads``, takes a client's temperature when it
converted (the last change before its first payment). The forecast is
deliberately simple: open leads times the share of older leads of the same temperature that paid
within 30 days of becoming a lead (``funnel report forecast`` refines it by age).
"""

from __future__ import annotations

from .common import DB, SITE, series_options
from .model import Dashboard, Format, Panel, SqlQuery

__all__ = ["leads"]

UID = "funnel-leads"
_ORDER = "indexOf(['hot', 'warm', 'cold'], temperature)"
_AGES = "['0-7d', '7-30d', '30-90d', '90d+']"


def leads() -> Dashboard:
    return Dashboard(
        uid=UID,
        title="Leads",
        description="Lead temperature over time, routing queues, conversion to payment by "
        "temperature, and the open leads by age with a 30-day forecast.",
        variables=(DB, SITE),
        time_from="now-30d",
        panels=(
            _changes("temperature", "Leads entering each temperature"),
            _changes("queue", "Leads routed per queue"),
            _conversion(),
            _open_by_queue(),
            _forecast(),
        ),
    )


_PEOPLE = """
WITH
    people AS (
        SELECT
            if(m.merged_into != '', m.merged_into, e.person_id) AS person,
            minIf(e.occurred_at, e.event_type = 'lead') AS lead_at,
            countIf(e.event_type IN ('payment', 'repeat')) > 0 AS paid,
            minIf(e.occurred_at, e.event_type IN ('payment', 'repeat')) AS paid_at
        FROM ${db}.events AS e
        LEFT JOIN (
            SELECT person_id, max(merged_into) AS merged_into
            FROM ${db}.persons
            WHERE site_id = ${site:singlequote}
            GROUP BY person_id
        ) AS m ON e.person_id = m.person_id
        WHERE e.site_id = ${site:singlequote}
          AND e.event_type IN ('lead', 'payment', 'repeat')
        GROUP BY person
        HAVING countIf(e.event_type = 'lead') > 0
    ),
    latest AS (
        SELECT
            person_id AS person,
            arraySort(x -> x.1, groupArrayIf((changed_at, temperature), changed_at <= $__toTime))
                AS history,
            argMaxIf(queue, changed_at, changed_at <= $__toTime) AS queue
        FROM ${db}.lead_changes
        WHERE site_id = ${site:singlequote}
        GROUP BY person_id
    ),
    leads AS (
        SELECT
            p.person AS person,
            p.lead_at AS lead_at,
            p.paid AND p.paid_at >= p.lead_at AS client,
            p.paid_at AS paid_at,
            p.paid AND p.paid_at <= $__toTime AS paid_by_now,
            arrayFilter(x -> x.1 < p.paid_at, l.history) AS before,
            if(client AND notEmpty(before), before[-1].2,
               if(empty(l.history), '', if(client, l.history[1].2, l.history[-1].2)))
                AS at_conversion,
            ifNull(nullIf(at_conversion, ''), 'cold') AS temperature,
            ifNull(nullIf(l.queue, ''), 'nurture') AS queue
        FROM people AS p
        LEFT JOIN latest AS l ON l.person = p.person
    )"""


def _changes(column: str, title: str) -> Panel:
    sql = f"""
SELECT
    $__timeInterval(changed_at) AS time,
    {column},
    count() AS leads
FROM ${{db}}.lead_changes
WHERE site_id = ${{site:singlequote}} AND $__timeFilter(changed_at)
GROUP BY time, {column}
ORDER BY time
"""
    what = "temperature" if column == "temperature" else "routing queue (lead_changes.queue)"
    return Panel(
        type="timeseries",
        title=title,
        description=f"Temperature changes per interval by the new {what}: every change is "
        "emitted once by the stream and routed to its queue.",
        targets=(SqlQuery(sql, ("time", column, "leads"), Format.TIME_SERIES),),
        height=8,
        options=series_options(),
        defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
    )


def _conversion() -> Panel:
    sql = f"""{_PEOPLE}
SELECT
    temperature,
    count() AS leads,
    countIf(client) AS clients,
    round(clients / leads, 4) AS conversion,
    round(quantileExactIf(0.5)(dateDiff('second', lead_at, paid_at) / 3600, client), 2)
        AS lead_to_client_p50_hours
FROM leads
WHERE $__timeFilter(lead_at)
GROUP BY temperature
ORDER BY {_ORDER}
"""
    columns = ("temperature", "leads", "clients", "conversion", "lead_to_client_p50_hours")
    return Panel(
        type="table",
        title="Conversion to payment by temperature",
        description="Leads of the range by their temperature, those who paid after becoming "
        "a lead (clients), the conversion and the median hours from lead to first payment.",
        targets=(SqlQuery(sql, columns),),
        height=8,
        rename={
            "temperature": "Temperature",
            "leads": "Leads",
            "clients": "Clients",
            "conversion": "Conversion",
            "lead_to_client_p50_hours": "Lead → client p50 (h)",
        },
        options={"showHeader": True, "cellHeight": "sm"},
    )


def _open_by_queue() -> Panel:
    sql = f"""{_PEOPLE}
SELECT queue, count() AS open_leads
FROM leads
WHERE lead_at <= $__toTime AND NOT paid_by_now
GROUP BY queue
ORDER BY open_leads DESC
"""
    return Panel(
        type="bargauge",
        title="Open leads per routing queue",
        description="Leads not yet paid at the end of the range, by their current queue.",
        targets=(SqlQuery(sql, ("queue", "open_leads")),),
        height=8,
        options={
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
            "reduceOptions": {"values": True, "calcs": [], "fields": "/^open_leads$/"},
        },
    )


def _forecast() -> Panel:
    sql = f"""{_PEOPLE},
    history AS (
        SELECT
            temperature,
            countIf(client AND paid_at <= lead_at + INTERVAL 30 DAY) / count() AS rate
        FROM leads
        WHERE lead_at <= $__toTime - INTERVAL 30 DAY
        GROUP BY temperature
    )
SELECT
    o.temperature AS temperature,
    multiIf(o.age_days < 7, '0-7d', o.age_days < 30, '7-30d', o.age_days < 90, '30-90d', '90d+')
        AS age,
    count() AS open_leads,
    round(any(h.rate), 4) AS rate_30d,
    round(open_leads * rate_30d, 2) AS expected_payments_30d
FROM (
    SELECT temperature, dateDiff('day', lead_at, $__toTime) AS age_days
    FROM leads
    WHERE lead_at <= $__toTime AND NOT paid_by_now
) AS o
LEFT JOIN history AS h ON h.temperature = o.temperature
GROUP BY temperature, age
ORDER BY {_ORDER}, indexOf({_AGES}, age)
"""
    columns = ("temperature", "age", "open_leads", "rate_30d", "expected_payments_30d")
    return Panel(
        type="table",
        title="Open leads by age, and expected payments in 30 days",
        description="Open leads at the end of the range by temperature and age; rate = share "
        "of the leads of that temperature older than 30 days that paid within 30 days.",
        targets=(SqlQuery(sql, columns),),
        height=8,
        rename={
            "temperature": "Temperature",
            "age": "Age",
            "open_leads": "Open leads",
            "rate_30d": "30-day rate",
            "expected_payments_30d": "Expected payments (30 d)",
        },
        options={"showHeader": True, "cellHeight": "sm"},
    )

"""Funnel overview: how many people reach each step, the conversion between steps, and where
the people who stopped are (still in their window, or dropped).

The time range selects funnel *entries*, with the semantics of ``funnel report funnel``
(DESIGN §6 periods): a person counts through the chains whose step-1 event falls in the range,
at the deepest step any of them reached within the funnel's window (also after the range), so
step counts never increase from one step to the next. The panels compute those chains from
``events`` with ``windowFunnel`` (:func:`storage.reports.funnels.chain_levels_sql`, the
reports' own SQL, one branch per configured funnel; bots left out); the channel and campaign
filters select the entry touch. The split into in window and dropped joins the latest
``persons`` row of each person (``argMax(…, updated_at)``), merged persons left out.
"""

from __future__ import annotations

from funnel.funnels import FunnelCatalog
from storage.reports.funnels import chain_levels_sql
from storage.reports.scope import resolved_events

from .common import (
    CAMPAIGN,
    CHANNEL,
    DB,
    FUNNEL,
    SITE,
    campaign_filter,
    channel_filter,
    quote,
    series_options,
    stat_options,
    step_names,
)
from .model import Dashboard, Format, Panel, SqlQuery

__all__ = ["overview"]

UID = "funnel-overview"


def overview(catalog: FunnelCatalog) -> Dashboard:
    names = step_names(catalog)
    levels = _levels(catalog, "''")
    return Dashboard(
        uid=UID,
        title="Funnel overview",
        description="Persons per step, step and overall conversion, drop-off, and who is "
        "still in their conversion window. The time range selects funnel entries.",
        variables=(DB, SITE, FUNNEL, CHANNEL, CAMPAIGN),
        time_from="now-30d",
        panels=(
            _entered(levels),
            _overall(names, levels),
            _status(names, levels),
            _steps(names, levels),
            _conversion(names, levels),
            _stopped(names, levels),
            _over_time(names, _levels(catalog, "$__timeInterval(occurred_at)")),
        ),
    )


def _levels(catalog: FunnelCatalog, group: str) -> str:
    """``(site_id, person_id, g, level)`` of the selected funnel over the time range: each
    person's deepest chain entering in the range (per ``group`` value of the entry)."""
    branches = [
        chain_levels_sql(
            spec,
            events=resolved_events("${db}"),
            where=f"site_id = ${{site:singlequote}} "
            f"AND ${{funnel:singlequote}} = {quote(spec.name)}",
            start="toInt64(toUnixTimestamp($__fromTime)) * 1000",
            end="(toInt64(toUnixTimestamp($__toTime)) * 1000 + 1)",
            group=group,
            entry=f"{channel_filter()} AND {campaign_filter()}",
        )
        for spec in sorted(catalog.specs, key=lambda s: s.name)
    ]
    return "(" + "\n    UNION ALL\n    ".join(f"SELECT * FROM {b}" for b in branches) + ")"


def _counts(levels: str) -> str:
    return f"""
    counts AS (
        SELECT step_index, count() AS persons
        FROM {levels}
        ARRAY JOIN range(1, toUInt64(level) + 1) AS step_index
        WHERE level > 0
        GROUP BY step_index
    )"""


def _with_steps(names: str, levels: str) -> str:
    """Every configured step of the funnel (zero when nobody reached it) and its count."""
    return f"""
WITH
    {names}[${{funnel:singlequote}}] AS names,
    steps AS (
        SELECT arrayJoin(arrayEnumerate(names)) AS step_index, names[step_index] AS name
    ),{_counts(levels)}"""


def _steps(names: str, levels: str) -> Panel:
    sql = f"""{_with_steps(names, levels)}
SELECT concat(toString(s.step_index), '. ', s.name) AS step, ifNull(c.persons, 0) AS persons
FROM steps AS s
LEFT JOIN counts AS c ON s.step_index = c.step_index
ORDER BY s.step_index
"""
    return Panel(
        type="bargauge",
        title="Persons per step",
        description="Distinct persons who entered the funnel in the range and reached each "
        "step (agg_stage_hour, sum(persons): corrections net out).",
        targets=(SqlQuery(sql, ("step", "persons")),),
        height=9,
        options={
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
            "valueMode": "color",
            "namePlacement": "left",
            "reduceOptions": {"values": True, "calcs": [], "fields": "/^persons$/"},
        },
    )


def _conversion(names: str, levels: str) -> Panel:
    sql = f"""{_with_steps(names, levels)}
SELECT
    step,
    persons,
    round(persons / nullIf(previous, 0), 4) AS step_conversion,
    round(persons / nullIf(first, 0), 4) AS overall_conversion,
    multiIf(persons = 0, '-',
            first / persons >= 10, concat('1:', toString(round(first / persons))),
            concat('1:', toString(round(first / persons, 1)))) AS one_in,
    if(step_index = 1, 0, previous - persons) AS lost
FROM (
    SELECT
        s.step_index AS step_index,
        concat(toString(s.step_index), '. ', s.name) AS step,
        ifNull(c.persons, 0) AS persons,
        lagInFrame(persons, 1, 0) OVER w AS previous,
        first_value(persons) OVER w AS first
    FROM steps AS s
    LEFT JOIN counts AS c ON s.step_index = c.step_index
    WINDOW w AS (ORDER BY step_index ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
ORDER BY step_index
"""
    columns = ("step", "persons", "step_conversion", "overall_conversion", "one_in", "lost")
    return Panel(
        type="table",
        title="Step and overall conversion",
        description="Step conversion = step n / step n-1; overall = step n / step 1, also as "
        "1:N; lost = persons of the previous step who did not reach this one.",
        targets=(SqlQuery(sql, columns),),
        height=9,
        rename={
            "step": "Step",
            "persons": "Persons",
            "step_conversion": "Step conversion",
            "overall_conversion": "Overall conversion",
            "one_in": "1:N",
            "lost": "Lost from previous step",
        },
        defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
        options={"showHeader": True, "cellHeight": "sm"},
    )


def _entered(levels: str) -> Panel:
    sql = f"""
WITH{_counts(levels)}
SELECT sumIf(persons, step_index = 1) AS entered
FROM counts
"""
    return Panel(
        type="stat",
        title="Entered the funnel",
        description="Persons who reached step 1 in the range (funnel entries).",
        targets=(SqlQuery(sql, ("entered",)),),
        width=6,
        height=5,
        options=stat_options(),
    )


def _overall(names: str, levels: str) -> Panel:
    sql = f"""
WITH
    length({names}[${{funnel:singlequote}}]) AS last_step,{_counts(levels)}
SELECT sumIf(persons, step_index = last_step) / nullIf(sumIf(persons, step_index = 1), 0)
    AS overall_conversion
FROM counts
"""
    return Panel(
        type="stat",
        title="Overall conversion",
        description="Persons who reached the last step / persons who entered.",
        targets=(SqlQuery(sql, ("overall_conversion",)),),
        width=6,
        height=5,
        unit="percentunit",
        defaults={"decimals": 2},
        options=stat_options(),
    )


def _stopped_people(names: str, levels: str) -> str:
    """Each person who entered in the range: the deepest step of their chains entering in it,
    and their status there: converted at the last step, else in window when their funnel
    status (latest state) is, else dropped (as ``funnel report funnel`` splits them)."""
    return f"""
    stopped AS (
        SELECT r.level AS level,
               multiIf(r.level >= length({names}[${{funnel:singlequote}}]), 'converted',
                       p.status = 'in_window', 'in_window', 'dropped') AS status
        FROM (SELECT * FROM {levels} WHERE level > 0) AS r
        INNER JOIN (
            SELECT site_id, person_id,
                   argMax(funnel_status[${{funnel:singlequote}}], updated_at) AS status,
                   argMax(merged_into, updated_at) AS merged
            FROM ${{db}}.persons
            WHERE site_id = ${{site:singlequote}}
            GROUP BY site_id, person_id
            HAVING merged = ''
        ) AS p ON r.site_id = p.site_id AND r.person_id = p.person_id
    )"""


def _stopped(names: str, levels: str) -> Panel:
    sql = f"""
WITH
    {names}[${{funnel:singlequote}}] AS names,{_stopped_people(names, levels)}
SELECT
    concat(toString(level), '. ', names[level]) AS step,
    countIf(status = 'in_window') AS in_window,
    countIf(status = 'dropped') AS dropped
FROM stopped
WHERE status != 'converted'
GROUP BY level
ORDER BY level
"""
    return Panel(
        type="barchart",
        title="Stopped at each step: still in window vs dropped",
        description="Persons whose furthest step is this one. In window: can still convert; "
        "dropped: their window expired (set by the stream's timer, never guessed here).",
        targets=(SqlQuery(sql, ("step", "in_window", "dropped")),),
        height=9,
        options={
            "orientation": "auto",
            "stacking": "normal",
            "showValue": "auto",
            "xTickLabelRotation": 0,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    )


def _status(names: str, levels: str) -> Panel:
    sql = f"""
WITH{_stopped_people(names, levels)}
SELECT status, count() AS persons
FROM stopped
GROUP BY status
ORDER BY status
"""
    return Panel(
        type="piechart",
        title="Converted, in window, dropped",
        description="Funnel status (persons.funnel_status, latest version) of the persons who "
        "entered in the range.",
        targets=(SqlQuery(sql, ("status", "persons")),),
        height=5,
        options={
            "pieType": "donut",
            "reduceOptions": {"values": True, "calcs": [], "fields": "/^persons$/"},
            "legend": {"displayMode": "table", "placement": "right", "values": ["value"]},
        },
    )


def _over_time(names: str, levels: str) -> Panel:
    sql = f"""
WITH
    {names}[${{funnel:singlequote}}] AS names
SELECT
    g AS time,
    concat(toString(step_index), '. ', names[step_index]) AS step,
    count() AS persons
FROM {levels}
ARRAY JOIN range(1, toUInt64(level) + 1) AS step_index
WHERE level > 0
GROUP BY time, step_index
ORDER BY time
"""
    return Panel(
        type="timeseries",
        title="Persons reaching each step, by entry time",
        description="Each point: persons who entered in that interval and reached the step.",
        targets=(SqlQuery(sql, ("time", "step", "persons"), Format.TIME_SERIES),),
        width=24,
        height=9,
        options=series_options(),
        defaults={"custom": {"drawStyle": "line", "fillOpacity": 10, "lineWidth": 1}},
    )

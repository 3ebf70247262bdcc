"""Funnel overview: how many people reach each step, the conversion between steps, and where
the people who stopped are (still in their window, or dropped).

The period is funnel *entry* (``entered_at``, the start of the chain that reached a step), as
in ``funnel report funnel``: the panels show the people who entered in the time range and how
far they got, also after it. Step counts read ``agg_stage_hour`` (``sum(persons)``, exact under
corrections), so the range is rounded to whole entry hours; the split into in window and
dropped reads ``stage_reached`` (``sum(sign)`` per person and step) and the latest
``persons`` row of each person (``argMax(…, updated_at)``), merged persons left out.
"""

from __future__ import annotations

from funnel.funnels import FunnelCatalog

from .common import (
    CAMPAIGN,
    CHANNEL,
    DB,
    FUNNEL,
    SITE,
    campaign_filter,
    channel_filter,
    series_options,
    stat_options,
    step_names,
)
from .model import Dashboard, Format, Panel, SqlQuery

__all__ = ["overview"]

UID = "funnel-overview"


def overview(catalog: FunnelCatalog) -> Dashboard:
    names = step_names(catalog)
    return Dashboard(
        uid=UID,
        title="Funnel overview",
        description="Persons per step, step and overall conversion, drop-off, and who is "
        "still in their conversion window. The time range selects funnel entries.",
        variables=(DB, SITE, FUNNEL, CHANNEL, CAMPAIGN),
        time_from="now-30d",
        panels=(
            _entered(),
            _overall(names),
            _status(),
            _steps(names),
            _conversion(names),
            _stopped(names),
            _over_time(names),
        ),
    )


def _counts() -> str:
    return f"""
    counts AS (
        SELECT step_index, sum(persons) AS persons
        FROM ${{db}}.agg_stage_hour
        WHERE site_id = ${{site:singlequote}} AND funnel = ${{funnel:singlequote}}
          AND $__timeFilter(bucket)
          AND {channel_filter()}
          AND {campaign_filter()}
        GROUP BY step_index
    )"""


def _with_steps(names: str) -> str:
    """Every configured step of the funnel (zero when nobody reached it) and its count."""
    return f"""
WITH
    {names}[${{funnel:singlequote}}] AS names,
    steps AS (
        SELECT arrayJoin(arrayEnumerate(names)) AS step_index, names[step_index] AS name
    ),{_counts()}"""


def _steps(names: str) -> Panel:
    sql = f"""{_with_steps(names)}
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


def _conversion(names: str) -> Panel:
    sql = f"""{_with_steps(names)}
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


def _entered() -> Panel:
    sql = f"""
WITH{_counts()}
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


def _overall(names: str) -> Panel:
    sql = f"""
WITH
    length({names}[${{funnel:singlequote}}]) AS last_step,{_counts()}
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


def _stopped_people() -> str:
    """Each person who entered in the range: the furthest step (net of corrections) and the
    funnel status of their latest state."""
    return f"""
    stopped AS (
        SELECT r.level AS level, p.status AS status
        FROM (
            SELECT site_id, person_id, max(step_index) AS level
            FROM (
                SELECT site_id, person_id, step_index, sum(sign) AS net
                FROM ${{db}}.stage_reached
                WHERE site_id = ${{site:singlequote}} AND funnel = ${{funnel:singlequote}}
                  AND $__timeFilter(entered_at)
                  AND {channel_filter("entry_channel")}
                  AND {campaign_filter("entry_campaign")}
                GROUP BY site_id, person_id, step_index
                HAVING net > 0
            )
            GROUP BY site_id, person_id
        ) AS r
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


def _stopped(names: str) -> Panel:
    sql = f"""
WITH
    {names}[${{funnel:singlequote}}] AS names,{_stopped_people()}
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


def _status() -> Panel:
    sql = f"""
WITH{_stopped_people()}
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


def _over_time(names: str) -> Panel:
    sql = f"""
WITH
    {names}[${{funnel:singlequote}}] AS names
SELECT
    $__timeInterval(bucket) AS time,
    concat(toString(step_index), '. ', names[step_index]) AS step,
    sum(persons) AS persons
FROM ${{db}}.agg_stage_hour
WHERE site_id = ${{site:singlequote}} AND funnel = ${{funnel:singlequote}}
  AND $__timeFilter(bucket)
  AND {channel_filter()}
  AND {campaign_filter()}
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

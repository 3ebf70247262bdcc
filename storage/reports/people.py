"""The people behind a number: who reached, stopped at or dropped from a funnel's step.

``funnel report people --funnel sales --step 3 --status dropped`` lists the persons counted in
the funnel report's "dropped" column at step 3, for the same period, site and funnel
(configured, or asked at query time with ``--steps``), so a number on a dashboard turns into a
call list for a CRM (``--format csv|json``):

* without ``--status``: everyone who reached step N (the report's step count);
* ``--status dropped`` / ``in_window``: whose furthest step is N and whose window closed / is
  still open (the report's split at step N);
* ``--status converted``: who reached the last step (N is ignored);
* ``--temperature cold|warm|hot``: only persons whose lead temperature is that now.

Per person: the site, person and customer ids, the furthest step and status, the first
channel (of their first event), the last event and when it happened, the sales manager of
their latest event that names one, and their lead temperature. Newest last event first, at
most ``limit`` persons (the ``meta`` says when more matched).
"""

from __future__ import annotations

from funnel.report import Table
from storage.backends import Store
from storage.reports.funnels import Funnel, as_query, person_status_sql
from storage.reports.scope import ReportScope, resolved_events

__all__ = ["STATUSES", "TEMPERATURES", "people_report"]

STATUSES = ("dropped", "in_window", "converted")
TEMPERATURES = ("cold", "warm", "hot")
COLUMNS = (
    "site_id",
    "person_id",
    "customer_id",
    "step",
    "status",
    "first_channel",
    "last_event",
    "last_event_at",
    "manager",
    "temperature",
)


def people_report(
    store: Store,
    funnel: Funnel,
    scope: ReportScope | None = None,
    *,
    step: int = 1,
    status: str | None = None,
    temperature: str | None = None,
    limit: int = 10_000,
) -> Table:
    scope = scope or ReportScope()
    if scope.by is not None:
        raise ValueError("the people report lists persons: it takes no breakdown")
    spec = as_query(funnel)
    if not 1 <= step <= len(spec.steps):
        raise ValueError(f"step is from 1 to {len(spec.steps)} (the funnel's steps)")
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    if temperature is not None and temperature not in TEMPERATURES:
        raise ValueError(f"unknown temperature {temperature!r}: one of {', '.join(TEMPERATURES)}")
    db = store.database
    params: dict[str, object] = {}
    persons = person_status_sql(db, spec, scope, params)
    params.update(step=step, status=status or "", temperature=temperature or "", limit=limit + 1)
    if status == "converted":
        which = "l.status = 'converted'"
    elif status is not None:
        which = "l.level = {step:UInt8} AND l.status = {status:String}"
    else:
        which = "l.level >= {step:UInt8}"
    events = resolved_events(db, include_bots=scope.include_bots)
    sql = (
        "SELECT l.site_id AS site_id, l.person_id AS person_id, d.customer_id AS customer_id, "
        "l.level AS level, l.status AS status, d.first_channel AS first_channel, "
        "d.last_event AS last_event, d.last_event_at AS last_event_at, d.manager AS manager, "
        "ifNull(t.temperature, '') AS temperature "
        f"FROM (SELECT site_id, person_id, max(level) AS level, any(status) AS status "
        f"FROM {persons} GROUP BY site_id, person_id) AS l "
        "LEFT JOIN (SELECT site_id, person_id, "
        "argMaxIf(customer_id, occurred_at, customer_id != '') AS customer_id, "
        "argMin(channel, occurred_at) AS first_channel, "
        "argMax(event_type, occurred_at) AS last_event, max(occurred_at) AS last_event_at, "
        "argMaxIf(manager_id, occurred_at, manager_id != '') AS manager "
        f"FROM {events} WHERE {scope.site_filter()} GROUP BY site_id, person_id) AS d "
        "ON l.site_id = d.site_id AND l.person_id = d.person_id "
        "LEFT JOIN (SELECT site_id, person_id, argMax(lead_temperature, updated_at) AS temperature "
        f"FROM {db}.persons WHERE {scope.site_filter()} GROUP BY site_id, person_id) AS t "
        "ON l.site_id = t.site_id AND l.person_id = t.person_id "
        f"WHERE {which} AND ({{temperature:String}} = '' "
        "OR ifNull(t.temperature, '') = {temperature:String}) "
        "ORDER BY last_event_at DESC, site_id, person_id LIMIT {limit:UInt64} "
        "SETTINGS join_use_nulls = 1"
    )
    names = spec.names
    rows = [
        (
            str(r["site_id"]),
            str(r["person_id"]),
            str(r["customer_id"] or ""),
            names[int(r["level"]) - 1],
            str(r["status"]),
            str(r["first_channel"] or ""),
            str(r["last_event"] or ""),
            _iso(r["last_event_at"]),
            str(r["manager"] or ""),
            str(r["temperature"] or ""),
        )
        for r in store.query(sql, params)
    ]
    more = len(rows) > limit
    what = {"dropped": "dropped at", "in_window": "still in window at"}.get(status or "", "at")
    title = (
        f"People who converted in {spec.name!r}"
        if status == "converted"
        else f"People {what} step {step} ({names[step - 1]}) of {spec.name!r}"
    )
    return Table(
        title=title,
        columns=COLUMNS,
        rows=tuple(rows[:limit]),
        meta={"funnel": spec.name, "step": step, "status": status, "truncated": more},
    )


def _iso(value: object) -> str:
    if value is None:
        return ""
    iso = getattr(value, "isoformat", None)
    return iso(timespec="milliseconds") if iso is not None else str(value)

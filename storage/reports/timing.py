"""The time-to-convert report: how long people take between steps, and the sales cycle.

Between consecutive steps of a funnel: the time from reaching step n-1 to reaching step n
(``stage_reached``, corrections netted out), for the people who reached step n, with the
period on ``entered_at`` like the funnel report. The sales cycle: from a person's first event
to their first payment, for the people whose first payment falls in the period. Durations are
in hours: p50, p90 and the mean.
"""

from __future__ import annotations

from funnel.funnels import FunnelSpec
from funnel.report import Table
from storage.backends import Store
from storage.reports.funnels import stage_rows
from storage.reports.query import Condition, all_of
from storage.reports.scope import ReportScope, person_groups, resolved_events

__all__ = ["time_to_convert_report"]

_HOURS = "/ 3600000.0"


def time_to_convert_report(
    store: Store,
    spec: FunnelSpec,
    scope: ReportScope | None = None,
    *,
    where: tuple[Condition, ...] = (),
) -> Table:
    """``where``: only the chains whose entry event meets these conditions (and, for the
    sales cycle, the persons whose first event does); a touch breakdown groups by that field
    of the entry event (of the first event for the sales cycle)."""
    scope = scope or ReportScope()
    db = store.database
    params: dict[str, object] = {**scope.params(), "funnel": spec.name}
    steps = (
        "SELECT g, step_index, count() AS persons, "
        f"quantileExact(0.5)(dt) {_HOURS} AS p50_hours, "
        f"quantileExact(0.9)(dt) {_HOURS} AS p90_hours, avg(dt) {_HOURS} AS mean_hours FROM ("
        "SELECT g, step_index, toUnixTimestamp64Milli(reached_at) - "
        "lagInFrame(toUnixTimestamp64Milli(reached_at)) OVER w AS dt, "
        "lagInFrame(step_index) OVER w AS previous FROM ("
        "SELECT site_id, person_id, step_index, g, reached_at, sum(sign) AS net "
        f"FROM {stage_rows(db, scope, params, where, spec)} "
        "GROUP BY site_id, person_id, step_index, g, reached_at HAVING net > 0) "
        "WINDOW w AS (PARTITION BY site_id, person_id ORDER BY step_index "
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)"
        # Only consecutive steps: in an any-order funnel (or after a retraction) a person's
        # first row may be above step 1, and has no previous step to measure from.
        ") WHERE step_index > 1 AND previous = step_index - 1 "
        "GROUP BY g, step_index ORDER BY g, step_index"
    )
    names = [s.name for s in spec.steps]
    rows: list[tuple[object, ...]] = []
    for r in store.query(steps, params):
        i = int(r["step_index"])
        rows.append(
            (
                str(r["g"]),
                f"{names[i - 2]} → {names[i - 1]}",
                int(r["persons"]),
                round(float(r["p50_hours"]), 2),
                round(float(r["p90_hours"]), 2),
                round(float(r["mean_hours"]), 2),
            )
        )
    rows.extend(_sales_cycle(store, scope, where))
    grouped = scope.by is not None
    columns: tuple[str, ...] = ("group", "between", "persons", "p50_hours", "p90_hours")
    columns += ("mean_hours",)
    if not grouped:
        columns, rows = columns[1:], [row[1:] for row in rows]
    return Table(
        title=f"Time to convert ({spec.name})",
        columns=columns,
        rows=tuple(rows),
        meta={"funnel": spec.name},
    )


def _sales_cycle(
    store: Store, scope: ReportScope, where: tuple[Condition, ...]
) -> list[tuple[object, ...]]:
    db = store.database
    params = scope.params()
    touch = scope.by_touch
    first_g = scope.touch_group(params)
    conditions = all_of(where, params)
    if scope.by in ("temperature", "manager"):
        assert scope.by is not None
        join = (
            f"LEFT JOIN {person_groups(db, scope.by)} AS p "
            "ON c.site_id = p.site_id AND c.person_id = p.person_id"
        )
        group = "ifNull(p.g, '(unknown)')"
    else:
        join = ""
        key = {"channel": "c.first_channel", "campaign": "c.first_campaign"}.get(scope.by or "")
        key = "c.first_g" if touch else key
        group = key or scope.period_group("fromUnixTimestamp64Milli(c.paid, 'UTC')")
    sql = (
        f"SELECT {group} AS g, count() AS persons, "
        f"quantileExact(0.5)(c.paid - c.first) {_HOURS} AS p50_hours, "
        f"quantileExact(0.9)(c.paid - c.first) {_HOURS} AS p90_hours, "
        f"avg(c.paid - c.first) {_HOURS} AS mean_hours FROM ("
        "SELECT site_id, person_id, min(toUnixTimestamp64Milli(occurred_at)) AS first, "
        "minIf(toUnixTimestamp64Milli(occurred_at), event_type = 'payment') AS paid, "
        "argMin(channel, occurred_at) AS first_channel, "
        "argMin(campaign, occurred_at) AS first_campaign, "
        f"argMin({first_g}, occurred_at) AS first_g, "
        f"argMin(toUInt8({conditions}), occurred_at) AS first_meets "
        f"FROM {resolved_events(db, include_bots=scope.include_bots)} "
        f"WHERE {scope.site_filter()} GROUP BY site_id, person_id "
        "HAVING paid > 0 AND paid >= {start:Int64} AND paid < {end:Int64} AND first_meets) AS c "
        f"{join} GROUP BY g ORDER BY g SETTINGS join_use_nulls = 1"
    )
    return [
        (
            str(r["g"]),
            "first touch → payment",
            int(r["persons"]),
            round(float(r["p50_hours"]), 2),
            round(float(r["p90_hours"]), 2),
            round(float(r["mean_hours"]), 2),
        )
        for r in store.query(sql, params)
    ]

"""Customer reports: cohorts, leads and the forecast from open leads.

All three read one row per resolved person built from ``events`` (first event, first lead,
first and last payment, purchases, revenue) and ``lead_changes`` (temperature history); the
arithmetic is the pure core's (:mod:`funnel.customers`, which documents each figure), so it is
the same for both store backends.

* ``cohorts`` — people grouped by the period (``by``: day, week or month; default month) of
  their first touch (``cohort="first_touch"``) or first payment (``"first_payment"``); churn is
  counted at the end of the period, or now.
* ``leads`` — for the leads of the period, by temperature at conversion (the first payment;
  current for open leads), or by ``by``.
* ``forecast`` — from the leads open at the end of the period (or now).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from funnel.customers import (
    AGE_BUCKETS,
    AT_CONVERSION,
    DAY_MS,
    PersonFacts,
    cohort_stats,
    forecast,
    lead_stats,
)
from funnel.report import Table
from storage.backends import Store
from storage.reports.scope import PURCHASES, ReportScope, person_groups, resolved_events

__all__ = ["AGE_BUCKETS", "cohorts_report", "forecast_report", "leads_report", "person_facts"]


_FACT_COLUMNS = (
    "site_id",
    "person_id",
    "first_ms",
    "lead_ms",
    "first_paid_ms",
    "last_paid_ms",
    "purchases",
    "paid_revenue",
    "first_revenue",
    "touch_times",
)


def person_facts(store: Store, scope: ReportScope) -> list[PersonFacts]:
    """One :class:`PersonFacts` per resolved person of the site (all time: cohorts and
    forecasts need history), grouped by the scope's person-level or touch breakdown."""
    db = store.database
    purchases = ", ".join(f"'{p}'" for p in PURCHASES)
    ms = "toUnixTimestamp64Milli(occurred_at)"
    if scope.by in ("temperature", "manager"):
        assert scope.by is not None
        group_join = (
            f"LEFT JOIN {person_groups(db, scope.by)} AS p "
            "ON f.site_id = p.site_id AND f.person_id = p.person_id"
        )
        group = "ifNull(p.g, '(unknown)')"
    else:
        group_join = ""
        group = {"channel": "f.first_channel", "campaign": "f.first_campaign"}.get(
            scope.by or "", "''"
        )
    # Every column named: with a third table joined (the person-level breakdown) ClickHouse
    # names the columns of ``f.*`` ``f.site_id``, ``f.person_id``, ... (issue 12).
    columns = ", ".join(f"f.{c} AS {c}" for c in _FACT_COLUMNS)
    sql = (
        f"SELECT {columns}, {group} AS g, ifNull(l.changes, []) AS changes FROM ("
        f"SELECT site_id, person_id, min({ms}) AS first_ms, "
        f"minIf({ms}, event_type = 'lead') AS lead_ms, "
        f"minIf({ms}, event_type IN ({purchases})) AS first_paid_ms, "
        f"maxIf({ms}, event_type IN ({purchases})) AS last_paid_ms, "
        f"countIf(event_type IN ({purchases})) AS purchases, "
        f"toFloat64(sumIf(revenue, event_type IN ({purchases}))) AS paid_revenue, "
        f"toFloat64(argMinIf(revenue, occurred_at, event_type IN ({purchases}))) AS first_revenue, "
        "argMin(channel, occurred_at) AS first_channel, "
        "argMin(campaign, occurred_at) AS first_campaign, "
        f"groupArrayIf({ms}, event_type IN ('impression', 'click')) AS touch_times "
        f"FROM {resolved_events(db)} WHERE {scope.site_filter()} GROUP BY site_id, person_id"
        ") AS f LEFT JOIN ("
        "SELECT site_id, person_id, arraySort(x -> x.1, groupArray("
        "(toUnixTimestamp64Milli(changed_at), temperature))) AS changes "
        f"FROM {db}.lead_changes GROUP BY site_id, person_id) AS l "
        "ON f.site_id = l.site_id AND f.person_id = l.person_id "
        f"{group_join} SETTINGS join_use_nulls = 1"
    )
    out = []
    for r in store.query(sql, scope.params()):
        first_paid = int(r["first_paid_ms"]) or None
        out.append(
            PersonFacts(
                site_id=str(r["site_id"]),
                person_id=str(r["person_id"]),
                first_ms=int(r["first_ms"]),
                lead_ms=int(r["lead_ms"]) or None,
                first_paid_ms=first_paid,
                last_paid_ms=int(r["last_paid_ms"]) or None,
                purchases=int(r["purchases"]),
                revenue=float(r["paid_revenue"]),
                first_payment=float(r["first_revenue"] or 0),
                touches_before_sale=sum(
                    1 for t in r["touch_times"] if first_paid is not None and int(t) <= first_paid
                ),
                group=str(r["g"]),
                temperatures=tuple((int(t), str(v)) for t, v in r["changes"]),
            )
        )
    return out


def _period(scope: ReportScope, at_ms: int) -> str:
    moment = datetime.fromtimestamp(at_ms / 1000, UTC).date()
    if scope.by == "day":
        return moment.isoformat()
    if scope.by == "week":
        return (moment - timedelta(days=moment.weekday())).isoformat()
    return moment.replace(day=1).isoformat()


def _in(scope: ReportScope, at_ms: int | None) -> bool:
    params = scope.params()
    return at_ms is not None and int(params["start"]) <= at_ms < int(params["end"])  # type: ignore[call-overload]  # ints, from params()


def _now_ms(scope: ReportScope, now: datetime | None) -> int:
    moment = scope.end or now or datetime.now(UTC)
    return int(moment.timestamp() * 1000)


def cohorts_report(
    store: Store,
    scope: ReportScope | None = None,
    *,
    cohort: str = "first_touch",
    churn_days: int = 90,
    now: datetime | None = None,
) -> Table:
    scope = scope or ReportScope(by="month")
    if cohort not in ("first_touch", "first_payment"):
        raise ValueError("cohort is first_touch or first_payment")
    if scope.by not in (None, "day", "week", "month"):
        raise ValueError("cohorts are by day, week or month")
    as_of = _now_ms(scope, now)
    groups: dict[str, list[PersonFacts]] = defaultdict(list)
    for p in person_facts(store, ReportScope(site=scope.site)):
        start = p.first_ms if cohort == "first_touch" else p.first_paid_ms
        if start is not None and _in(scope, start):
            groups[_period(scope, start)].append(p)
    rows = []
    for period, people in sorted(groups.items()):
        c = cohort_stats(people, as_of, churn_days)
        rows.append(
            (
                period,
                c.people,
                c.customers,
                _r(c.repeat_rate),
                c.regular,
                _r(c.ltv, 2),
                _r(c.churn_rate),
            )
        )
    return Table(
        title=f"Cohorts by {cohort.replace('_', ' ')}",
        columns=("cohort", "people", "customers", "repeat_rate", "regular", "ltv", "churn_rate"),
        rows=tuple(rows),
        meta={"cohort": cohort, "churn_days": churn_days},
    )


def leads_report(store: Store, scope: ReportScope | None = None) -> Table:
    """The leads of the period (their first ``lead`` event in it) by temperature (``by``
    unset or ``temperature``) or by ``by``. A lead's temperature is the one in effect when it
    converted (its first payment), the current one for an open lead: a lead that was hot when
    it paid and cooled afterwards is a hot conversion (the title says so)."""
    scope = (scope or ReportScope()).answerable_by("leads")
    by_temperature = scope.by in (None, "temperature")
    groups: dict[str, list[PersonFacts]] = defaultdict(list)
    for p in person_facts(store, scope if not by_temperature else ReportScope(site=scope.site)):
        if p.lead_ms is None or not _in(scope, p.lead_ms):
            continue
        key = p.temperature_at_conversion() if by_temperature else p.group
        if scope.by in ("day", "week", "month"):
            key = _period(scope, p.lead_ms)
        groups[key or "cold"].append(p)
    rows = []
    for key, people in sorted(groups.items()):
        lead = lead_stats(people)
        rows.append(
            (
                key,
                lead.leads,
                lead.clients,
                _r(lead.conversion),
                _r(lead.touches_before_sale, 2),
                _r(lead.lead_to_client_p50_hours, 2),
                _r(lead.lead_to_client_p90_hours, 2),
            )
        )
    return Table(
        title="Leads by " + (AT_CONVERSION if by_temperature else str(scope.by)),
        columns=(
            "temperature" if by_temperature else str(scope.by),
            "leads",
            "clients",
            "conversion",
            "touches_before_sale",
            "lead_to_client_p50_hours",
            "lead_to_client_p90_hours",
        ),
        rows=tuple(rows),
        meta={"temperature": AT_CONVERSION} if by_temperature else {},
    )


def forecast_report(
    store: Store,
    scope: ReportScope | None = None,
    *,
    horizon_days: int = 30,
    now: datetime | None = None,
) -> Table:
    scope = scope or ReportScope()
    as_of = _now_ms(scope, now)
    rows = [
        (
            row.temperature,
            row.age,
            row.open_leads,
            round(row.rate, 4),
            round(row.expected_payments, 2),
            round(row.expected_revenue, 2),
        )
        for row in forecast(
            person_facts(store, ReportScope(site=scope.site)), as_of, horizon_days * DAY_MS
        )
    ]
    return Table(
        title=f"Forecast: the next {horizon_days} days from open leads",
        columns=(
            "temperature",
            "age",
            "open_leads",
            "rate",
            "expected_payments",
            "expected_revenue",
        ),
        rows=tuple(rows),
        meta={
            "as_of": datetime.fromtimestamp(as_of / 1000, UTC).isoformat(),
            "horizon_days": horizon_days,
            "expected_payments": round(sum(float(row[4]) for row in rows), 2),
            "expected_revenue": round(sum(float(row[5]) for row in rows), 2),
        },
    )


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)

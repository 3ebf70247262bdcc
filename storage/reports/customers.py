"""Customer reports: cohorts, leads and the forecast from open leads.

All three read one row per resolved person built from ``events`` (first event, first lead,
first and last payment, purchases, revenue) and ``lead_changes`` (temperature history); the
arithmetic is plain Python over those rows, so it is the same for both store backends.

* ``cohorts`` — people grouped by the period (``by``: day, week or month; default month) of
  their first touch (``cohort="first_touch"``) or first payment (``"first_payment"``): people,
  customers, repeat rate (customers with >= 2 purchases), regular customers (>= 3 purchases),
  revenue per customer to date (LTV) and churn (customers with no purchase in the last
  ``churn_days`` before the end of the period, or before now).
* ``leads`` — by temperature (or ``by``): leads, those who paid, conversion to payment, touches
  (impressions and clicks) before the first sale, and time from lead to client (p50 / p90).
* ``forecast`` — expected payments and revenue in the next ``horizon_days`` from the leads still
  open at ``as_of``, by temperature and age. The rate for a (temperature, age bucket) is
  historical: of the leads that were still open at that age with that temperature, the share
  that paid within the horizon; a bucket with too little history falls back to the
  temperature's rate, then to the overall rate. Expected revenue = expected payments x the
  mean first payment of that temperature.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from funnel.report import Table, ratio
from storage.backends import Store
from storage.reports.scope import PURCHASES, ReportScope, person_groups, resolved_events

__all__ = ["AGE_BUCKETS", "cohorts_report", "forecast_report", "leads_report", "person_facts"]

_DAY_MS = 86_400_000
AGE_BUCKETS: tuple[tuple[str, int], ...] = (("0-7d", 0), ("7-30d", 7), ("30-90d", 30), ("90d+", 90))
_MIN_HISTORY = 20


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What the customer reports need of one resolved person (times in ms since the epoch)."""

    site_id: str
    person_id: str
    first_ms: int
    lead_ms: int | None
    first_paid_ms: int | None
    last_paid_ms: int | None
    purchases: int
    revenue: float
    first_payment: float
    touches_before_sale: int
    group: str
    temperatures: tuple[tuple[int, str], ...]
    """The lead's temperature changes, ``(at_ms, temperature)`` in time order."""

    def temperature_at(self, at_ms: int) -> str:
        times = [t for t, _ in self.temperatures]
        i = bisect.bisect_right(times, at_ms)
        return (
            self.temperatures[i - 1][1]
            if i
            else (self.temperatures[0][1] if self.temperatures else "cold")
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
    sql = (
        f"SELECT f.*, {group} AS g, ifNull(l.changes, []) AS changes FROM ("
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
        customers = [p for p in people if p.purchases > 0]
        churned = [
            p
            for p in customers
            if p.last_paid_ms is not None and p.last_paid_ms < as_of - churn_days * _DAY_MS
        ]
        rows.append(
            (
                period,
                len(people),
                len(customers),
                _r(ratio(sum(p.purchases >= 2 for p in customers), len(customers))),
                sum(p.purchases >= 3 for p in customers),
                _r(ratio(sum(p.revenue for p in customers), len(customers)), 2),
                _r(ratio(len(churned), len(customers))),
            )
        )
    return Table(
        title=f"Cohorts by {cohort.replace('_', ' ')}",
        columns=("cohort", "people", "customers", "repeat_rate", "regular", "ltv", "churn_rate"),
        rows=tuple(rows),
        meta={"cohort": cohort, "churn_days": churn_days},
    )


def leads_report(store: Store, scope: ReportScope | None = None) -> Table:
    scope = scope or ReportScope()
    by_temperature = scope.by is None
    groups: dict[str, list[PersonFacts]] = defaultdict(list)
    for p in person_facts(store, scope if not by_temperature else ReportScope(site=scope.site)):
        if p.lead_ms is None or not _in(scope, p.lead_ms):
            continue
        key = p.temperatures[-1][1] if by_temperature and p.temperatures else p.group
        if scope.by in ("day", "week", "month"):
            key = _period(scope, p.lead_ms)
        groups[key or "cold"].append(p)
    rows = []
    for key, people in sorted(groups.items()):
        clients = [
            p for p in people if p.first_paid_ms is not None and p.first_paid_ms >= (p.lead_ms or 0)
        ]
        hours = [((p.first_paid_ms or 0) - (p.lead_ms or 0)) / 3_600_000 for p in clients]
        rows.append(
            (
                key,
                len(people),
                len(clients),
                _r(ratio(len(clients), len(people))),
                _r(
                    statistics.fmean(p.touches_before_sale for p in clients) if clients else None, 2
                ),
                _r(_quantile(hours, 0.5), 2),
                _r(_quantile(hours, 0.9), 2),
            )
        )
    return Table(
        title="Leads" + (" by temperature" if by_temperature else f" by {scope.by}"),
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
    horizon = horizon_days * _DAY_MS
    people = [p for p in person_facts(store, ReportScope(site=scope.site)) if p.lead_ms is not None]
    tried: dict[tuple[str, str], int] = defaultdict(int)
    paid: dict[tuple[str, str], int] = defaultdict(int)
    first_payments: dict[str, list[float]] = defaultdict(list)
    for p in people:
        lead = p.lead_ms or 0
        for bucket, days in AGE_BUCKETS:
            at = lead + days * _DAY_MS
            if at + horizon > as_of:  # the horizon after this age is not over yet
                break
            if p.first_paid_ms is not None and p.first_paid_ms <= at:
                break
            key = (p.temperature_at(at), bucket)
            tried[key] += 1
            paid[key] += p.first_paid_ms is not None and p.first_paid_ms <= at + horizon
        if p.first_paid_ms is not None and p.first_paid_ms <= as_of:
            first_payments[p.temperature_at(p.first_paid_ms)].append(p.first_payment)
    overall = ratio(sum(paid.values()), sum(tried.values())) or 0.0
    mean_payment = (
        statistics.fmean(v for vs in first_payments.values() for v in vs) if first_payments else 0.0
    )

    def rate(temperature: str, bucket: str) -> float:
        if tried[(temperature, bucket)] >= _MIN_HISTORY:
            return paid[(temperature, bucket)] / tried[(temperature, bucket)]
        t_tried = sum(n for (t, _), n in tried.items() if t == temperature)
        if t_tried >= _MIN_HISTORY:
            return sum(n for (t, _), n in paid.items() if t == temperature) / t_tried
        return overall

    open_leads: dict[tuple[str, str], int] = defaultdict(int)
    for p in people:
        if (p.first_paid_ms is not None and p.first_paid_ms <= as_of) or (p.lead_ms or 0) > as_of:
            continue
        age_days = (as_of - (p.lead_ms or 0)) / _DAY_MS
        bucket = [name for name, days in AGE_BUCKETS if age_days >= days][-1]
        open_leads[(p.temperature_at(as_of), bucket)] += 1
    rows = []
    for (temperature, bucket), count in sorted(
        open_leads.items(), key=lambda kv: (_order(kv[0][0]), _bucket(kv[0][1]))
    ):
        r = rate(temperature, bucket)
        payment = (
            statistics.fmean(first_payments[temperature])
            if first_payments.get(temperature)
            else mean_payment
        )
        rows.append(
            (
                temperature,
                bucket,
                count,
                round(r, 4),
                round(count * r, 2),
                round(count * r * payment, 2),
            )
        )
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


def _order(temperature: str) -> int:
    return {"hot": 0, "warm": 1, "cold": 2}.get(temperature, 3)


def _bucket(name: str) -> int:
    return [n for n, _ in AGE_BUCKETS].index(name)


def _quantile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    # Nearest rank, like quantileExact: the same answer the SQL reports give.
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)

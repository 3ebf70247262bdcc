"""Customer arithmetic: cohorts, leads and the forecast from open leads (pure, no I/O).

The store builds one :class:`PersonFacts` per resolved person (``storage.reports.customers``);
these functions turn groups of them into the numbers the reports print:

* :func:`cohort_stats` — people, customers, repeat rate (customers with >= 2 purchases),
  regular customers (>= 3 purchases), revenue per customer to date (LTV) and churn (customers
  whose last purchase is older than ``churn_days`` at ``as_of``);
* :func:`lead_stats` — leads, those who paid after becoming a lead, conversion, touches before
  the first sale, and lead → client time (p50 / p90, nearest rank like ``quantileExact``); the
  reports group leads by :meth:`PersonFacts.temperature_at_conversion` (the temperature in
  effect at the first payment; the current one for a lead who has not paid), so a lead that
  was hot when it paid and cooled afterwards counts as a hot conversion;
* :func:`forecast` — expected payments and revenue in the next ``horizon`` from the leads open
  at ``as_of``, by temperature and age. The rate of a (temperature, age bucket) is historical:
  of the leads still open at that age with that temperature, the share that paid within the
  horizon; a bucket with less than :data:`MIN_HISTORY` leads falls back to the temperature's
  rate, then to the overall rate. Expected revenue = expected payments x the mean first payment
  made at that temperature (of all temperatures when it has none).

Times are milliseconds since the epoch.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from funnel.report import ratio

__all__ = [
    "AGE_BUCKETS",
    "AT_CONVERSION",
    "DAY_MS",
    "MIN_HISTORY",
    "CohortStats",
    "ForecastRow",
    "LeadStats",
    "PersonFacts",
    "cohort_stats",
    "forecast",
    "lead_stats",
    "quantile",
]

DAY_MS = 86_400_000
#: Lead age buckets: name and the age in days it starts at.
AGE_BUCKETS: tuple[tuple[str, int], ...] = (("0-7d", 0), ("7-30d", 7), ("30-90d", 30), ("90d+", 90))
#: Leads a rate needs before it is trusted over a coarser one.
MIN_HISTORY = 20
_TEMPERATURE_ORDER = {"hot": 0, "warm": 1, "cold": 2}
#: What the temperature of a lead in the lead reports is.
AT_CONVERSION = "temperature at conversion (current for open leads)"


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What the customer reports need of one resolved person."""

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
        """The temperature at ``at_ms``, changes at ``at_ms`` included (before the first
        change: the first one)."""
        return self._temperature(bisect.bisect_right(self._change_times, at_ms))

    def temperature_before(self, at_ms: int) -> str:
        """The temperature in effect when something happened at ``at_ms``: changes strictly
        before it (a payment's own change, the order it closes, comes after it)."""
        return self._temperature(bisect.bisect_left(self._change_times, at_ms))

    @property
    def is_client(self) -> bool:
        """Paid after becoming a lead (or at the same moment)."""
        return self.first_paid_ms is not None and self.first_paid_ms >= (self.lead_ms or 0)

    def temperature_at_conversion(self) -> str:
        """The temperature a lead is reported under: the one in effect at the first payment
        for a client, the current one for an open lead (:data:`AT_CONVERSION`)."""
        if self.is_client and self.first_paid_ms is not None:
            return self.temperature_before(self.first_paid_ms)
        return self.temperatures[-1][1] if self.temperatures else "cold"

    @property
    def _change_times(self) -> list[int]:
        return [t for t, _ in self.temperatures]

    def _temperature(self, changes_before: int) -> str:
        if changes_before:
            return self.temperatures[changes_before - 1][1]
        return self.temperatures[0][1] if self.temperatures else "cold"


@dataclass(frozen=True, slots=True)
class CohortStats:
    people: int
    customers: int
    repeat_rate: float | None
    regular: int
    ltv: float | None
    churn_rate: float | None


def cohort_stats(people: Sequence[PersonFacts], as_of_ms: int, churn_days: int) -> CohortStats:
    customers = [p for p in people if p.purchases > 0]
    churned = [
        p
        for p in customers
        if p.last_paid_ms is not None and p.last_paid_ms < as_of_ms - churn_days * DAY_MS
    ]
    return CohortStats(
        people=len(people),
        customers=len(customers),
        repeat_rate=ratio(sum(p.purchases >= 2 for p in customers), len(customers)),
        regular=sum(p.purchases >= 3 for p in customers),
        ltv=ratio(sum(p.revenue for p in customers), len(customers)),
        churn_rate=ratio(len(churned), len(customers)),
    )


@dataclass(frozen=True, slots=True)
class LeadStats:
    leads: int
    clients: int
    conversion: float | None
    touches_before_sale: float | None
    lead_to_client_p50_hours: float | None
    lead_to_client_p90_hours: float | None


def lead_stats(people: Sequence[PersonFacts]) -> LeadStats:
    clients = [p for p in people if p.is_client]
    hours = [((p.first_paid_ms or 0) - (p.lead_ms or 0)) / 3_600_000 for p in clients]
    return LeadStats(
        leads=len(people),
        clients=len(clients),
        conversion=ratio(len(clients), len(people)),
        touches_before_sale=(
            statistics.fmean(p.touches_before_sale for p in clients) if clients else None
        ),
        lead_to_client_p50_hours=quantile(hours, 0.5),
        lead_to_client_p90_hours=quantile(hours, 0.9),
    )


@dataclass(frozen=True, slots=True)
class ForecastRow:
    temperature: str
    age: str
    open_leads: int
    rate: float
    expected_payments: float
    expected_revenue: float


def forecast(people: Iterable[PersonFacts], as_of_ms: int, horizon_ms: int) -> list[ForecastRow]:
    """The open leads at ``as_of_ms`` by temperature and age, with their expected payments
    and revenue in the next ``horizon_ms`` (module docstring); hot first, young first."""
    leads = [p for p in people if p.lead_ms is not None]
    tried: dict[tuple[str, str], int] = defaultdict(int)
    paid: dict[tuple[str, str], int] = defaultdict(int)
    first_payments: dict[str, list[float]] = defaultdict(list)
    for p in leads:
        lead = p.lead_ms or 0
        for bucket, days in AGE_BUCKETS:
            at = lead + days * DAY_MS
            if at + horizon_ms > as_of_ms:  # the horizon after this age is not over yet
                break
            if p.first_paid_ms is not None and p.first_paid_ms <= at:
                break
            key = (p.temperature_at(at), bucket)
            tried[key] += 1
            paid[key] += p.first_paid_ms is not None and p.first_paid_ms <= at + horizon_ms
        if p.first_paid_ms is not None and p.first_paid_ms <= as_of_ms:
            first_payments[p.temperature_before(p.first_paid_ms)].append(p.first_payment)
    overall = ratio(sum(paid.values()), sum(tried.values())) or 0.0
    mean_payment = (
        statistics.fmean(v for vs in first_payments.values() for v in vs) if first_payments else 0.0
    )

    def rate(temperature: str, bucket: str) -> float:
        if tried[(temperature, bucket)] >= MIN_HISTORY:
            return paid[(temperature, bucket)] / tried[(temperature, bucket)]
        t_tried = sum(n for (t, _), n in tried.items() if t == temperature)
        if t_tried >= MIN_HISTORY:
            return sum(n for (t, _), n in paid.items() if t == temperature) / t_tried
        return overall

    open_leads: dict[tuple[str, str], int] = defaultdict(int)
    for p in leads:
        if (p.first_paid_ms is not None and p.first_paid_ms <= as_of_ms) or (
            p.lead_ms or 0
        ) > as_of_ms:
            continue
        age_days = (as_of_ms - (p.lead_ms or 0)) / DAY_MS
        bucket = [name for name, days in AGE_BUCKETS if age_days >= days][-1]
        open_leads[(p.temperature_at(as_of_ms), bucket)] += 1
    buckets = [name for name, _ in AGE_BUCKETS]
    rows = []
    for (temperature, bucket), count in sorted(
        open_leads.items(),
        key=lambda kv: (_TEMPERATURE_ORDER.get(kv[0][0], 3), buckets.index(kv[0][1])),
    ):
        r = rate(temperature, bucket)
        payment = (
            statistics.fmean(first_payments[temperature])
            if first_payments.get(temperature)
            else mean_payment
        )
        rows.append(ForecastRow(temperature, bucket, count, r, count * r, count * r * payment))
    return rows


def quantile(values: Iterable[float], q: float) -> float | None:
    """Nearest rank, like ClickHouse ``quantileExact``: the same answer the SQL reports give."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

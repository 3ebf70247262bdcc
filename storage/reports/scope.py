"""What every report shares: the scope (period, site, breakdown) and the SQL it turns into.

Periods are half-open, ``[start, end)`` in UTC. Each report says which time it filters on
(funnel entries, conversions, events, cohort starts). Breakdowns (``by``):

* ``channel`` / ``campaign`` — of the touch the report is about (the entry touch for funnels,
  the credited touch for attribution, the event's touch for channels);
* ``day`` / ``week`` / ``month`` — the period of that time (weeks start on Monday);
* ``temperature`` — the person's current lead temperature;
* ``manager`` — the sales manager of the person's latest event that names one;
* a field of the touch (funnel and drop-off reports: of the entry touch) —
  ``utm_source``, ``utm_medium``, ``utm_campaign``, ``referrer_host``, ``landing_page`` (its
  URL path), ``device``, ``browser``, ``os``, or any event property as ``property:NAME``
  (:mod:`storage.reports.query`).

Persons are resolved: an anonymous person merged into a known customer counts as that customer
(``persons.merged_into``), so a device's early events belong to the customer they turned into.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from funnel.events import EARLIEST, LATEST
from storage.reports.query import TOUCH_BREAKDOWNS, breakdown_sql, is_touch_breakdown

__all__ = [
    "ALL_BREAKDOWNS",
    "BREAKDOWNS",
    "PURCHASES",
    "Breakdown",
    "ReportScope",
    "parse_when",
]

Breakdown = str
"""One of :data:`ALL_BREAKDOWNS`, or ``property:NAME``."""
#: The breakdowns every report with a ``by`` answers (but for channels' person-level ones).
BREAKDOWNS: tuple[str, ...] = (
    "channel",
    "campaign",
    "day",
    "week",
    "month",
    "temperature",
    "manager",
)
#: With the touch fields (funnel and drop-off), ``property:NAME`` besides.
ALL_BREAKDOWNS: tuple[str, ...] = BREAKDOWNS + TOUCH_BREAKDOWNS

#: Event types that are a purchase: a payment, or a repeat purchase (DESIGN §6).
PURCHASES = ("payment", "repeat")

_PERIOD = {"day": "toDate({t})", "week": "toMonday({t})", "month": "toStartOfMonth({t})"}


def parse_when(text: str, *, end: bool = False) -> datetime:
    """``2026-11-01`` or an ISO datetime, as UTC. A bare date given as a period's end means
    the end of that day (``--to 2026-11-30`` includes the 30th). Raises ``ValueError`` for
    anything else, and for a time outside the times events may carry (2000 to 2100)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            moment = moment + timedelta(days=1) if end else moment
        else:
            moment = datetime.fromisoformat(text)
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(
            f"{text!r} is out of range: reports cover {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}"
        )
    return moment


@dataclass(frozen=True, slots=True)
class ReportScope:
    """The period ``[start, end)`` (either open), the site and the breakdown of a report."""

    start: datetime | None = None
    end: datetime | None = None
    site: str | None = None
    by: Breakdown | None = None
    include_bots: bool = False
    """Count events flagged as bots (``events.is_bot``) too; by default they are left out."""

    def __post_init__(self) -> None:
        if self.by is not None and self.by not in BREAKDOWNS and not is_touch_breakdown(self.by):
            raise ValueError(
                f"unknown breakdown {self.by!r}: one of {', '.join(ALL_BREAKDOWNS)} "
                "or property:NAME"
            )
        for moment in (self.start, self.end):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("report periods need timezone-aware datetimes")
        if self.start and self.end and self.start >= self.end:
            raise ValueError("the period's start must be before its end")

    def answerable_by(self, report: str) -> ReportScope:
        """This scope, for a report that breaks down by :data:`BREAKDOWNS` only; raises
        ``ValueError`` for a touch field (only funnels and drop-off answer those)."""
        if self.by is not None and self.by not in BREAKDOWNS:
            raise ValueError(
                f"the {report} report breaks down by {', '.join(BREAKDOWNS)}, not {self.by!r}"
            )
        return self

    @property
    def by_touch(self) -> bool:
        """Whether the breakdown is a field of a touch (``utm_source``, ``property:NAME``…)."""
        return self.by is not None and is_touch_breakdown(self.by)

    def touch_group(self, params: dict[str, object]) -> str:
        """The SQL of a touch breakdown's value over a row of ``events`` (``''``: none)."""
        return breakdown_sql(self.by, params) if self.by is not None and self.by_touch else "''"

    def params(self) -> dict[str, object]:
        """Query parameters: ``site``, ``start``, ``end`` (as milliseconds since the epoch)."""
        return {
            "site": self.site or "",
            "start": _ms(self.start) if self.start else 0,
            "end": _ms(self.end) if self.end else 2**62,
        }

    def site_filter(self, alias: str = "") -> str:
        column = f"{alias}site_id"
        return f"({{site:String}} = '' OR {column} = {{site:String}})"

    def period_filter(self, column: str) -> str:
        """``column`` (a DateTime64) within the period."""
        return (
            f"toUnixTimestamp64Milli({column}) >= {{start:Int64}} "
            f"AND toUnixTimestamp64Milli({column}) < {{end:Int64}}"
        )

    def period_group(self, column: str) -> str:
        """The SQL of the breakdown value when it is a period of ``column`` (as text), else
        ``''`` (one group)."""
        if self.by not in _PERIOD:
            return "''"
        return f"toString({_PERIOD[self.by].format(t=column)})"

    def aligned_to(self, unit: timedelta) -> bool:
        """Whether both ends fall on ``unit`` boundaries (so a bucketed aggregate answers)."""
        step = int(unit.total_seconds() * 1000)
        return all(m is None or _ms(m) % step == 0 for m in (self.start, self.end))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def resolved_events(db: str, *, include_bots: bool = False) -> str:
    """``events`` with ``person_id`` resolved through merges (a subquery); without the events
    flagged as bots' unless ``include_bots``.

    The events of persons never merged pass as they are; only those of merged persons are
    joined to their customer (a join over every event costs several times the scan:
    ``benchmarks/bench_reports.py``).
    """
    bots = "1" if include_bots else "NOT is_bot"
    merged = (
        f"(SELECT site_id, person_id, max(merged_into) AS merged FROM {db}.persons "
        "WHERE merged_into != '' GROUP BY site_id, person_id)"
    )
    return (
        f"(SELECT * FROM {db}.events WHERE (site_id, person_id) NOT IN "
        f"(SELECT site_id, person_id FROM {merged}) AND {bots} "
        f"UNION ALL SELECT e.* REPLACE (m.merged AS person_id) FROM {db}.events AS e "
        f"INNER JOIN {merged} AS m ON e.site_id = m.site_id AND e.person_id = m.person_id "
        f"WHERE {bots.replace('is_bot', 'e.is_bot')})"
    )


def person_groups(db: str, by: Breakdown) -> str:
    """``(site_id, person_id, g)``: a person-level breakdown (temperature or manager)."""
    if by == "temperature":
        # Only the columns it needs through argMax: the persons' maps are costly to carry.
        return (
            "(SELECT site_id, person_id, argMax(lead_temperature, updated_at) AS t, "
            "argMax(merged_into, updated_at) AS merged, "
            "if(t = '', '(not a lead)', t) AS g "
            f"FROM {db}.persons GROUP BY site_id, person_id HAVING merged = '')"
        )
    if by == "manager":
        return (
            "(SELECT site_id, person_id, argMaxIf(manager_id, occurred_at, manager_id != '') AS m, "
            f"if(m = '', '(none)', m) AS g FROM {resolved_events(db)} GROUP BY site_id, person_id)"
        )
    raise ValueError(f"{by!r} is not a person-level breakdown")

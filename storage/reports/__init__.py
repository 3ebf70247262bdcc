"""Reports: SQL over the stored facts and aggregates, arithmetic in the pure core.

Every report takes a :class:`ReportScope` (period, site, breakdown) and is also a
``funnel report …`` command. See ``storage/README.md`` for what each one answers.
"""

from storage.reports.funnels import (
    dropoff_report,
    funnel_report,
    raw_levels,
    stage_counts,
    step_counts,
)
from storage.reports.scope import BREAKDOWNS, ReportScope, parse_when

__all__ = [
    "BREAKDOWNS",
    "ReportScope",
    "dropoff_report",
    "funnel_report",
    "parse_when",
    "raw_levels",
    "stage_counts",
    "step_counts",
]

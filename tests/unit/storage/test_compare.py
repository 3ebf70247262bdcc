"""Comparisons with an earlier period: which period, and the change row by row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from funnel.report import Table
from storage.reports.catalog import ReportRequestError, parse_request
from storage.reports.compare import compared, earlier, label
from storage.reports.scope import ReportScope


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_the_previous_period_has_the_same_length_just_before() -> None:
    november = ReportScope(start=at(2026, 11, 1), end=at(2026, 12, 1))
    before = earlier(november, "previous")
    assert (before.start, before.end) == (at(2026, 10, 2), at(2026, 11, 1))
    assert label(november) == "2026-11-01..2026-11-30"
    assert label(before) == "2026-10-02..2026-10-31"


def test_a_year_earlier_keeps_the_dates_and_29_february_becomes_the_28th() -> None:
    leap = ReportScope(start=at(2028, 2, 29), end=at(2028, 3, 1), site="s", by="channel")
    before = earlier(leap, "year")
    assert (before.start, before.end) == (at(2027, 2, 28), at(2027, 3, 1))
    assert (before.site, before.by) == ("s", "channel")  # the rest of the scope is kept


def test_a_comparison_needs_a_period() -> None:
    with pytest.raises(ValueError, match="needs a period"):
        earlier(ReportScope(start=at(2026, 11, 1)), "previous")
    with pytest.raises(ReportRequestError, match="needs a period") as caught:
        parse_request("channels", {"compare": "previous", "to": "2026-11-30"})
    assert caught.value.option == "compare"
    with pytest.raises(ReportRequestError, match="no period breakdown"):
        parse_request(
            "funnel", {"compare": "year", "by": "week", "from": "2026-11-01", "to": "2026-11-30"}
        )
    with pytest.raises(ReportRequestError, match="unknown comparison 'month'"):
        parse_request("funnel", {"compare": "month", "from": "2026-11-01", "to": "2026-11-30"})


def test_rows_are_matched_by_key_and_the_change_is_now_minus_then() -> None:
    columns = ("channel", "leads", "revenue", "cpl", "biggest_leak")
    now = Table(
        "Channels", columns, (("Email", 12, 150.5, 2.5, True), ("Paid Search", 3, 0.0, None, False))
    )
    then = Table(
        "Channels", columns, (("Display", 4, 10.0, 1.0, False), ("Email", 10, 100.0, 3.0, False))
    )
    table = compared(
        now, then, keys=("channel",), labels=("current", "previous"), periods=("a", "b")
    )
    assert table.columns == ("period", *columns)
    assert table.rows == (
        ("current", "Email", 12, 150.5, 2.5, True),
        ("previous", "Email", 10, 100.0, 3.0, False),
        ("change", "Email", 2, 50.5, -0.5, None),
        ("current", "Paid Search", 3, 0.0, None, False),
        ("previous", "Paid Search", 0, 0, 0, 0),  # not there then: zeros
        ("change", "Paid Search", 3, 0.0, None, None),  # no rate now: no change
        ("current", "Display", 0, 0, 0, 0),  # only then
        ("previous", "Display", 4, 10.0, 1.0, False),
        ("change", "Display", -4, -10.0, -1.0, None),
    )
    assert table.meta == {"current": "a", "previous": "b"}
    assert table.title == "Channels: a against b"


def test_a_compared_funnel_goes_through_the_report_api_as_a_table() -> None:
    from storage.reports.render import from_payload, to_payload

    table = Table(
        "Funnel 'sales': a against b", ("period", "step", "people"), (("current", "x", 1),)
    )
    assert from_payload("funnel", to_payload(table)) == table

"""The emulation of Grafana's and the ClickHouse plugin's query rewriting (the strings are
those of the plugin's ``pkg/macros`` and Grafana's variable formats)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboards.boards.grafana_sql import (
    QueryContext,
    conditional_all,
    expand_macros,
    interpolate,
    render,
)

FROM = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)  # 1793527200
TO = datetime(2026, 11, 2, 10, 0, 0, 500_000, tzinfo=UTC)
CTX = QueryContext(FROM, TO, timedelta(minutes=5))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(t)", "t >= toDateTime(1793527200) AND t <= toDateTime(1793613600)"),
        (
            "$__timeFilter_ms(t)",
            "t >= fromUnixTimestamp64Milli(1793527200000) "
            "AND t <= fromUnixTimestamp64Milli(1793613600500)",
        ),
        ("$__dateFilter(d)", "d >= toDate('2026-11-01') AND d <= toDate('2026-11-02')"),
        (
            "$__dt(d, t)",
            "(d >= toDate('2026-11-01') AND d <= toDate('2026-11-02')) AND "
            "(t >= toDateTime(1793527200) AND t <= toDateTime(1793613600))",
        ),
        ("$__fromTime - $__toTime", "toDateTime(1793527200) - toDateTime(1793613600)"),
        ("$__fromTime_ms", "fromUnixTimestamp64Milli(1793527200000)"),
        ("$__timeInterval(b)", "toStartOfInterval(toDateTime(b), INTERVAL 300 second)"),
        (
            "$__timeInterval_ms(b)",
            "toStartOfInterval(toDateTime64(b, 3), INTERVAL 300000 millisecond)",
        ),
        ("x / $__interval_s", "x / 300"),
        ("no macro here", "no macro here"),
    ],
)
def test_macros_expand_like_the_plugin(sql: str, expected: str) -> None:
    assert expand_macros(sql, CTX) == expected


def test_unknown_macros_and_bad_arguments_fail() -> None:
    with pytest.raises(ValueError, match="unknown macro"):
        expand_macros("$__timeFiltr(t)", CTX)
    with pytest.raises(ValueError, match="1 argument"):
        expand_macros("$__timeFilter(a, b)", CTX)


def test_variables_are_formatted_like_grafana() -> None:
    values = {"site": "o'shop", "channel": ("Paid Search", "Email"), "n": "3"}
    assert interpolate("${site:singlequote}", values) == "'o\\'shop'"
    assert interpolate("IN (${channel:singlequote})", values) == "IN ('Paid Search','Email')"
    assert interpolate("IN ($channel)", values) == "IN ('Paid Search','Email')"  # plugin default
    assert interpolate("${channel:csv} [[n]] $n", values) == "Paid Search,Email 3 3"
    assert interpolate("$__timeFilter(t) $unknown", values) == "$__timeFilter(t) $unknown"


def test_conditional_all_drops_the_condition_only_for_all() -> None:
    sql = "a AND $__conditionalAll(channel IN (${channel:singlequote}), $channel) AND b"
    assert conditional_all(sql, frozenset({"channel"})) == "a AND 1=1 AND b"
    assert conditional_all(sql, frozenset()) == "a AND channel IN (${channel:singlequote}) AND b"
    ctx = QueryContext(FROM, TO, variables={"channel": ("Email",)})
    assert render(sql, ctx) == "a AND channel IN ('Email') AND b"

"""One number format for every report output (issue 12), and no rate where nobody entered."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
from click.testing import CliRunner

from funnel.cli.report import print_result
from funnel.report import FunnelReport, Table, cell_text, column_kind, csv_text
from storage.reports.render import from_payload, payload_text


def printed(result: Table | list[FunnelReport], fmt: str) -> str:
    @click.command()
    def show() -> None:
        print_result(result, fmt)

    outcome = CliRunner().invoke(show, [])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


EMPTY = FunnelReport.from_counts("sales", "shop", ["a", "b"], [0, 0], stopped=[(0, 0), (0, 0)])


def test_nobody_at_step_one_has_no_step_conversion_in_any_format() -> None:
    assert [s.step_conversion for s in EMPTY.steps] == [None, None]
    payload = json.loads(payload_text([EMPTY]))
    assert [s["step_conversion"] for s in payload["steps"]] == [None, None]
    rows = list(csv.DictReader(io.StringIO(printed([EMPTY], "csv"))))
    assert [r["step_conversion"] for r in rows] == ["", ""]
    table = printed([EMPTY], "table")
    assert "100.0%" not in table
    assert "│ 1 │ a    │      0 │          - │" in table


def test_step_one_with_people_converts_fully() -> None:
    report = FunnelReport.from_counts("sales", None, ["a", "b"], [4, 1])
    assert [s.step_conversion for s in report.steps] == [1.0, 0.25]


def test_rates_keep_four_decimals_and_one_in_comes_from_the_counts() -> None:
    report = FunnelReport.from_counts("s", None, ["a", "b", "c"], [30_000, 3, 1]).canonical()
    assert report.steps[1].overall_conversion == 0.0001
    assert report.steps[2].overall_conversion == 0.0  # 1 in 30,000 rounds away …
    assert report.one_in_at() == "1:30000"  # … the ratio does not
    again = from_payload("funnel", json.loads(payload_text([report])))
    assert printed(again, "table") == printed([report], "table")


TABLE = Table(
    title="Channels (linear)",
    columns=("channel", "impressions", "leads", "revenue", "spend", "roas", "conversion"),
    rows=(("Email", 1200, 3.333333333, 2260.9, 100.0, 22.609, 0.123456),),
)


def test_table_csv_and_json_carry_the_same_numbers() -> None:
    [record] = json.loads(printed(TABLE, "json"))["rows"]
    [row] = csv.DictReader(io.StringIO(printed(TABLE, "csv")))
    assert row == {
        "channel": "Email",
        "impressions": "1200",
        "leads": "3.3333",
        "revenue": "2260.90",
        "spend": "100.00",
        "roas": "22.61",
        "conversion": "0.1235",
    }
    for column, text in row.items():
        value = record[column]
        assert (text == value) if isinstance(value, str) else (float(text) == value), column
    table = printed(TABLE, "table")
    for shown in ("1,200", "3.33", "2,260.90", "100.00", "22.61", "12.3%"):
        assert shown in table


@pytest.mark.parametrize(
    ("column", "value", "csv_cell", "table_cell"),
    [
        ("dropoff_rate", 0.75, "0.7500", "75.0%"),
        ("first_touch_revenue", 5.5, "5.50", "5.50"),
        ("p50_hours", 12.0, "12.00", "12.00"),
        ("people", 2000, "2000", "2,000"),
        ("biggest_leak", True, "true", "True"),
        ("churn_rate", None, "", "-"),
    ],
)
def test_column_kinds(column: str, value: object, csv_cell: str, table_cell: str) -> None:
    kind = column_kind(column)
    assert csv_text(kind, value) == csv_cell
    assert cell_text(kind, value) == table_cell

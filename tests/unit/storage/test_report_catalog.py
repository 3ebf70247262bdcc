"""The report catalog: requests from string parameters, and results through JSON and back."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from funnel.report import FunnelReport, Table
from storage.reports.catalog import (
    ReportRequestError,
    from_payload,
    parse_request,
    payload_text,
    to_payload,
)
from storage.reports.commands import print_result


def test_defaults_fill_in_and_params_keep_only_what_was_given() -> None:
    request = parse_request("attribution", {"from": "2026-10-01", "site": "shop", "by": None})
    assert request.options == {"conversion": "payment", "lookback_days": "30"}
    assert dict(request.params) == {"from": "2026-10-01", "site": "shop"}
    assert request.scope.site == "shop"
    assert parse_request("cohorts", {}).scope.by == "month"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown report"),
        ("funnel", {"model": "linear"}, "takes no model"),
        ("funnel", {"split": "maybe"}, "true or false"),
        ("forecast", {"horizon_days": "soon"}, "must be a number"),
        ("leads", {"by": "planet"}, "unknown breakdown"),
        ("leads", {"from": "2026-11-02", "to": "2026-11-01"}, "before its end"),
    ],
)
def test_bad_requests_are_refused(name: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(ReportRequestError, match=message):
        parse_request(name, params)


TABLE = Table(
    title="Channels (linear)",
    columns=("channel", "leads", "revenue", "cpl", "biggest_leak"),
    rows=(("Email", 3, 120.5, None, True), ("Paid Search", 0, 0.0, 1.25, False)),
    meta={"model": "linear", "target_cpl": None},
)
FUNNELS = [
    FunnelReport.from_counts(
        "sales", "shop", ["a", "b", "c"], [10, 4, 1], stopped=[(3, 3), (2, 1), (0, 0)]
    ),
    FunnelReport.from_counts("sales", None, ["a", "b", "c"], [3, 0, 0], group="Email"),
]


def printed(result: object, fmt: str) -> str:
    runner = CliRunner()
    out = runner.invoke(_printer, [fmt], obj=result)
    assert out.exit_code == 0, out.output
    return out.output


@click.command()
@click.argument("fmt")
@click.pass_obj
def _printer(result: Table | list[FunnelReport], fmt: str) -> None:
    print_result(result, fmt)


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
@pytest.mark.parametrize(
    ("name", "result"),
    [
        ("channels", TABLE),
        ("funnel", FUNNELS),
        ("funnel", FUNNELS[:1]),
        ("leads", Table("Leads", ("temperature", "leads"), ())),
    ],
)
def test_a_result_prints_the_same_after_a_trip_through_json(
    name: str, result: Table | list[FunnelReport], fmt: str
) -> None:
    again = from_payload(name, json.loads(payload_text(result)))
    assert again == result
    assert printed(again, fmt) == printed(result, fmt)


def test_tables_carry_their_columns_and_meta() -> None:
    payload = to_payload(TABLE)
    assert isinstance(payload, dict)
    assert list(payload) == ["title", "model", "target_cpl", "columns", "rows"]
    assert payload["rows"] == [dict(zip(TABLE.columns, row, strict=True)) for row in TABLE.rows]
    assert isinstance(to_payload(FUNNELS[:1]), dict)  # one funnel without a breakdown: an object
    assert isinstance(to_payload(FUNNELS), list)

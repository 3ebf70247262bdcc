"""The report catalog: requests from string parameters, and results through JSON and back."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from funnel.attribution import MODELS
from funnel.cli.report import print_result
from funnel.processor import CoreConfig
from funnel.report import FunnelReport, Table
from storage.reports import catalog
from storage.reports.attribution import DATA_DRIVEN
from storage.reports.catalog import (
    CONVERSIONS,
    REPORTS,
    ReportRequestError,
    parse_request,
)
from storage.reports.render import from_payload, payload_text, to_payload
from storage.reports.scope import BREAKDOWNS


def test_defaults_fill_in_and_params_keep_only_what_was_given() -> None:
    request = parse_request("attribution", {"from": "2026-10-01", "site": "shop", "by": None})
    assert request.options == {"conversion": "payment", "lookback_days": "30", "models": None}
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


#: What each report's code answers (issue 12): nothing else is offered or accepted.
TOUCHES = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "referrer_host",
    "landing_page",
    "device",
    "browser",
    "os",
    "property:NAME",
)
ANSWERED = {
    "funnel": BREAKDOWNS + TOUCHES,
    "dropoff": BREAKDOWNS + TOUCHES,
    "time-to-convert": BREAKDOWNS + TOUCHES,
    "attribution": BREAKDOWNS,
    "leads": BREAKDOWNS,
    "channels": ("channel", "campaign", "day", "week", "month", *TOUCHES),
    "cohorts": ("day", "week", "month"),
    "forecast": (),
    "people": (),
    "paths": ("day", "week", "month", "temperature", "manager"),
    "sites": (),
}


def test_every_report_offers_the_breakdowns_it_answers() -> None:
    assert {name: spec.breakdowns for name, spec in REPORTS.items()} == ANSWERED


@pytest.mark.parametrize(("name", "by"), [("forecast", "channel"), ("sites", "day")])
def test_a_report_without_breakdowns_refuses_by(name: str, by: str) -> None:
    with pytest.raises(ReportRequestError, match=f"the {name} report takes no by") as refused:
        parse_request(name, {"by": by})
    assert refused.value.option == "by"


@pytest.mark.parametrize(
    ("name", "by"), [("channels", "temperature"), ("cohorts", "manager"), ("cohorts", "channel")]
)
def test_a_breakdown_a_report_cannot_answer_is_refused_with_the_choices(name: str, by: str) -> None:
    choices = ", ".join(ANSWERED[name])
    with pytest.raises(ReportRequestError, match=f"breaks down by {choices}"):
        parse_request(name, {"by": by})


def test_the_forecast_is_as_of_its_end_and_takes_no_start() -> None:
    with pytest.raises(ReportRequestError, match="takes no from"):
        parse_request("forecast", {"from": "2026-10-01"})
    assert parse_request("forecast", {"to": "2026-10-01"}).scope.end is not None


@pytest.mark.parametrize("model", ["markov", "shapley"])
def test_channels_send_data_driven_models_to_the_attribution_report(model: str) -> None:
    with pytest.raises(ReportRequestError, match="report attribution") as refused:
        parse_request("channels", {"model": model})
    assert refused.value.option == "model"


def test_channels_refuse_an_unknown_model_listing_the_models() -> None:
    with pytest.raises(ReportRequestError, match=", ".join(MODELS)):
        parse_request("channels", {"model": "bogus"})
    for model in MODELS:
        assert parse_request("channels", {"model": model}).options["model"] == model


def test_attribution_refuses_a_conversion_the_stream_does_not_credit() -> None:
    with pytest.raises(ReportRequestError, match="lead, order, payment, repeat"):
        parse_request("attribution", {"conversion": "purchase"})
    assert {t.value for t in CoreConfig.default().conversions} == set(CONVERSIONS)
    assert set(DATA_DRIVEN) == {"markov", "shapley"}


def test_lookback_days_out_of_bounds_names_the_option() -> None:
    with pytest.raises(ReportRequestError, match="from 1 to 3650, not -5") as refused:
        parse_request("attribution", {"lookback_days": "-5"})
    assert refused.value.option == "lookback_days"


def test_include_bots_reaches_the_scope() -> None:
    for name in ("funnel", "dropoff", "time-to-convert", "attribution", "channels"):
        assert parse_request(name, {"include_bots": "true"}).scope.include_bots
    for name in ("cohorts", "leads", "forecast"):
        assert parse_request(name, {"include_bots": "yes"}).scope.include_bots
    assert not parse_request("leads", {"include_bots": "false"}).scope.include_bots
    assert not parse_request("leads", {}).scope.include_bots
    with pytest.raises(ReportRequestError, match="true or false"):
        parse_request("leads", {"include_bots": "maybe"})
    with pytest.raises(ReportRequestError, match="takes no include_bots"):
        parse_request("sites", {"include_bots": "true"})


def test_attribution_models_are_named_in_the_order_asked() -> None:
    assert catalog._models(None) is None
    assert catalog._models("markov, linear,markov") == ("markov", "linear")
    for text in ("linear,lastclick", " , "):
        with pytest.raises(ReportRequestError, match="comma-separated list of first_touch"):
            catalog._models(text)

"""Funnels, conditions and breakdowns asked at query time: what parses, what is refused (with
the choices), and the SQL values stay bound parameters."""

from __future__ import annotations

import pytest

from funnel.events import EventType
from funnel.funnels import FunnelMode
from funnel.processor import CoreConfig
from storage.reports.catalog import ReportRequestError, parse_request
from storage.reports.query import (
    Condition,
    FunnelQuery,
    QueryError,
    breakdown_sql,
    is_touch_breakdown,
    parse_conditions,
    parse_steps,
)
from storage.reports.scope import ReportScope


def test_steps_with_conditions_pages_and_exclusions() -> None:
    query = parse_steps(
        "impression, click[utm_source=google,device=iPhone], /pricing, lead[form=demo], "
        "!payment[status^=refund]",
        window="7d",
        mode="strict",
    )
    assert query.names == [
        "impression",
        "click[utm_source=google,device=iPhone]",
        "/pricing",
        "lead[form=demo]",
    ]
    assert query.window_ms == 7 * 86_400_000
    assert query.mode is FunnelMode.STRICT
    assert not query.configured
    click, page, lead = query.steps[1:]
    assert click.type is EventType.CLICK
    assert click.conditions == (
        Condition("utm_source", "=", "google"),
        Condition("device", "=", "iPhone"),
    )
    assert page.type is None
    assert page.conditions == (Condition("landing_page", "^=", "/pricing"),)
    assert lead.conditions == (Condition("property:form", "=", "demo"),)
    (refund,) = query.exclusions
    assert refund.exclude
    assert refund.conditions == (Condition("property:status", "^=", "refund"),)


@pytest.mark.parametrize(
    ("steps", "options", "message"),
    [
        ("impression", {}, "2 to 20 steps, not 1"),
        ("impression,clack", {}, "unknown event type 'clack'"),
        ("impression,impression", {}, "given twice"),
        ("impression,click[utm_source=google", {}, "unbalanced brackets"),
        ("impression,,click", {}, "an empty item"),
        ("impression,click[utm_source]", {}, "not a condition"),
        ("impression,click", {"window": "soon"}, "not a duration"),
        ("impression,click", {"window": "0d"}, "1ms to 3650d"),
        ("impression,click", {"mode": "sideways"}, "unknown mode 'sideways'"),
        ("impression,click[bad key=1]", {}, "not a condition"),
    ],
)
def test_bad_steps_are_refused_saying_why(
    steps: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(")):
        parse_steps(steps, **options)  # type: ignore[arg-type]


def test_conditions_know_their_fields_and_anything_else_is_a_property() -> None:
    assert parse_conditions("utm_source=google,plan!=free,referrer_host*=google,x^=a=b") == (
        Condition("utm_source", "=", "google"),
        Condition("property:plan", "!=", "free"),
        Condition("referrer_host", "*=", "google"),
        Condition("property:x", "^=", "a=b"),
    )


def test_values_are_bound_never_spliced_into_the_sql() -> None:
    params: dict[str, object] = {}
    hostile = "x' OR 1=1 --"
    sql = Condition("property:it's", "=", hostile).sql(params, "w0")
    assert hostile not in sql
    assert "it's" not in sql
    assert set(params.values()) == {hostile, "it's"}
    # the dashboards' literal form escapes quotes
    assert Condition("utm_source", "=", hostile).sql(None, "w0") == "source = 'x\\' OR 1=1 --'"


def test_breakdowns_by_touch_fields_and_properties() -> None:
    assert is_touch_breakdown("utm_source")
    assert is_touch_breakdown("property:plan")
    assert not is_touch_breakdown("property:")
    assert not is_touch_breakdown("property:a b")
    assert not is_touch_breakdown("temperature")
    params: dict[str, object] = {}
    assert "properties[{by_key:String}]" in breakdown_sql("property:plan", params)
    assert params == {"by_key": "plan"}
    assert ReportScope(by="landing_page").by == "landing_page"
    with pytest.raises(ValueError, match="unknown breakdown 'colour'"):
        ReportScope(by="colour")


def test_a_configured_funnel_is_one_the_stream_answers_until_it_is_changed() -> None:
    spec = CoreConfig.default().funnels.get("hourglass")
    query = FunnelQuery.of(spec)
    assert query.configured
    assert query.names == [s.name for s in spec.steps]
    assert query.steps[-1].conditions == (Condition("property:form", "=", "referral"),)
    assert query.adjusted(window_ms=spec.window_ms) is query
    assert not query.adjusted(mode=FunnelMode.ANY).configured
    assert not query.adjusted(where=parse_conditions("device=iPhone")).configured


@pytest.mark.parametrize(
    ("name", "params", "option", "message"),
    [
        ("funnel", {"steps": "impression,clack"}, "steps", "unknown event type"),
        ("funnel", {"steps": "lead,order", "funnel": "aida"}, "steps", "not both"),
        ("funnel", {"window": "soon"}, "window", "not a duration"),
        ("dropoff", {"where": "utm_source"}, "where", "not a condition"),
        ("funnel", {"by": "property:a b"}, "by", "unknown breakdown"),
        ("channels", {"by": "temperature"}, "by", "breaks down by channel"),
        ("channels", {"where": "utm_source"}, "where", "not a condition"),
        ("attribution", {"by": "device"}, "by", "breaks down by"),
        ("time-to-convert", {"where": "device"}, "where", "not a condition"),
        ("people", {"status": "lost"}, "status", "unknown status 'lost'"),
        ("people", {"temperature": "tepid"}, "temperature", "unknown temperature"),
        ("people", {"step": "0"}, "step", "from 1 to 20"),
        ("people", {"limit": "many"}, "limit", "must be a number"),
        ("people", {"by": "channel"}, "by", "takes no by"),
        ("paths", {"show": "tree"}, "show", "unknown view 'tree'"),
        ("paths", {"top": "0"}, "top", "from 1 to 1000"),
        ("paths", {"by": "channel"}, "by", "breaks down by day"),
    ],
)
def test_the_catalog_refuses_a_bad_query_naming_the_option(
    name: str, params: dict[str, str], option: str, message: str
) -> None:
    with pytest.raises(ReportRequestError, match=message) as caught:
        parse_request(name, params)
    assert caught.value.option == option


def test_the_catalog_takes_query_time_funnels_and_property_breakdowns() -> None:
    request = parse_request(
        "dropoff", {"steps": "impression,click", "where": "device=iPhone", "by": "property:plan"}
    )
    assert request.scope.by == "property:plan"
    assert request.options["steps"] == "impression,click"

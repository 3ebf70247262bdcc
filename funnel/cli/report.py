"""``funnel report …`` and ``funnel sites``: every report as a command, printed as a table,
JSON or CSV.

Each command takes what its report takes (:data:`~storage.reports.catalog.REPORTS`):
``--from/--to`` (a date or an ISO datetime, UTC; a bare ``--to`` date includes that day),
``--site``, ``--by`` with the breakdowns that report answers, ``--include-bots`` and
``--format``. They call the same functions as the Python API (:mod:`storage.reports`), through
:mod:`storage.reports.catalog`, and print through :mod:`storage.reports.render`, as the HTTP
API of ``funnel serve`` does. When ``funnel serve`` owns the embedded store, the commands ask
it (:mod:`storage.reports.owner`) instead of opening the store, and print the same. A request
the catalog refuses is a usage error (exit code 2) naming the flag at fault and the choices.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from funnel.attribution import MODELS
from funnel.cli.root import (
    _config,
    _open_existing,
    database_option,
    format_option,
    funnels_option,
    main,
    store_option,
)
from storage.reports.catalog import (
    ATTRIBUTION_MODELS,
    CONVERSIONS,
    PROPERTY_BREAKDOWN,
    REPORTS,
    ReportRequest,
    ReportRequestError,
    parse_request,
)
from storage.reports.render import ReportResult, render, renderables

__all__ = ["print_result", "report", "sites"]

# Reports are wide: use the terminal's width, or 160 columns when piped (rich would use 80).
out = Console(width=shutil.get_terminal_size((160, 24)).columns)
err = Console(stderr=True)
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@main.group()
def report() -> None:
    """Answers from the stored facts."""


def _scope_options(name: str) -> Decorator:
    """The scope options report ``name`` takes (its :class:`ReportSpec`), nothing more."""
    spec = REPORTS[name]
    options = {
        "from": click.option(
            "--from", "start", default=None, help="Period start (date or ISO time)."
        ),
        "to": click.option("--to", "end", default=None, help="Period end (a date includes it)."),
        "site": click.option("--site", default=None, help="Only this site."),
        "by": click.option(
            "--by",
            # property:NAME is open-ended: the catalog checks it, naming the choices
            type=str if PROPERTY_BREAKDOWN in spec.breakdowns else click.Choice(spec.breakdowns),
            default=spec.default_by,
            show_default=spec.default_by is not None,
            help="Breakdown"
            + (
                f": {', '.join(spec.breakdowns)}." if PROPERTY_BREAKDOWN in spec.breakdowns else "."
            ),
        ),
        "include_bots": click.option(
            "--include-bots",
            is_flag=True,
            default=False,
            help="Count the events flagged as bots' too (left out by default).",
        ),
    }

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for parameter in reversed(spec.parameters):
            if parameter in options:
                command = options[parameter](command)
        return command

    return decorate


def _flag_of(option: str) -> str:
    """The command-line flag of a request parameter (``lookback_days`` → ``--lookback-days``)."""
    return "--" + option.replace("_", "-")


def _refused(exc: ReportRequestError) -> click.BadParameter:
    """A refused request as a usage error (exit code 2) naming the flag at fault."""
    hint = _flag_of(exc.option) if exc.option else None
    return click.BadParameter(str(exc), param_hint=hint)


def _request(name: str, **params: object) -> ReportRequest:
    """The request of a command's options (validated here, before any store is opened).
    ``None`` and ``False`` are left out: unset, as in a query string without them."""
    text = {
        key: "true" if value is True else str(value)
        for key, value in params.items()
        if value is not None and value is not False
    }
    try:
        return parse_request(name, text)
    except ReportRequestError as exc:
        raise _refused(exc) from exc


def _answer(request: ReportRequest, kw: dict[str, Any]) -> None:
    """Answer ``request`` and print it in ``--format``.

    From the owner of an embedded store when one is running (``funnel serve``: chDB lets
    one process open a store, DESIGN §11), else from the store opened here. Either way the
    result goes through the same types, so it prints the same.
    """
    from storage.reports.catalog import compute
    from storage.reports.owner import OwnerError, fetch_report, store_directory
    from storage.reports.render import from_payload

    store, database, funnels_file = kw["store"], kw["database"], kw.get("funnels_file")
    result: ReportResult | None = None
    directory = store_directory(store)
    try:
        if directory is not None:
            payload = fetch_report(directory, database, request)
            if payload is not None:
                if funnels_file is not None:
                    err.print(
                        "[yellow]the store's owner answered with its own funnel "
                        "definitions; --funnels is not used[/]"
                    )
                result = from_payload(request.name, payload)
        if result is None:
            db = _open_existing(store, database)
            try:
                result = compute(db, request, _config(funnels_file, None).funnels)
            finally:
                db.close()
    except ReportRequestError as exc:
        raise _refused(exc) from exc
    except OwnerError as exc:
        raise click.ClickException(str(exc)) from exc
    print_result(result, kw["fmt"])


compare_option = click.option(
    "--compare",
    type=click.Choice(["previous", "year"]),
    default=None,
    help="Each figure next to the previous period's (same length, just before) or the same "
    "dates a year earlier, with the change. Needs --from and --to.",
)


where_option = click.option(
    "--where",
    multiple=True,
    # one request parameter: the conditions comma-separated (None when none is given)
    callback=lambda _ctx, _param, value: ",".join(value) if value else None,
    help="field=value (also !=, ^= starts with, *= contains) on the entry event; "
    "comma-separated or repeated, all must hold. Fields: utm_source, utm_medium, "
    "utm_campaign, channel, referrer_host, landing_page, device, browser, os, "
    "property:NAME.",
)


def query_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """A funnel asked at query time (:mod:`storage.reports.query`)."""
    for option in reversed(
        (
            click.option("--steps", default=None, help="Steps, comma-separated (see above)."),
            click.option("--window", default=None, help="Conversion window, e.g. 7d, 12h."),
            click.option("--mode", type=click.Choice(["ordered", "strict", "any"]), default=None),
            where_option,
        )
    ):
        command = option(command)
    return command


def _query(kw: dict[str, Any]) -> dict[str, object]:
    return {name: kw.pop(name) for name in ("steps", "window", "mode", "where")}


def journey_options(credited: str) -> Decorator:
    """``--conversion`` and ``--lookback-days`` of the reports built on journeys."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--lookback-days", default=30, show_default=True)(command)
        return click.option(
            "--conversion",
            type=click.Choice(CONVERSIONS),
            default="payment",
            show_default=True,
            help=f"The conversions {credited}.",
        )(command)

    return decorate


def _register(group: click.Group) -> None:
    """Add the report commands to ``group`` (``funnel report``)."""

    def common(name: str) -> Decorator:
        def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
            return store_option(database_option(format_option(_scope_options(name)(command))))

        return decorate

    def scope(kw: dict[str, Any]) -> dict[str, object]:
        return {key: kw.pop(name) for key, name in _SCOPE_OPTIONS if name in kw}

    @group.command("funnel")
    @click.option("--funnel", "funnel_name", default=None, help="A configured funnel [sales].")
    @query_options
    @click.option("--split/--no-split", default=True, help="Split by converted/dropped/in window.")
    @compare_option
    @funnels_option
    @common("funnel")
    def funnel_cmd(funnel_name: str | None, split: bool, compare: str | None, **kw: Any) -> None:
        """Step counts, step and overall conversion and 1:N, split by status.

        A configured funnel (--funnel), or one asked now: --steps
        'impression,click,lead[form=demo],order' (a step is an event type, with conditions
        in brackets; /path is a page; !type excludes who does it), --window 7d,
        --mode ordered|strict|any, --where 'utm_source=google' (on the entry event).
        """
        flag = "true" if split else "false"
        request = _request(
            "funnel", funnel=funnel_name, split=flag, compare=compare, **_query(kw), **scope(kw)
        )
        _answer(request, kw)

    @group.command("dropoff")
    @click.option("--funnel", "funnel_name", default=None, help="A configured funnel [sales].")
    @query_options
    @compare_option
    @funnels_option
    @common("dropoff")
    def dropoff_cmd(funnel_name: str | None, compare: str | None, **kw: Any) -> None:
        """Where people leave the funnel, by step; the biggest leak is flagged.

        Takes the funnel report's --steps, --window, --mode and --where.
        """
        request = _request(
            "dropoff", funnel=funnel_name, compare=compare, **_query(kw), **scope(kw)
        )
        _answer(request, kw)

    @group.command("paths")
    @journey_options("whose paths are shown")
    @click.option(
        "--show",
        type=click.Choice(["paths", "length", "lag", "assists"]),
        default="paths",
        show_default=True,
        help="Channel paths; path length; time lag; assisted conversions per channel.",
    )
    @click.option("--top", default=20, show_default=True, help="Paths of each kind shown.")
    @common("paths")
    def paths_cmd(conversion: str, lookback_days: int, show: str, top: int, **kw: Any) -> None:
        """Converting and non-converting channel paths, path length, time lag, assists."""
        request = _request(
            "paths",
            conversion=conversion,
            lookback_days=lookback_days,
            show=show,
            top=top,
            **scope(kw),
        )
        _answer(request, kw)

    @group.command("people")
    @click.option("--funnel", "funnel_name", default=None, help="A configured funnel [sales].")
    @query_options
    @click.option("--step", default=1, show_default=True, help="The step (1 is the first).")
    @click.option(
        "--status",
        type=click.Choice(["dropped", "in_window", "converted"]),
        default=None,
        help="Stopped at --step and dropped / still in window; or converted. Default: "
        "everyone who reached --step.",
    )
    @click.option("--temperature", type=click.Choice(["cold", "warm", "hot"]), default=None)
    @click.option("--limit", default=10_000, show_default=True, help="At most this many.")
    @funnels_option
    @common("people")
    def people_cmd(
        funnel_name: str | None,
        step: int,
        status: str | None,
        temperature: str | None,
        limit: int,
        **kw: Any,
    ) -> None:
        """The people behind a funnel number: ids, first channel, last event, manager.

        For a CRM: --format csv or json. The same period, site and funnel options as
        `report funnel` give the persons counted there.
        """
        request = _request(
            "people",
            funnel=funnel_name,
            step=step,
            status=status,
            temperature=temperature,
            limit=limit,
            **_query(kw),
            **scope(kw),
        )
        _answer(request, kw)

    @group.command("time-to-convert")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @where_option
    @funnels_option
    @common("time-to-convert")
    def time_cmd(funnel_name: str, where: str | None, **kw: Any) -> None:
        """p50/p90 time between steps, and from first touch to payment (the sales cycle).

        --where and a touch --by apply to the event that entered the funnel (for the sales
        cycle: the person's first event).
        """
        request = _request("time-to-convert", funnel=funnel_name, where=where, **scope(kw))
        _answer(request, kw)

    @group.command("attribution")
    @journey_options("credited")
    @click.option(
        "--models",
        default=None,
        help="Only these models, comma-separated, in this order (default: all): "
        f"{', '.join(ATTRIBUTION_MODELS)}.",
    )
    @common("attribution")
    def attribution_cmd(conversion: str, lookback_days: int, models: str | None, **kw: Any) -> None:
        """Credits and revenue per channel under every model, markov and shapley included."""
        request = _request(
            "attribution",
            conversion=conversion,
            lookback_days=lookback_days,
            models=models,
            **scope(kw),
        )
        _answer(request, kw)

    @group.command("channels")
    @click.option(
        "--model",
        default="last_non_direct",
        show_default=True,
        help=f"A model credited in the stream: {', '.join(MODELS)} (markov and shapley are "
        "data-driven: see the attribution report).",
    )
    @click.option("--target-cpl", type=float, default=None, help="Flag channels over this CPL.")
    @compare_option
    @where_option
    @common("channels")
    def channels_cmd(
        model: str, target_cpl: float | None, compare: str | None, where: str | None, **kw: Any
    ) -> None:
        """Impressions to revenue per channel, with spend, CPL, CAC, ROAS and AOV.

        A touch --by (utm_source, device, property:NAME…) or --where splits or filters by
        that field of the touch: the credits are worked out per touch (no spend then).
        """
        request = _request(
            "channels",
            model=model,
            target_cpl=target_cpl,
            compare=compare,
            where=where,
            **scope(kw),
        )
        _answer(request, kw)

    @group.command("cohorts")
    @click.option(
        "--cohort", type=click.Choice(["first_touch", "first_payment"]), default="first_touch"
    )
    @click.option("--churn-days", default=90, show_default=True)
    @common("cohorts")
    def cohorts_cmd(cohort: str, churn_days: int, **kw: Any) -> None:
        """Cohorts by period: repeat rate, regular customers, LTV to date and churn."""
        _answer(_request("cohorts", cohort=cohort, churn_days=churn_days, **scope(kw)), kw)

    @group.command("leads")
    @common("leads")
    def leads_cmd(**kw: Any) -> None:
        """Leads by temperature: conversion to payment, touches before the sale, lead → client."""
        _answer(_request("leads", **scope(kw)), kw)

    @group.command("forecast")
    @click.option("--horizon-days", default=30, show_default=True)
    @common("forecast")
    def forecast_cmd(horizon_days: int, **kw: Any) -> None:
        """Expected payments and revenue from the leads open at --to (default now)."""
        _answer(_request("forecast", horizon_days=horizon_days, **scope(kw)), kw)


@main.command("sites")
@funnels_option
@store_option
@database_option
@format_option
def sites(**kw: Any) -> None:
    """The sites of a store: their funnels with data, first and last event, events and
    bots' events.

    Asks `funnel serve` when it owns the embedded store (its funnel definitions then),
    else opens the store (never creating one).
    """
    _answer(_request("sites"), kw)


_SCOPE_OPTIONS = (
    ("from", "start"),
    ("to", "end"),
    ("site", "site"),
    ("by", "by"),
    ("include_bots", "include_bots"),
)


def print_result(result: ReportResult, fmt: str) -> None:
    """Print a report's result as a table (in colour on a terminal), JSON or CSV (stdout)."""
    if fmt == "table":
        for renderable in renderables(result, out.width):
            out.print(renderable)
    else:
        click.echo(render(result, fmt), nl=False)


_register(report)

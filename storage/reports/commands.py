"""``funnel report …``: every report as a command, printed as a table, JSON or CSV.

Each command takes what its report takes (:data:`~storage.reports.catalog.REPORTS`):
``--from/--to`` (a date or an ISO datetime, UTC; a bare ``--to`` date includes that day),
``--site``, ``--by`` with the breakdowns that report answers, ``--include-bots`` and
``--format``. They call the same functions as the Python API (:mod:`storage.reports`), through
:mod:`storage.reports.catalog`, which the HTTP API of ``funnel serve`` uses too. When
``funnel serve`` owns the embedded store, the commands ask it (:mod:`storage.reports.owner`)
instead of opening the store, and print the same. A request the catalog refuses is a usage
error (exit code 2) naming the flag at fault and the choices.

Numbers print in one format (:mod:`funnel.report`): JSON and CSV carry the same values, a
table shows rates as percentages.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table as RichTable

from funnel.attribution import MODELS
from funnel.report import FunnelReport, Kind, Table, cell_text, column_kind, csv_text
from storage.reports.catalog import (
    CONVERSIONS,
    REPORTS,
    ReportRequest,
    ReportRequestError,
    ReportResult,
    compute,
    from_payload,
    parse_request,
    payload_text,
)
from storage.reports.owner import OwnerError, fetch_report, store_directory

__all__ = [
    "ReportOptions",
    "print_funnels",
    "print_result",
    "print_table",
    "register",
    "sites_command",
]

# Reports are wide: use the terminal's width, or 160 columns when piped (rich would use 80).
out = Console(width=shutil.get_terminal_size((160, 24)).columns)
err = Console(stderr=True)
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True)
class ReportOptions:
    """The shared options and helpers the root command owns (``funnel.cli``).

    ``open_store(url, database)`` opens an existing store and never creates one (a report of
    a store that is not there is a mistake, not an empty answer).
    """

    store: Decorator
    database: Decorator
    funnels: Decorator
    fmt: Decorator
    open_store: Callable[[str, str], Any]
    funnel_catalog: Callable[[Any], Any]


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
            type=click.Choice(spec.breakdowns),
            default=spec.default_by,
            show_default=spec.default_by is not None,
            help="Breakdown.",
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


def _answer(o: ReportOptions, request: ReportRequest, kw: dict[str, Any]) -> None:
    """Answer ``request`` and print it in ``--format``.

    From the owner of an embedded store when one is running (``funnel serve``: chDB lets
    one process open a store, DESIGN §11), else from the store opened here. Either way the
    result goes through the same types, so it prints the same.
    """
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
            db = o.open_store(store, database)
            try:
                result = compute(db, request, o.funnel_catalog(funnels_file))
            finally:
                db.close()
    except ReportRequestError as exc:
        raise _refused(exc) from exc
    except OwnerError as exc:
        raise click.ClickException(str(exc)) from exc
    print_result(result, kw["fmt"])


def register(group: click.Group, o: ReportOptions) -> None:
    """Add the report commands to ``group`` (``funnel report``)."""

    def common(name: str) -> Decorator:
        def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
            return o.store(o.database(o.fmt(_scope_options(name)(command))))

        return decorate

    def scope(kw: dict[str, Any]) -> dict[str, object]:
        return {key: kw.pop(name) for key, name in _SCOPE_OPTIONS if name in kw}

    @group.command("funnel")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @click.option("--split/--no-split", default=True, help="Split by converted/dropped/in window.")
    @o.funnels
    @common("funnel")
    def funnel_cmd(funnel_name: str, split: bool, **kw: Any) -> None:
        """Step counts, step and overall conversion and 1:N, split by status."""
        flag = "true" if split else "false"
        _answer(o, _request("funnel", funnel=funnel_name, split=flag, **scope(kw)), kw)

    @group.command("dropoff")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @o.funnels
    @common("dropoff")
    def dropoff_cmd(funnel_name: str, **kw: Any) -> None:
        """Where people leave the funnel, by step; the biggest leak is flagged."""
        _answer(o, _request("dropoff", funnel=funnel_name, **scope(kw)), kw)

    @group.command("time-to-convert")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @o.funnels
    @common("time-to-convert")
    def time_cmd(funnel_name: str, **kw: Any) -> None:
        """p50/p90 time between steps, and from first touch to payment (the sales cycle)."""
        _answer(o, _request("time-to-convert", funnel=funnel_name, **scope(kw)), kw)

    @group.command("attribution")
    @click.option(
        "--conversion",
        type=click.Choice(CONVERSIONS),
        default="payment",
        show_default=True,
        help="The conversions credited.",
    )
    @click.option("--lookback-days", default=30, show_default=True)
    @common("attribution")
    def attribution_cmd(conversion: str, lookback_days: int, **kw: Any) -> None:
        """Credits and revenue per channel under every model, markov and shapley included."""
        request = _request(
            "attribution", conversion=conversion, lookback_days=lookback_days, **scope(kw)
        )
        _answer(o, request, kw)

    @group.command("channels")
    @click.option(
        "--model",
        default="last_non_direct",
        show_default=True,
        help=f"A model credited in the stream: {', '.join(MODELS)} (markov and shapley are "
        "data-driven: see the attribution report).",
    )
    @click.option("--target-cpl", type=float, default=None, help="Flag channels over this CPL.")
    @common("channels")
    def channels_cmd(model: str, target_cpl: float | None, **kw: Any) -> None:
        """Impressions to revenue per channel, with spend, CPL, CAC, ROAS and AOV."""
        _answer(o, _request("channels", model=model, target_cpl=target_cpl, **scope(kw)), kw)

    @group.command("cohorts")
    @click.option(
        "--cohort", type=click.Choice(["first_touch", "first_payment"]), default="first_touch"
    )
    @click.option("--churn-days", default=90, show_default=True)
    @common("cohorts")
    def cohorts_cmd(cohort: str, churn_days: int, **kw: Any) -> None:
        """Cohorts by period: repeat rate, regular customers, LTV to date and churn."""
        _answer(o, _request("cohorts", cohort=cohort, churn_days=churn_days, **scope(kw)), kw)

    @group.command("leads")
    @common("leads")
    def leads_cmd(**kw: Any) -> None:
        """Leads by temperature: conversion to payment, touches before the sale, lead → client."""
        _answer(o, _request("leads", **scope(kw)), kw)

    @group.command("forecast")
    @click.option("--horizon-days", default=30, show_default=True)
    @common("forecast")
    def forecast_cmd(horizon_days: int, **kw: Any) -> None:
        """Expected payments and revenue from the leads open at --to (default now)."""
        _answer(o, _request("forecast", horizon_days=horizon_days, **scope(kw)), kw)


def sites_command(o: ReportOptions) -> click.Command:
    """``funnel sites``: the sites of a store (the ``sites`` report of the catalog)."""

    @click.command("sites")
    @o.funnels
    @o.store
    @o.database
    @o.fmt
    def sites(**kw: Any) -> None:
        """The sites of a store: their funnels with data, first and last event, events and
        bots' events.

        Asks `funnel serve` when it owns the embedded store (its funnel definitions then),
        else opens the store (never creating one).
        """
        _answer(o, _request("sites"), kw)

    return sites


_SCOPE_OPTIONS = (
    ("from", "start"),
    ("to", "end"),
    ("site", "site"),
    ("by", "by"),
    ("include_bots", "include_bots"),
)


def print_result(result: ReportResult, fmt: str) -> None:
    """Print a report's result (a table, or funnel reports) as a table, JSON or CSV."""
    if isinstance(result, Table):
        print_table(result, fmt)
    else:
        print_funnels(result, fmt)


def print_table(table: Table, fmt: str) -> None:
    """Print a report table as a rich table, JSON or CSV (stdout), numbers in their column's
    format (:func:`~funnel.report.column_kind`)."""
    table = table.canonical()
    if fmt == "json":
        click.echo(payload_text(table))
        return
    kinds = table.kinds
    if fmt == "csv":
        _print_csv(table.columns, kinds, table.rows)
        return
    rich = RichTable(title=table.title)
    for i, column in enumerate(table.columns):
        numeric = any(
            isinstance(row[i], int | float) and not isinstance(row[i], bool) for row in table.rows
        )
        rich.add_column(column, justify="right" if numeric else "left")
    for row in table.rows:
        rich.add_row(*(_cell(kind, v) for kind, v in zip(kinds, row, strict=True)))
    out.print(rich)


def _print_csv(
    columns: tuple[str, ...], kinds: tuple[Kind, ...], rows: tuple[tuple[object, ...], ...]
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([csv_text(k, v) for k, v in zip(kinds, row, strict=True)] for row in rows)
    click.echo(buffer.getvalue(), nl=False)


def _cell(kind: Kind, value: object) -> str:
    if isinstance(value, bool):
        return "◀ biggest leak" if value else ""
    return cell_text(kind, value)


def print_funnels(reports: list[FunnelReport], fmt: str) -> None:
    """Print funnel reports (one per breakdown value)."""
    reports = [r.canonical() for r in reports]
    if fmt == "json":
        click.echo(payload_text(reports))
        return
    grouped = any(r.group is not None for r in reports)
    columns = (
        *(("group",) if grouped else ()),
        "index",
        "step",
        "count",
        "step_conversion",
        "overall_conversion",
        "one_in",
        "stopped_in_window",
        "stopped_dropped",
    )
    if fmt == "csv":
        rows = tuple(
            ((r.group,) if grouped else ())
            + (
                s.index,
                s.step,
                s.count,
                s.step_conversion,
                s.overall_conversion,
                r.one_in_at(s),
                s.stopped_in_window,
                s.stopped_dropped,
            )
            for r in reports
            for s in r.steps
        )
        _print_csv(columns, tuple(column_kind(c) for c in columns), rows)
        return
    for r in reports:
        title = (
            f"Funnel {r.funnel!r}"
            + (f" — {r.group}" if r.group is not None else "")
            + (f", site {r.site_id!r}" if r.site_id else "")
        )
        rich = RichTable(title=title)
        split = r.steps[0].stopped_dropped is not None
        headers = ["#", "step", "people", "step conv.", "overall", "1:N", "lost"]
        if split:
            headers += ["stopped here: in window", "dropped"]
        for header in headers:
            rich.add_column(header, justify="left" if header == "step" else "right")
        for s in r.steps:
            cells = [
                str(s.index),
                s.step,
                cell_text("count", s.count),
                cell_text("rate", s.step_conversion),
                cell_text("rate", s.overall_conversion),
                r.one_in_at(s),
                cell_text("count", s.dropped_from_previous) if s.index > 1 else "",
            ]
            if split:
                last = s.index == len(r.steps)
                cells += [
                    "" if last else cell_text("count", s.stopped_in_window),
                    "" if last else cell_text("count", s.stopped_dropped),
                ]
            rich.add_row(*cells)
        out.print(rich)
        summary = f"Overall conversion {cell_text('rate', r.overall_conversion)} ({r.one_in_at()})"
        if split:
            d = r.to_dict()
            summary += (
                f"; converted {r.converted:,}, dropped {d['dropped']:,}, "
                f"still in window {d['in_window']:,}"
            )
        out.print(summary)

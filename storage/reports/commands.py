"""``funnel report …``: every report as a command, printed as a table, JSON or CSV.

Each command takes ``--from/--to`` (a date or an ISO datetime, UTC; a bare ``--to`` date
includes that day), ``--site``, ``--by`` and ``--format``. They call the same functions as the
Python API (:mod:`storage.reports`), through :mod:`storage.reports.catalog`, which the HTTP API
of ``funnel serve`` uses too. When ``funnel serve`` owns the embedded store, the commands ask
it (:mod:`storage.reports.owner`) instead of opening the store, and print the same.
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

from funnel.report import FunnelReport, Table, one_in
from storage.reports.catalog import (
    ReportRequest,
    ReportRequestError,
    ReportResult,
    compute,
    from_payload,
    parse_request,
    payload_text,
)
from storage.reports.owner import OwnerError, fetch_report, store_directory
from storage.reports.scope import BREAKDOWNS

__all__ = ["ReportOptions", "print_funnels", "print_result", "print_table", "register"]

# Reports are wide: use the terminal's width, or 160 columns when piped (rich would use 80).
out = Console(width=shutil.get_terminal_size((160, 24)).columns)
err = Console(stderr=True)
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True)
class ReportOptions:
    """The shared options and helpers the root command owns (``funnel.cli``)."""

    store: Decorator
    database: Decorator
    funnels: Decorator
    fmt: Decorator
    open_store: Callable[[str, str], Any]
    funnel_catalog: Callable[[Any], Any]


def _scope_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            click.option("--from", "start", default=None, help="Period start (date or ISO time)."),
            click.option("--to", "end", default=None, help="Period end (a date includes it)."),
            click.option("--site", default=None, help="Only this site."),
            click.option("--by", type=click.Choice(BREAKDOWNS), default=None, help="Breakdown."),
        )
    ):
        command = option(command)
    return command


def _request(name: str, **params: object) -> ReportRequest:
    """The request of a command's options (validated here, before any store is opened)."""
    text = {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for key, value in params.items()
        if value is not None
    }
    try:
        return parse_request(name, text)
    except ReportRequestError as exc:
        raise click.BadParameter(str(exc)) from exc


def register(group: click.Group, o: ReportOptions) -> None:
    """Add the report commands to ``group`` (``funnel report``)."""

    def common(command: Callable[..., Any]) -> Callable[..., Any]:
        return o.store(o.database(o.fmt(_scope_options(command))))

    def run(request: ReportRequest, kw: dict[str, Any]) -> None:
        """Answer ``request`` and print it in ``--format``.

        From the owner of an embedded store when one is running (``funnel serve``: chDB
        lets one process open a store, DESIGN §11), else from the store opened here. Either
        way the result goes through the same types, so it prints the same.
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
            raise click.BadParameter(str(exc)) from exc
        except OwnerError as exc:
            raise click.ClickException(str(exc)) from exc
        print_result(result, kw["fmt"])

    def scope(kw: dict[str, Any]) -> dict[str, object]:
        return {key: kw.pop(name) for key, name in _SCOPE_OPTIONS}

    @group.command("funnel")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @click.option("--split/--no-split", default=True, help="Split by converted/dropped/in window.")
    @o.funnels
    @common
    def funnel_cmd(funnel_name: str, split: bool, **kw: Any) -> None:
        """Step counts, step and overall conversion and 1:N, split by status."""
        run(_request("funnel", funnel=funnel_name, split=split, **scope(kw)), kw)

    @group.command("dropoff")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @o.funnels
    @common
    def dropoff_cmd(funnel_name: str, **kw: Any) -> None:
        """Where people leave the funnel, by step; the biggest leak is flagged."""
        run(_request("dropoff", funnel=funnel_name, **scope(kw)), kw)

    @group.command("time-to-convert")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @o.funnels
    @common
    def time_cmd(funnel_name: str, **kw: Any) -> None:
        """p50/p90 time between steps, and from first touch to payment (the sales cycle)."""
        run(_request("time-to-convert", funnel=funnel_name, **scope(kw)), kw)

    @group.command("attribution")
    @click.option(
        "--conversion", default="payment", show_default=True, help="lead, order, payment, repeat"
    )
    @click.option("--lookback-days", default=30, show_default=True)
    @common
    def attribution_cmd(conversion: str, lookback_days: int, **kw: Any) -> None:
        """Credits and revenue per channel under every model, markov and shapley included."""
        request = _request(
            "attribution", conversion=conversion, lookback_days=lookback_days, **scope(kw)
        )
        run(request, kw)

    @group.command("channels")
    @click.option("--model", default="last_non_direct", show_default=True)
    @click.option("--target-cpl", type=float, default=None, help="Flag channels over this CPL.")
    @common
    def channels_cmd(model: str, target_cpl: float | None, **kw: Any) -> None:
        """Impressions to revenue per channel, with spend, CPL, CAC, ROAS and AOV."""
        run(_request("channels", model=model, target_cpl=target_cpl, **scope(kw)), kw)

    @group.command("cohorts")
    @click.option(
        "--cohort", type=click.Choice(["first_touch", "first_payment"]), default="first_touch"
    )
    @click.option("--churn-days", default=90, show_default=True)
    @common
    def cohorts_cmd(cohort: str, churn_days: int, **kw: Any) -> None:
        """Cohorts by period: repeat rate, regular customers, LTV to date and churn."""
        run(_request("cohorts", cohort=cohort, churn_days=churn_days, **scope(kw)), kw)

    @group.command("leads")
    @common
    def leads_cmd(**kw: Any) -> None:
        """Leads by temperature: conversion to payment, touches before the sale, lead → client."""
        run(_request("leads", **scope(kw)), kw)

    @group.command("forecast")
    @click.option("--horizon-days", default=30, show_default=True)
    @common
    def forecast_cmd(horizon_days: int, **kw: Any) -> None:
        """Expected payments and revenue from the open leads (as of --to, default now)."""
        run(_request("forecast", horizon_days=horizon_days, **scope(kw)), kw)


_SCOPE_OPTIONS = (("from", "start"), ("to", "end"), ("site", "site"), ("by", "by"))


def print_result(result: ReportResult, fmt: str) -> None:
    """Print a report's result (a table, or funnel reports) as a table, JSON or CSV."""
    if isinstance(result, Table):
        print_table(result, fmt)
    else:
        print_funnels(result, fmt)


def print_table(table: Table, fmt: str) -> None:
    """Print a report table as a rich table, JSON or CSV (stdout)."""
    if fmt == "json":
        click.echo(payload_text(table))
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows(["" if v is None else v for v in row] for row in table.rows)
        click.echo(buffer.getvalue(), nl=False)
        return
    rich = RichTable(title=table.title)
    for i, column in enumerate(table.columns):
        numeric = any(isinstance(row[i], int | float) for row in table.rows)
        rich.add_column(column, justify="right" if numeric else "left")
    for row in table.rows:
        rich.add_row(*(_cell(v) for v in row))
    out.print(rich)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "◀ biggest leak" if value else ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_funnels(reports: list[FunnelReport], fmt: str) -> None:
    """Print funnel reports (one per breakdown value)."""
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
        rows = [
            ((r.group,) if grouped else ())
            + (
                s.index,
                s.step,
                s.count,
                s.step_conversion,
                s.overall_conversion,
                s.one_in,
                s.stopped_in_window,
                s.stopped_dropped,
            )
            for r in reports
            for s in r.steps
        ]
        print_table(Table("funnel", columns, tuple(rows)), "csv")
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
                f"{s.count:,}",
                _pct(s.step_conversion),
                _pct(s.overall_conversion),
                s.one_in,
                f"{s.dropped_from_previous:,}" if s.index > 1 else "",
            ]
            if split:
                last = s.index == len(r.steps)
                cells += [
                    "" if last else f"{s.stopped_in_window:,}",
                    "" if last else f"{s.stopped_dropped:,}",
                ]
            rich.add_row(*cells)
        out.print(rich)
        summary = (
            f"Overall conversion {_pct(r.overall_conversion)} ({one_in(r.overall_conversion)})"
        )
        if split:
            d = r.to_dict()
            summary += (
                f"; converted {r.converted:,}, dropped {d['dropped']:,}, "
                f"still in window {d['in_window']:,}"
            )
        out.print(summary)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"

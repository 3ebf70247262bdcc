"""``funnel report …``: every report as a command, printed as a table, JSON or CSV.

Each command takes ``--from/--to`` (a date or an ISO datetime, UTC; a bare ``--to`` date
includes that day), ``--site``, ``--by`` and ``--format``. They call the same functions as the
Python API (:mod:`storage.reports`).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import click
from rich.console import Console
from rich.table import Table as RichTable

from funnel.report import DropoffRow, FunnelReport, Table, one_in
from storage.reports.scope import BREAKDOWNS, Breakdown, ReportScope, parse_when

__all__ = ["ReportOptions", "print_funnels", "print_table", "register"]

# Reports are wide: use the terminal's width, or 160 columns when piped (rich would use 80).
out = Console(width=shutil.get_terminal_size((160, 24)).columns)
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


def _scope(start: str | None, end: str | None, site: str | None, by: str | None) -> ReportScope:
    try:
        return ReportScope(
            start=parse_when(start) if start else None,
            end=parse_when(end, end=True) if end else None,
            site=site,
            by=cast(Breakdown | None, by),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def register(group: click.Group, o: ReportOptions) -> None:
    """Add the report commands to ``group`` (``funnel report``)."""

    def common(command: Callable[..., Any]) -> Callable[..., Any]:
        return o.store(o.database(o.fmt(_scope_options(command))))

    def run(store: str, database: str, work: Callable[[Any], Any]) -> Any:
        db = o.open_store(store, database)
        try:
            return work(db)
        finally:
            db.close()

    @group.command("funnel")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @click.option("--split/--no-split", default=True, help="Split by converted/dropped/in window.")
    @o.funnels
    @common
    def funnel_cmd(funnel_name: str, split: bool, funnels_file: Any, **kw: Any) -> None:
        """Step counts, step and overall conversion and 1:N, split by status."""
        from storage.reports.funnels import funnel_report

        spec = o.funnel_catalog(funnels_file).get(funnel_name)
        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by"))
        reports = run(
            kw["store"], kw["database"], lambda db: funnel_report(db, spec, scope, split=split)
        )
        print_funnels(reports, kw["fmt"])

    @group.command("dropoff")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @o.funnels
    @common
    def dropoff_cmd(funnel_name: str, funnels_file: Any, **kw: Any) -> None:
        """Where people leave the funnel, by step; the biggest leak is flagged."""
        from storage.reports.funnels import dropoff_report

        spec = o.funnel_catalog(funnels_file).get(funnel_name)
        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by"))
        rows = run(kw["store"], kw["database"], lambda db: dropoff_report(db, spec, scope))
        print_table(_dropoff_table(spec.name, rows, grouped=scope.by is not None), kw["fmt"])

    @group.command("time-to-convert")
    @click.option("--funnel", "funnel_name", default="sales", show_default=True)
    @o.funnels
    @common
    def time_cmd(funnel_name: str, funnels_file: Any, **kw: Any) -> None:
        """p50/p90 time between steps, and from first touch to payment (the sales cycle)."""
        from storage.reports.timing import time_to_convert_report

        spec = o.funnel_catalog(funnels_file).get(funnel_name)
        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by"))
        table = run(kw["store"], kw["database"], lambda db: time_to_convert_report(db, spec, scope))
        print_table(table, kw["fmt"])

    @group.command("attribution")
    @click.option(
        "--conversion", default="payment", show_default=True, help="lead, order, payment, repeat"
    )
    @click.option("--lookback-days", default=30, show_default=True)
    @common
    def attribution_cmd(conversion: str, lookback_days: int, **kw: Any) -> None:
        """Credits and revenue per channel under every model, markov and shapley included."""
        from storage.reports.attribution import attribution_report

        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by"))
        table = run(
            kw["store"],
            kw["database"],
            lambda db: attribution_report(
                db, scope, conversion=conversion, lookback=timedelta(days=lookback_days)
            ),
        )
        print_table(table, kw["fmt"])

    @group.command("channels")
    @click.option("--model", default="last_non_direct", show_default=True)
    @click.option("--target-cpl", type=float, default=None, help="Flag channels over this CPL.")
    @common
    def channels_cmd(model: str, target_cpl: float | None, **kw: Any) -> None:
        """Impressions to revenue per channel, with spend, CPL, CAC, ROAS and AOV."""
        from storage.reports.channels import channels_report

        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by"))
        table = run(
            kw["store"],
            kw["database"],
            lambda db: channels_report(db, scope, model=model, target_cpl=target_cpl),
        )
        print_table(table, kw["fmt"])

    @group.command("cohorts")
    @click.option(
        "--cohort", type=click.Choice(["first_touch", "first_payment"]), default="first_touch"
    )
    @click.option("--churn-days", default=90, show_default=True)
    @common
    def cohorts_cmd(cohort: str, churn_days: int, **kw: Any) -> None:
        """Cohorts by period: repeat rate, regular customers, LTV to date and churn."""
        from storage.reports.customers import cohorts_report

        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by") or "month")
        table = run(
            kw["store"],
            kw["database"],
            lambda db: cohorts_report(db, scope, cohort=cohort, churn_days=churn_days),
        )
        print_table(table, kw["fmt"])

    @group.command("leads")
    @common
    def leads_cmd(**kw: Any) -> None:
        """Leads by temperature: conversion to payment, touches before the sale, lead → client."""
        from storage.reports.customers import leads_report

        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by"))
        print_table(run(kw["store"], kw["database"], lambda db: leads_report(db, scope)), kw["fmt"])

    @group.command("forecast")
    @click.option("--horizon-days", default=30, show_default=True)
    @common
    def forecast_cmd(horizon_days: int, **kw: Any) -> None:
        """Expected payments and revenue from the open leads (as of --to, default now)."""
        from storage.reports.customers import forecast_report

        scope = _scope(kw.pop("start"), kw.pop("end"), kw.pop("site"), kw.pop("by"))
        table = run(
            kw["store"],
            kw["database"],
            lambda db: forecast_report(db, scope, horizon_days=horizon_days),
        )
        print_table(table, kw["fmt"])


def _dropoff_table(funnel: str, rows: list[DropoffRow], *, grouped: bool) -> Table:
    columns = (
        "step",
        "next_step",
        "reached",
        "continued",
        "dropped",
        "in_window",
        "dropoff_rate",
        "biggest_leak",
    )
    return Table(
        title=f"Drop-off ({funnel})",
        columns=(("group",) if grouped else ()) + columns,
        rows=tuple(
            ((r.group,) if grouped else ())
            + (
                r.step,
                r.next_step,
                r.reached,
                r.continued,
                r.dropped,
                r.in_window,
                None if r.dropoff_rate is None else round(r.dropoff_rate, 4),
                r.biggest_leak,
            )
            for r in rows
        ),
        meta={"funnel": funnel},
    )


def print_table(table: Table, fmt: str) -> None:
    """Print a report table as a rich table, JSON or CSV (stdout)."""
    if fmt == "json":
        click.echo(json.dumps(table.to_dict(), indent=2, default=str))
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
        payload: object = (
            reports[0].to_dict()
            if len(reports) == 1 and reports[0].group is None
            else [r.to_dict() for r in reports]
        )
        click.echo(json.dumps(payload, indent=2))
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

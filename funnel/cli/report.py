"""``funnel report …`` and ``funnel sites``: the answers (:mod:`storage.reports.commands`)."""

from __future__ import annotations

from funnel.cli.root import (
    _config,
    _open_existing,
    database_option,
    format_option,
    funnels_option,
    main,
    store_option,
)
from storage.reports.commands import ReportOptions, sites_command
from storage.reports.commands import register as register_reports


@main.group()
def report() -> None:
    """Answers from the stored facts."""


_report_options = ReportOptions(
    store=store_option,
    database=database_option,
    funnels=funnels_option,
    fmt=format_option,
    open_store=_open_existing,
    funnel_catalog=lambda path: _config(path, None).funnels,
)
register_reports(report, _report_options)
main.add_command(sites_command(_report_options))

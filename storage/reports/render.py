"""A report's result as people and programs read it: JSON, CSV or a table.

The one module that turns a result (:data:`~storage.reports.catalog.ReportResult`: a
:class:`~funnel.report.Table`, or for ``funnel`` a list of
:class:`~funnel.report.FunnelReport`) into its forms, so ``funnel report … --format F`` and
``GET /api/reports/<name>?format=F`` give the same bytes:

* :func:`to_payload` / :func:`from_payload` — the JSON payload of a result and back. Tables
  carry their ``columns`` (so an empty table keeps its header); the funnel payload is one
  object without a breakdown, else a list. ``from_payload(to_payload(r))`` renders exactly as
  ``r`` does in every format (how ``funnel report`` prints what the store's owner answered).
* :func:`render` — the text of a result in ``json``, ``csv`` or ``table`` (plain text);
  :func:`renderables` — the ``table`` form as rich renderables (a terminal shows them in
  colour). A table too wide for the width with model columns in pairs (attribution) shows
  the models as rows instead.

Numbers are written in one format (:mod:`funnel.report`): JSON and CSV carry the same values,
a table shows rates as percentages.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Literal, cast

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table as RichTable

from funnel.report import FunnelReport, Kind, StepRow, Table, cell_text, column_kind, csv_text

__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "Payload",
    "ReportResult",
    "from_payload",
    "pairs_as_rows",
    "payload_text",
    "render",
    "renderables",
    "to_payload",
]

ReportResult = Table | list[FunnelReport]
Payload = dict[str, object] | list[dict[str, object]]
Format = Literal["json", "csv", "table"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv")
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "table": "text/plain; charset=utf-8",
}
#: Reports are wide: a table rendered without a terminal is this many columns wide.
TABLE_WIDTH = 160
_FUNNEL_COLUMNS = (
    "index",
    "step",
    "count",
    "step_conversion",
    "overall_conversion",
    "one_in",
    "stopped_in_window",
    "stopped_dropped",
)


def to_payload(result: ReportResult) -> Payload:
    """The JSON-ready payload of a result (see the module docstring), in the output
    precision."""
    if isinstance(result, Table):
        body = result.canonical().to_dict()
        rows = body.pop("rows")
        return {**body, "columns": list(result.columns), "rows": rows}
    if len(result) == 1 and result[0].group is None:
        return result[0].canonical().to_dict()
    return [r.canonical().to_dict() for r in result]


def payload_text(result: ReportResult) -> str:
    """The JSON text of a result: what ``--format json`` prints and the HTTP API answers."""
    return json.dumps(to_payload(result), indent=2, default=str)


def render(result: ReportResult, fmt: str, *, width: int = TABLE_WIDTH) -> str:
    """``result`` as text in ``fmt`` (``json``, ``csv``, or ``table``: plain text ``width``
    columns wide). Raises :class:`ValueError` for another format."""
    if fmt == "json":
        return payload_text(result) + "\n"
    if fmt == "csv":
        return _csv(result)
    if fmt == "table":
        console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
        for renderable in renderables(result, width):
            console.print(renderable)
        return cast(io.StringIO, console.file).getvalue()
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")


def renderables(result: ReportResult, width: int | None = None) -> list[RenderableType]:
    """The ``table`` form of ``result``: rich tables (and a summary line per funnel).

    A table that would not fit in ``width`` columns and has paired ``<x>`` and
    ``<x>_revenue`` columns (the attribution report: one pair per model) is shown with those
    pairs as rows instead (:func:`pairs_as_rows`), so a terminal shows every figure whole."""
    if isinstance(result, Table):
        table = result.canonical()
        rich = _rich_table(table)
        if width is not None and _natural_width(rich) > width:
            long = pairs_as_rows(table)
            if long is not None:
                rich = _rich_table(long)
        return [rich]
    return [item for r in result for item in _rich_funnel(r.canonical())]


def pairs_as_rows(table: Table) -> Table | None:
    """``table`` with each pair of columns ``<x>`` / ``<x>_revenue`` turned into a row of
    ``model``, ``credit`` and ``credited_revenue`` (the columns before the first pair lead
    every row); None for a table without such pairs."""
    paired = [c for c in table.columns if f"{c}_revenue" in table.columns]
    if not paired:
        return None
    lead = table.columns[: table.columns.index(paired[0])]
    index = {c: i for i, c in enumerate(table.columns)}
    rows = tuple(
        (*row[: len(lead)], model, row[index[model]], row[index[f"{model}_revenue"]])
        for row in table.rows
        for model in paired
    )
    columns = (*lead, "model", "credit", "credited_revenue")
    return Table(title=table.title, columns=columns, rows=rows, meta=table.meta)


def _natural_width(renderable: RenderableType) -> int:
    """How many columns ``renderable`` takes when nothing limits it."""
    console = Console(file=io.StringIO(), width=10_000, color_system=None)
    return console.measure(renderable).maximum


def _csv(result: ReportResult) -> str:
    if isinstance(result, Table):
        table = result.canonical()
        return _csv_text(table.columns, table.kinds, table.rows)
    reports = [r.canonical() for r in result]
    grouped = any(r.group is not None for r in reports)
    columns = (*(("group",) if grouped else ()), *_FUNNEL_COLUMNS)
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
    return _csv_text(columns, tuple(column_kind(c) for c in columns), rows)


def _csv_text(
    columns: tuple[str, ...], kinds: tuple[Kind, ...], rows: tuple[tuple[object, ...], ...]
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([csv_text(k, v) for k, v in zip(kinds, row, strict=True)] for row in rows)
    return buffer.getvalue()


def _rich_table(table: Table) -> RichTable:
    rich = RichTable(title=escape(table.title))
    for i, column in enumerate(table.columns):
        numeric = any(
            isinstance(row[i], int | float) and not isinstance(row[i], bool) for row in table.rows
        )
        rich.add_column(escape(column), justify="right" if numeric else "left")
    for row in table.rows:
        rich.add_row(*(_cell(kind, v) for kind, v in zip(table.kinds, row, strict=True)))
    return rich


def _cell(kind: Kind, value: object) -> str:
    """A cell as rich markup: stored text (a step, a channel, a property) is escaped, so
    ``lead[form=demo]`` prints as it is."""
    if isinstance(value, bool):
        return "◀ biggest leak" if value else ""
    return escape(cell_text(kind, value))


def _rich_funnel(r: FunnelReport) -> list[RenderableType]:
    title = (
        f"Funnel {r.funnel!r}"
        + (f" — {r.group}" if r.group is not None else "")
        + (f", site {r.site_id!r}" if r.site_id else "")
    )
    rich = RichTable(title=escape(title))
    split = r.steps[0].stopped_dropped is not None
    headers = ["#", "step", "people", "step conv.", "overall", "1:N", "lost"]
    if split:
        headers += ["stopped here: in window", "dropped"]
    for header in headers:
        rich.add_column(header, justify="left" if header == "step" else "right")
    for s in r.steps:
        cells = [
            str(s.index),
            escape(s.step),
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
    summary = f"Overall conversion {cell_text('rate', r.overall_conversion)} ({r.one_in_at()})"
    if split:
        d = r.to_dict()
        summary += (
            f"; converted {r.converted:,}, dropped {d['dropped']:,}, "
            f"still in window {d['in_window']:,}"
        )
    return [rich, summary]


def from_payload(name: str, payload: object) -> ReportResult:
    """A result back from the payload of report ``name`` (as :func:`to_payload` made it).

    Raises :class:`ValueError` for a payload of another shape.
    """
    try:
        if name == "funnel" and not (isinstance(payload, dict) and "columns" in payload):
            items = payload if isinstance(payload, list) else [payload]
            return [_funnel(cast(dict[str, object], item)) for item in items]
        body = dict(cast(dict[str, object], payload))
        title, columns = str(body.pop("title")), [str(c) for c in _list(body.pop("columns"))]
        rows = tuple(
            tuple(cast(dict[str, object], record)[c] for c in columns)
            for record in _list(body.pop("rows"))
        )
        return Table(title=title, columns=tuple(columns), rows=rows, meta=body)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a {name} report payload: {exc!r}") from exc


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _funnel(body: dict[str, object]) -> FunnelReport:
    steps = tuple(
        StepRow(
            index=int(cast(int, s["index"])),
            step=str(s["step"]),
            count=int(cast(int, s["count"])),
            step_conversion=cast(float | None, s["step_conversion"]),
            overall_conversion=cast(float | None, s["overall_conversion"]),
            dropped_from_previous=int(cast(int, s["dropped_from_previous"])),
            stopped_in_window=cast(int | None, s["stopped_in_window"]),
            stopped_dropped=cast(int | None, s["stopped_dropped"]),
        )
        for s in (cast(dict[str, object], step) for step in _list(body["steps"]))
    )
    return FunnelReport(
        funnel=str(body["funnel"]),
        site_id=cast(str | None, body["site_id"]),
        steps=steps,
        group=cast(str | None, body["group"]),
    )

"""Marketing spend: ``funnel spend load FILE.csv`` into the ``spend`` table (DESIGN §9).

The CSV has a header and the columns ``date, site_id, channel, campaign, cost, currency``
(``campaign`` may be empty, ``currency`` defaults to USD, ``site_id`` may be left out when the
load names the site). A row that does not parse is not
loaded; it is reported with its line number and a machine-readable reason, and counted. The
table is a ReplacingMergeTree keyed by site, date, channel and campaign: loading a day again
replaces its cost instead of adding to it, so a corrected export can simply be re-loaded
(reports read it with ``FINAL``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storage.backends import Store

__all__ = ["SpendLoad", "SpendRow", "load_spend", "read_spend"]

COLUMNS = ("date", "site_id", "channel", "campaign", "cost", "currency")


class SpendRow(BaseModel):
    """One day's cost of a channel (and campaign) on a site."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    date: date
    site_id: Annotated[str, Field(min_length=1, max_length=128)]
    channel: Annotated[str, Field(min_length=1, max_length=128)]
    campaign: Annotated[str, Field(max_length=256)] = ""
    cost: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"


@dataclass(slots=True)
class SpendLoad:
    """What a load did: rows loaded, and the rejected lines with their reasons."""

    loaded: int = 0
    rejected: list[dict[str, object]] = field(default_factory=list)


def read_spend(
    lines: Iterable[str], site_id: str | None = None
) -> Iterator[SpendRow | dict[str, object]]:
    """Parse CSV lines: a :class:`SpendRow` per good line, a rejection dict per bad one
    (``{"line": n, "reason": code, "detail": text}``). ``site_id`` fills rows without one."""
    reader = csv.DictReader(lines)
    required = ("date", "channel", "cost") if site_id else ("date", "site_id", "channel", "cost")
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        yield {"line": 1, "reason": "missing_columns", "detail": ", ".join(missing)}
        return
    for record in reader:
        line = reader.line_num
        values = {k: v for k, v in record.items() if k is not None and v not in (None, "")}
        if site_id:
            values.setdefault("site_id", site_id)
        extra = [k for k in record if k is None or k not in COLUMNS]
        if extra:
            yield {"line": line, "reason": "unknown_columns", "detail": str(extra)}
            continue
        try:
            yield SpendRow.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            yield {"line": line, "reason": f"invalid_{where}", "detail": first["msg"]}


def load_spend(
    store: Store, path: Path, *, site_id: str | None = None, batch: int = 10_000
) -> SpendLoad:
    """Load a spend CSV into ``spend``; bad lines are skipped and reported (module docstring)."""
    result = SpendLoad()
    rows: list[dict[str, object]] = []
    with path.open(newline="", encoding="utf-8") as f:
        for item in read_spend(f, site_id):
            if isinstance(item, SpendRow):
                rows.append(item.model_dump())
            else:
                result.rejected.append(item)
            if len(rows) >= batch:
                store.insert("spend", rows)
                result.loaded += len(rows)
                rows = []
    if rows:
        store.insert("spend", rows)
        result.loaded += len(rows)
    return result

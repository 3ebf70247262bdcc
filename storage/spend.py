"""Marketing spend: ``funnel spend load FILE.csv`` into the ``spend`` table (DESIGN §9).

The CSV has a header and the columns ``date, site_id, channel, campaign, cost, currency``
(``campaign`` may be empty, ``currency`` defaults to USD, ``site_id`` may be left out when the
load names the site). A row that does not parse is not
loaded; it is reported with its line number and a machine-readable reason, and counted. The
table is a ReplacingMergeTree keyed by site, date, channel and campaign: loading a day again
replaces its cost instead of adding to it, so a corrected export can simply be re-loaded
(reports read it with ``FINAL``).

The file is read whole and checked before anything is inserted; two problems refuse it as a
whole with a :class:`SpendFileError` (nothing is loaded):

- ``not_utf8``: the file is not UTF-8 text (a UTF-8 byte order mark, as Excel writes, is fine).
- ``currency_mix``: a site's rows are in more than one currency, or in another currency than
  the spend already stored for that site. Reports sum ``cost``, so spend is in one currency
  per site: convert before loading (to change a site's currency, delete its stored spend).

A channel name the channel rules never produce (:func:`known_channels`: each rule's channel and
the direct channel) still loads, since spend may be kept for channels no event is classified
into, but the load lists it in ``unknown_channels`` and says so in ``warnings``: usually it is
a typo, and its spend would not meet the leads and revenue of the channel it meant.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from funnel.channels import DIRECT, ChannelRules
from storage.backends import Store

__all__ = [
    "SpendFileError",
    "SpendLoad",
    "SpendRow",
    "known_channels",
    "load_spend",
    "read_spend",
]

COLUMNS = ("date", "site_id", "channel", "campaign", "cost", "currency")
_FILE_ERRORS = {
    "not_utf8": "spend file is not UTF-8 text",
    "currency_mix": "spend is in one currency per site; convert before loading",
}


class SpendRow(BaseModel):
    """One day's cost of a channel (and campaign) on a site."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    date: date
    site_id: Annotated[str, Field(min_length=1, max_length=128)]
    channel: Annotated[str, Field(min_length=1, max_length=128)]
    campaign: Annotated[str, Field(max_length=256)] = ""
    cost: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"


class SpendFileError(ValueError):
    """A spend file refused as a whole (nothing loaded); ``reason`` is machine-readable
    (``not_utf8``, ``currency_mix``), ``detail`` says where or which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{_FILE_ERRORS.get(reason, reason)}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class SpendLoad:
    """What a load did: rows loaded, the rejected lines with their reasons, and the loaded
    channel names the channel rules never produce (with a readable warning about them)."""

    loaded: int = 0
    rejected: list[dict[str, object]] = field(default_factory=list)
    unknown_channels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def known_channels(rules: ChannelRules) -> frozenset[str]:
    """The channel names ``rules`` can classify a touch into: each rule's channel and the
    direct channel (also the core's ``Direct``, which attribution credits a conversion with
    no touch in its lookback)."""
    return frozenset({r.channel for r in rules.rule} | {rules.direct, DIRECT})


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
    store: Store,
    path: Path,
    *,
    site_id: str | None = None,
    channels: ChannelRules | None = None,
    batch: int = 10_000,
) -> SpendLoad:
    """Load a spend CSV into ``spend``; bad lines are skipped and reported, a bad file is
    refused whole with :class:`SpendFileError` (module docstring). ``channels`` are the rules
    whose channel names are known (default: the shipped rules)."""
    text = _decode(path.read_bytes())
    result = SpendLoad()
    rows: list[dict[str, object]] = []
    for item in read_spend(io.StringIO(text, newline=""), site_id):
        if isinstance(item, SpendRow):
            rows.append(item.model_dump())
        else:
            result.rejected.append(item)
    _check_currencies(store, rows)
    known = known_channels(channels or ChannelRules.default())
    unknown = sorted({str(r["channel"]) for r in rows} - known)
    if unknown:
        result.unknown_channels = unknown
        result.warnings.append(
            f"channel(s) the channel rules never produce: {', '.join(unknown)} "
            f"(loaded all the same; known: {', '.join(sorted(known))})"
        )
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        store.insert("spend", chunk)
        result.loaded += len(chunk)
    return result


def _decode(data: bytes) -> str:
    """The file's text: UTF-8, with or without a byte order mark, else ``not_utf8``."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpendFileError(
            "not_utf8",
            f"line {line}: byte 0x{data[exc.start]:02x} ({exc.reason}); save it as UTF-8",
        ) from exc


def _check_currencies(store: Store, rows: Sequence[dict[str, object]]) -> None:
    """Refuse (``currency_mix``) a site with rows in several currencies, or in another
    currency than the spend already stored for that site."""
    in_file: dict[str, set[str]] = {}
    for r in rows:
        in_file.setdefault(str(r["site_id"]), set()).add(str(r["currency"]))
    if not in_file:
        return
    sql = f"SELECT DISTINCT currency FROM {store.database}.spend WHERE site_id = {{site:String}}"
    problems = []
    for site, currencies in sorted(in_file.items()):
        stored = {str(r["currency"]) for r in store.query(sql, {"site": site})}
        if len(currencies) > 1:
            problems.append(f"site {site!r} has rows in {', '.join(sorted(currencies))}")
        elif stored and stored != currencies:
            problems.append(
                f"site {site!r} has rows in {', '.join(sorted(currencies))} but its stored "
                f"spend is in {', '.join(sorted(stored))}"
            )
    if problems:
        raise SpendFileError("currency_mix", "; ".join(problems))

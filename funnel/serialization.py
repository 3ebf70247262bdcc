"""JSON form of fact rows, shared by every adapter (Kafka, ClickHouse, tables): datetimes are
ISO 8601 with offset, decimals are strings. Person state has a binary form
(:mod:`funnel.codec`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

__all__ = ["dumps_row"]


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps_row(row: Mapping[str, object]) -> str:
    """One row as compact JSON (the line format of ClickHouse ``JSONEachRow``)."""
    return json.dumps(row, default=_default, separators=(",", ":"))

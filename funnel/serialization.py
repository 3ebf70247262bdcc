"""JSON forms of facts and person state, shared by every adapter (Kafka, ClickHouse, tables).

Datetimes are ISO 8601 with offset, decimals are strings; :func:`state_from_json` restores
a :class:`~funnel.processor.PersonState` exactly (a round-trip test pins it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING

from pydantic import TypeAdapter

if TYPE_CHECKING:
    from funnel.processor import PersonState

__all__ = ["dumps_row", "state_from_json", "state_to_json"]


@cache
def _state() -> TypeAdapter[PersonState]:
    # Built on first use: a store that only writes rows (dumps_row) never loads the processor.
    from funnel.processor import PersonState

    return TypeAdapter(PersonState)


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps_row(row: Mapping[str, object]) -> str:
    """One row as compact JSON (the line format of ClickHouse ``JSONEachRow``)."""
    return json.dumps(row, default=_default, separators=(",", ":"))


def state_to_json(state: PersonState) -> bytes:
    return _state().dump_json(state)


def state_from_json(data: bytes | str) -> PersonState:
    return _state().validate_json(data)

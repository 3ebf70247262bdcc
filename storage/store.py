"""The store contract every ClickHouse backend keeps, and its errors.

    StoreError
    └── StoreUnavailable   the store cannot be reached now; retrying later may succeed

A :class:`StoreError` whose :attr:`~StoreError.refuses_data` is true was refused for the rows
it carried (a value out of range, a constraint, a block over a limit), not for the store's
state: :func:`storage.poison.insert_isolating` splits such a batch to land everything but the
rows refused on their own. The backends: :mod:`storage.chdb_store`, :mod:`storage.server_store`;
:func:`storage.backends.open_store` picks one by URL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from funnel.serialization import dumps_row

__all__ = [
    "DATA_ERROR_CODES",
    "Row",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "encode_rows",
    "quote",
    "unique_token",
]

Row = Mapping[str, object]


class StoreError(Exception):
    """A store operation failed (bad SQL, schema mismatch, rejected data).

    ``code`` is ClickHouse's error code when one is known; ``refuses_data`` says the rows
    themselves were refused (their values, or the block's shape), so the same rows would be
    refused again while others would land.
    """

    def __init__(self, message: str, *, code: int | None = None, data: bool | None = None):
        super().__init__(message)
        self.code = code if code is not None else _code_in(message)
        self.refuses_data = data if data is not None else _refuses_data(self.code, message)


#: ClickHouse error codes that refuse an insert for the values it carries: CANNOT_PARSE_TEXT,
#: CANNOT_PARSE_INPUT_ASSERTION_FAILED, CANNOT_PARSE_QUOTED_STRING, CANNOT_PARSE_DATE,
#: CANNOT_PARSE_DATETIME, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE,
#: CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
#: DECIMAL_OVERFLOW, VIOLATED_CONSTRAINT, CANNOT_PARSE_UUID, CANNOT_PARSE_BOOL.
DATA_ERROR_CODES = frozenset({6, 27, 26, 38, 41, 53, 69, 70, 72, 117, 131, 321, 407, 469, 376, 467})
_TOO_MANY_PARTS = 252  # also the code of "too many partitions for a single INSERT block"


def _code_in(message: str) -> int | None:
    match = re.search(r"Code: (\d+)\.", message)
    return int(match.group(1)) if match else None


def _refuses_data(code: int | None, message: str) -> bool:
    if code == _TOO_MANY_PARTS:
        return "partitions for single insert" in message.lower()
    return code in DATA_ERROR_CODES


class StoreUnavailable(StoreError):
    """The store cannot be reached now (connection refused, server restarting)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message, code=code, data=False)


class Store(Protocol):
    """The contract every backend keeps (one contract test suite runs against each)."""

    database: str

    def execute(self, sql: str, params: Mapping[str, object] | None = None) -> None:
        """Run a statement. Blocks until ClickHouse has finished it."""

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
        """Run a query; rows come back as dicts of column name to value."""

    def insert(self, table: str, rows: Sequence[Row], *, dedup_token: str | None = None) -> None:
        """Insert rows into ``database.table``; returns once ClickHouse acknowledged them.

        Rows with the same ``dedup_token`` as a recent insert into the same table are dropped
        by ClickHouse (``non_replicated_deduplication_window``), so a replay is harmless.
        Without a token nothing is deduplicated: identical rows inserted twice land twice.
        """

    def close(self) -> None:
        """Release the store; idempotent."""


def encode_rows(rows: Sequence[Row]) -> str:
    """Rows as JSONEachRow text (datetimes ISO 8601, decimals as strings)."""
    return "\n".join(dumps_row(row) for row in rows)


def unique_token() -> str:
    # Without a token ClickHouse deduplicates by a hash of the block, and ``insert_deduplicate
    # = 0`` does not turn that off for non-replicated tables: identical rows inserted on
    # purpose (a demo re-run) would vanish. A fresh token per insert means "never a replay".
    return f"unique:{uuid.uuid4()}"


def quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")

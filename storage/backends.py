"""Two ClickHouse store backends behind one small contract.

* :class:`ChdbStore` — the ClickHouse engine embedded in this process (chDB) on a local
  directory. One process may own one data directory at a time (a chDB limit), so a process
  opens one :class:`ChdbStore` and shares it.
* :class:`ServerStore` — a ClickHouse server over the native protocol (clickhouse-driver).

Both take ClickHouse SQL with server-side parameters (``{name:Type}``), insert rows given as
mappings of column name to plain Python or JSON values, and honour an
``insert_deduplication_token`` so that a replayed insert lands once. Driver errors are wrapped:

    StoreError
    └── StoreUnavailable   the store cannot be reached now; retrying later may succeed

Select a backend with :func:`open_store` and a URL: ``chdb:///path/to/dir`` (``chdb://`` or a
bare path means ``./.funnel``) or ``clickhouse://user:pass@host:9000/database``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from funnel.serialization import dumps_row

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_STORE",
    "ChdbStore",
    "ServerStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]

DEFAULT_STORE = "chdb://./.funnel"
DEFAULT_DATABASE = "funnel"

Row = Mapping[str, object]


class StoreError(Exception):
    """A store operation failed (bad SQL, schema mismatch, rejected data)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (connection refused, server restarting)."""


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


class ChdbStore:
    """The embedded store: the ClickHouse engine in this process, on a local directory.

    Thread-safe: calls are serialised by a lock (chDB runs one query at a time per session).
    """

    def __init__(self, path: Path | str = ".funnel", database: str = DEFAULT_DATABASE) -> None:
        from chdb import session

        self.path = Path(path).resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self.database = database
        self._lock = threading.Lock()
        try:
            self._session: Any = session.Session(str(self.path))  # type: ignore[no-untyped-call]  # chdb ships no annotations here
        except Exception as exc:  # chDB raises RuntimeError for a locked or foreign directory
            raise StoreUnavailable(f"cannot open chDB store at {self.path}: {exc}") from exc
        self.execute(f"CREATE DATABASE IF NOT EXISTS {database}")

    def using(self, database: str) -> ChdbStore:
        """The same embedded engine, addressing another database (created if missing).

        chDB serves one data directory per process, so separate databases are how one
        process keeps separate datasets (tests, demo runs). Closing either closes both.
        """
        view = object.__new__(ChdbStore)
        view.path, view.database = self.path, database
        view._lock, view._session = self._lock, self._session
        view.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        return view

    def _run(self, sql: str, fmt: str, params: Mapping[str, object] | None) -> Any:
        with self._lock:
            if self._session is None:
                raise StoreError("store is closed")
            try:
                return self._session.query(sql, fmt, params=dict(params) if params else None)
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc

    def execute(self, sql: str, params: Mapping[str, object] | None = None) -> None:
        self._run(sql, "CSV", params)

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
        result = self._run(
            sql + "\nSETTINGS output_format_json_quote_64bit_integers = 0",
            "JSONEachRow",
            params,
        )
        return [json.loads(line) for line in result.bytes().splitlines() if line]

    def insert(self, table: str, rows: Sequence[Row], *, dedup_token: str | None = None) -> None:
        if not rows:
            return
        settings = ["date_time_input_format = 'best_effort'"]
        token = dedup_token if dedup_token is not None else _unique_token()
        settings.append(f"insert_deduplication_token = '{_quote(token)}'")
        sql = (
            f"INSERT INTO {self.database}.{table} SETTINGS {', '.join(settings)} "
            f"FORMAT JSONEachRow\n{encode_rows(rows)}"
        )
        self._run(sql, "CSV", None)

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


class ServerStore:
    """A ClickHouse server over the native protocol (clickhouse-driver).

    Rows are converted to the column types the server reports (``DESCRIBE TABLE``, cached),
    so the same JSON-shaped rows the embedded store takes work here too.
    """

    def __init__(self, url: str, database: str | None = None) -> None:
        from clickhouse_driver import Client

        parts = urlsplit(url)
        self.database = database or parts.path.strip("/") or DEFAULT_DATABASE
        self._client: Any = Client(
            host=parts.hostname or "localhost",
            port=parts.port or 9000,
            user=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database="default",
            settings={"server_side_params": True},
            connect_timeout=5,
            send_receive_timeout=60,
        )
        self._lock = threading.Lock()
        self._columns: dict[str, list[tuple[str, str]]] = {}

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_driver import errors

        with self._lock:
            try:
                return self._client.execute(*args, **kwargs)
            except (errors.NetworkError, errors.SocketTimeoutError, EOFError, OSError) as exc:
                self._client.disconnect()
                raise StoreUnavailable(str(exc)) from exc
            except errors.Error as exc:
                raise StoreError(str(exc)) from exc

    def execute(self, sql: str, params: Mapping[str, object] | None = None) -> None:
        self._call(sql, dict(params) if params else None)

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
        rows, columns = self._call(sql, dict(params) if params else None, with_column_types=True)
        names = [name for name, _ in columns]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def columns(self, table: str) -> list[tuple[str, str]]:
        """``(name, type)`` of each column of ``database.table``, cached."""
        if table not in self._columns:
            described = self._call(f"DESCRIBE TABLE {self.database}.{table}")
            self._columns[table] = [(row[0], row[1]) for row in described]
        return self._columns[table]

    def insert(self, table: str, rows: Sequence[Row], *, dedup_token: str | None = None) -> None:
        if not rows:
            return
        columns = [(name, kind) for name, kind in self.columns(table) if name in rows[0]]
        names = ", ".join(name for name, _ in columns)
        data = [tuple(_to_type(row.get(name), kind) for name, kind in columns) for row in rows]
        settings = {"insert_deduplication_token": dedup_token or _unique_token()}
        self._call(f"INSERT INTO {self.database}.{table} ({names}) VALUES", data, settings=settings)

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()


def _to_type(value: object, kind: str) -> object:
    """Convert a JSON-shaped value to what clickhouse-driver expects for a column type."""
    inner = kind
    for wrapper in ("LowCardinality(", "Nullable("):
        if inner.startswith(wrapper):
            inner = inner[len(wrapper) : -1]
    if value is None:
        return None if kind.startswith("Nullable(") else _zero(inner)
    if inner.startswith("DateTime") and isinstance(value, str):
        return datetime.fromisoformat(value)
    if inner == "Date" and isinstance(value, str):
        return date.fromisoformat(value)
    if inner.startswith("Decimal") and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def _zero(kind: str) -> object:
    if kind.startswith(("String", "FixedString")):
        return ""
    if kind.startswith("Map("):
        return {}
    return 0


def _unique_token() -> str:
    # Without a token ClickHouse deduplicates by a hash of the block, and ``insert_deduplicate
    # = 0`` does not turn that off for non-replicated tables: identical rows inserted on
    # purpose (a demo re-run) would vanish. A fresh token per insert means "never a replay".
    return f"unique:{uuid.uuid4()}"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def open_store(url: str | None = None, database: str = DEFAULT_DATABASE) -> Store:
    """Open the store a URL names (see the module docstring); ``None`` means the default."""
    url = url or DEFAULT_STORE
    if url.startswith("clickhouse://"):
        return ServerStore(url)
    if url.startswith("chdb://"):
        path = url[len("chdb://") :] or ".funnel"
        return ChdbStore(path, database)
    if "://" in url:
        raise ValueError(f"unknown store URL {url!r}: use chdb:///path or clickhouse://host")
    return ChdbStore(url, database)

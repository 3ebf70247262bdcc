"""A ClickHouse server over the native protocol (clickhouse-driver)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

from funnel.settings import DEFAULT_DATABASE
from storage.store import Row, StoreError, StoreUnavailable, unique_token

__all__ = ["ServerStore"]


class ServerStore:
    """A ClickHouse server over the native protocol (clickhouse-driver).

    Inserts are one typed columnar block: each value is converted to its column's type as the
    server reports it (``DESCRIBE TABLE``, cached per table and dropped when an insert into it
    fails), so the JSON-shaped rows the embedded store takes work here too.

    Connection: opened on the first call. When the server is down or restarting the call raises
    :class:`StoreUnavailable` and the connection is dropped; the next call connects again, so one
    object outlives server restarts. A connection that died while idle is found by the driver's
    ping before the next query and replaced within that call.

    What the server supports is read from the version it reports when a connection opens: a
    current server binds the parameters and honours the tokens; older ones degrade (18.16 is
    tested in CI):

    * ``{name:Type}`` parameters are bound by the server from protocol revision 54459 on; older
      servers get them substituted here as escaped literals, ``CAST(<literal> AS Type)``.
    * ``insert_deduplication_token`` exists from ClickHouse 22.2 on. Older servers get none, so
      there a replayed insert lands twice (at least once, not exactly once); logged once.

    Thread-safe: calls are serialised by a lock (one connection).
    """

    PARAMS_REVISION = 54459  # clickhouse_driver.defines.DBMS_MIN_PROTOCOL_VERSION_WITH_PARAMETERS
    DEDUP_TOKEN_VERSION = (22, 2)
    # Server error codes that mean "not now" rather than "wrong": TOO_MANY_SIMULTANEOUS_QUERIES,
    # SOCKET_TIMEOUT, NETWORK_ERROR, TABLE_IS_READ_ONLY, TOO_MANY_PARTS, UNKNOWN_STATUS_OF_INSERT.
    UNAVAILABLE_CODES = frozenset({202, 209, 210, 242, 252, 319})

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
        self._warned_no_dedup = False

    @property
    def server_version(self) -> tuple[int, int, int] | None:
        """``(major, minor, patch)`` of the server while connected, else ``None``."""
        info = self._client.connection.server_info
        if info is None:
            return None
        return (info.version_major, info.version_minor, info.version_patch)

    def _call(self, sql: str, arg: Any = None, *, token: str | None = None, **kw: Any) -> Any:
        import struct

        from clickhouse_driver import errors

        with self._lock:
            try:
                connection = self._client.connection
                if not connection.connected:
                    connection.connect()  # to know the server's features before sending
                info = connection.server_info
                if isinstance(arg, dict) and info.used_revision < self.PARAMS_REVISION:
                    sql, arg = self._bind(sql, arg, connection.context), None
                if token is not None:
                    if (info.version_major, info.version_minor) >= self.DEDUP_TOKEN_VERSION:
                        kw["settings"] = {"insert_deduplication_token": token}
                    elif not token.startswith("unique:"):
                        self._warn_no_dedup(info)
                return self._client.execute(sql, arg, **kw)
            except errors.ServerException as exc:
                error = StoreError(str(exc), code=exc.code)
                if exc.code in self.UNAVAILABLE_CODES and not error.refuses_data:
                    raise StoreUnavailable(str(exc), code=exc.code) from exc
                raise error from exc
            except (
                errors.NetworkError,
                errors.SocketTimeoutError,
                errors.UnexpectedPacketFromServerError,
                EOFError,
                OSError,
            ) as exc:
                self._client.disconnect()
                raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
            except errors.Error as exc:
                raise StoreError(str(exc)) from exc
            except (TypeError, ValueError, OverflowError, struct.error) as exc:
                # A value the column cannot encode; the driver has dropped the connection.
                raise StoreError(f"cannot encode a value: {exc}", data=True) from exc

    @staticmethod
    def _bind(sql: str, params: Mapping[str, object], context: Any) -> str:
        """``{name:Type}`` placeholders spliced as escaped, typed literals (for old servers).

        A placeholder-shaped text inside a string literal of ``sql`` is replaced too; queries
        keep such text in parameters instead.
        """
        import re

        from clickhouse_driver.util.escape import escape_param

        def literal(match: re.Match[str]) -> str:
            name, kind = match.group(1), match.group(2).strip()
            if name not in params:
                raise StoreError(f"no value for query parameter {name!r}")
            value = params[name]
            if kind == "Identifier":
                return "`" + str(value).replace("\\", "\\\\").replace("`", "\\`") + "`"
            escaped = escape_param(int(value) if isinstance(value, bool) else value, context)
            return f"CAST({escaped} AS {kind})"

        return re.sub(r"\{\s*(\w+)\s*:\s*([^{}]+?)\s*\}", literal, sql)

    def _warn_no_dedup(self, info: Any) -> None:
        if not self._warned_no_dedup:
            import logging

            self._warned_no_dedup = True
            logging.getLogger(__name__).warning(
                "ClickHouse %s.%s has no insert_deduplication_token: replayed inserts land twice",
                info.version_major,
                info.version_minor,
            )

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
        """One columnar block of the columns any row names (others take their defaults);
        a row lacking one of those gets the column's zero (``NULL`` if nullable)."""
        if not rows:
            return
        if hasattr(rows, "arrow"):  # a typed block (storage.fact_columns.Block): its rows
            rows = rows.rows()  # type: ignore[attr-defined]
        named = set().union(*rows)
        columns = [(name, kind) for name, kind in self.columns(table) if name in named]
        try:
            data = [[_to_type(row.get(name), kind) for row in rows] for name, kind in columns]
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"a value does not fit its column in {table}: {exc}", data=True
            ) from exc
        names = ", ".join(name for name, _ in columns)
        try:
            self._call(
                f"INSERT INTO {self.database}.{table} ({names}) VALUES",
                data,
                token=dedup_token or unique_token(),
                columnar=True,
            )
        except StoreError:
            self._columns.pop(table, None)  # the schema may have changed under the cache
            raise

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()


def _to_type(value: object, kind: str) -> object:
    """Convert a JSON-shaped value to what clickhouse-driver expects for a column type."""
    inner, nullable = kind, False
    for wrapper in ("LowCardinality(", "Nullable("):
        if inner.startswith(wrapper):
            inner, nullable = inner[len(wrapper) : -1], nullable or wrapper == "Nullable("
    if value is None:
        return None if nullable else _zero(inner)
    if isinstance(value, str):
        if inner.startswith("DateTime"):
            return datetime.fromisoformat(value)
        if inner == "Date":
            return date.fromisoformat(value[:10])
        if inner.startswith(("Int", "UInt")):
            return int(value)
        if inner.startswith("Float"):
            return float(value)
    if inner == "Date" and isinstance(value, datetime):
        return value.date()
    if inner.startswith("Decimal") and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def _zero(kind: str) -> object:
    """The value a non-nullable column of ``kind`` gets for a missing one (ClickHouse's default)."""
    if kind.startswith(("String", "FixedString")):
        return ""
    if kind.startswith("Map("):
        return {}
    if kind.startswith("Array("):
        return []
    if kind == "Date":
        return date(1970, 1, 1)
    if kind.startswith("Decimal"):
        return Decimal(0)
    return 0  # numbers; DateTime and DateTime64 take 0 as the epoch

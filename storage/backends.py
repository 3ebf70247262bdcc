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

A write the engine refuses always raises (chDB's streaming insert, ``send_insert``, reports
success for a block the engine refused, e.g. too many partitions: it is not used). A
:class:`StoreError` whose :attr:`~StoreError.refuses_data` is true was refused for the rows it
carried (a value out of range, a constraint, a block over a limit), not for the store's state:
:func:`storage.poison.insert_isolating` splits such a batch to land everything but the rows
refused on their own.

Select a backend with :func:`open_store` and a URL: ``chdb:///path/to/dir`` (``chdb://`` or a
bare path means ``./.funnel``) or ``clickhouse://user:pass@host:9000/database``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from funnel.serialization import dumps_row
from funnel.settings import DEFAULT_DATABASE, DEFAULT_STORE

if TYPE_CHECKING:
    from storage.arrow_rows import ColumnCache

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


_COLUMNS: ColumnCache | None = None  # made on the first insert (pyarrow loads only then)
"""The embedded tables' columns, for the Arrow path (one engine per process: one cache)."""


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
        """Rows that fit it go as one Arrow block (:mod:`storage.arrow_rows`: typed after the
        table's columns, no text to encode or parse); others as JSONEachRow text. Both mean
        the same rows; either is one INSERT carrying the token."""
        if not rows:
            return
        token = dedup_token if dedup_token is not None else _unique_token()
        dedup = f"insert_deduplication_token = '{_quote(token)}'"
        key = (str(self.path), self.database, table)
        global _COLUMNS  # one cache per process, made when first needed
        from storage.arrow_rows import ColumnCache, arrow_block  # pyarrow: only to insert

        if _COLUMNS is None:
            _COLUMNS = ColumnCache()
        columns = _COLUMNS.get(key, list(rows[0]), lambda: self._describe(table))
        block = arrow_block(rows, columns)
        if block is None:
            sql = (
                f"INSERT INTO {self.database}.{table} "
                f"SETTINGS date_time_input_format = 'best_effort', {dedup} "
                f"FORMAT JSONEachRow\n{encode_rows(rows)}"
            )
            self._run(sql, "CSV", None)
            return
        try:
            self.insert_arrow(table, block, dedup_token=token)
        except StoreError:
            _COLUMNS.forget(key)  # the table may have changed under the cached columns
            raise

    def insert_arrow(self, table: str, block: Any, *, dedup_token: str) -> None:
        """Insert an Arrow table whose column names are ``table``'s (the fast path of
        :meth:`insert`; also what the sink benchmark times on its own).

        ``INSERT … SELECT … FROM Python(block)``: chDB reads the Arrow columns in place, and,
        unlike its streaming insert (``send_insert``), a refused block raises.
        """
        names = ", ".join(f"`{name}`" for name in block.column_names)
        dedup = f"insert_deduplication_token = '{_quote(dedup_token)}'"
        sql = (
            f"INSERT INTO {self.database}.{table} ({names}) SETTINGS {dedup} "
            f"SELECT {names} FROM Python(block)"
        )
        with self._lock:
            if self._session is None:
                raise StoreError("store is closed")
            try:
                # Python() finds ``block`` by name in this frame.
                self._session.query(sql, "CSV")
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc

    def _describe(self, table: str) -> dict[str, str]:
        described = self.query(f"DESCRIBE TABLE {self.database}.{table}")
        return {str(row["name"]): str(row["type"]) for row in described}

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


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
                token=dedup_token or _unique_token(),
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


def _unique_token() -> str:
    # Without a token ClickHouse deduplicates by a hash of the block, and ``insert_deduplicate
    # = 0`` does not turn that off for non-replicated tables: identical rows inserted on
    # purpose (a demo re-run) would vanish. A fresh token per insert means "never a replay".
    return f"unique:{uuid.uuid4()}"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def open_store(
    url: str | None = None, database: str = DEFAULT_DATABASE, *, create: bool = True
) -> Store:
    """Open the store a URL names (see the module docstring); ``None`` means the default.

    Raises :class:`ValueError` for a URL of another scheme, and :class:`StoreUnavailable` for
    an embedded store another process has open (chDB: one process per directory; the
    message names its pid). With ``create=False`` nothing is created: an embedded store
    whose directory is not there, or holds no ``database``, raises :class:`FileNotFoundError`
    (a server store is not checked).
    """
    url = url or DEFAULT_STORE
    if url.startswith("clickhouse://"):
        return ServerStore(url)
    if url.startswith("chdb://"):
        directory = Path(url[len("chdb://") :] or ".funnel")
    elif "://" in url:
        raise ValueError(f"unknown store URL {url!r}: use chdb:///path or clickhouse://host")
    else:
        directory = Path(url)
    # ClickHouse keeps a database's definition in metadata/<name>.sql of its directory.
    metadata = directory / "metadata"
    if not create and not (metadata / f"{database}.sql").is_file():
        import errno

        where = directory.resolve()
        held = sorted(p.stem for p in metadata.glob("*.sql")) if metadata.is_dir() else []
        if held:
            has = ", ".join(held)
            problem = f"the store at {where} has no database {database!r} (it has {has})"
        elif directory.exists():
            problem = f"no store at {where} (the directory holds no ClickHouse data)"
        else:
            problem = f"no store at {where} (no such directory)"
        raise FileNotFoundError(errno.ENOENT, problem, str(directory))
    # The engine locks <directory>/status (flock) while it runs and writes its pid there:
    # asked first, so a store in use is named as such (chDB's own error says neither).
    status = directory / "status"
    if status.is_file():
        import fcntl

        with status.open("rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = re.search(rb"PID: (\d+)", lock.read())
                by = f" (pid {pid.group(1).decode()})" if pid else ""
                raise StoreUnavailable(
                    f"the store at {directory.resolve()} is open in another process{by}: "
                    "chDB opens a store directory in one process at a time"
                ) from None
    return ChdbStore(directory, database)

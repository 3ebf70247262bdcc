"""The embedded store: the ClickHouse engine in this process (chDB) on a local directory.

One process may own one data directory at a time (a chDB limit), so a process opens one
:class:`ChdbStore` and shares it. A write the engine refuses always raises: chDB's streaming
insert (``send_insert``) reports success for a block the engine refused (e.g. too many
partitions), so Arrow blocks go in through ``INSERT … SELECT … FROM Python(block)``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel.settings import DEFAULT_DATABASE
from storage.store import Row, StoreError, StoreUnavailable, encode_rows, quote, unique_token

if TYPE_CHECKING:
    from storage.arrow_rows import ColumnCache

__all__ = ["ChdbStore"]

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
        self._settings = "output_format_json_quote_64bit_integers = 0"
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
        view._settings = self._settings
        view.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        return view

    def limited(self, max_threads: int) -> ChdbStore:
        """The same store, its queries run on at most ``max_threads`` threads: the report
        API's view, so that reports leave the cores to ingestion (issue 19)."""
        view = object.__new__(ChdbStore)
        view.path, view.database = self.path, self.database
        view._lock, view._session = self._lock, self._session
        view._settings = f"{self._settings}, max_threads = {int(max_threads)}"
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
        result = self._run(sql + "\nSETTINGS " + self._settings, "JSONEachRow", params)
        return [json.loads(line) for line in result.bytes().splitlines() if line]

    def insert(self, table: str, rows: Sequence[Row], *, dedup_token: str | None = None) -> None:
        """A typed block (:class:`storage.fact_columns.Block`) goes as it is. Rows that fit
        it go as one Arrow block (:mod:`storage.arrow_rows`: typed after the table's columns,
        no text to encode or parse); others as JSONEachRow text. All mean the same rows;
        each is one INSERT carrying the token."""
        if not rows:
            return
        token = dedup_token if dedup_token is not None else unique_token()
        arrow = getattr(rows, "arrow", None)  # a typed block (storage.fact_columns.Block)
        if arrow is not None:
            self.insert_arrow(table, arrow, dedup_token=token)
            return
        dedup = f"insert_deduplication_token = '{quote(token)}'"
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
        dedup = f"insert_deduplication_token = '{quote(dedup_token)}'"
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

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

import re
from pathlib import Path

from funnel.settings import DEFAULT_DATABASE, DEFAULT_STORE
from storage.chdb_store import ChdbStore
from storage.server_store import ServerStore
from storage.store import Row, Store, StoreError, StoreUnavailable, encode_rows

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_STORE",
    "ChdbStore",
    "Row",
    "ServerStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "encode_rows",
    "open_store",
]


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

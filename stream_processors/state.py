"""The embedded runner's saved state: persons, identity links, applied event ids, deadlines,
and the outbox of facts committed with them (DESIGN §9a, durable embedded state).

:class:`SavedState` is what a :class:`funnel.runtime.Batch` reads, and what the runner
commits a batch's :class:`~funnel.runtime.Changes` into. With a ``path`` it is durable: a
SQLite database in the store directory (WAL journal; a commit survives a kill -9 of the
process, ``synchronous=NORMAL`` — not a power cut), chosen by measurement
(``benchmarks/bench_state_store.py``). Without one it lives in memory (tests, benchmarks).

Commit protocol (the runtime's contract: a batch's facts and state changes are written
together). The store for facts (ClickHouse) and this database share no transaction, so a
batch's facts go through an outbox:

1. :meth:`SavedState.commit` writes, in one SQLite transaction, the batch's state changes
   and its facts as outbox entries numbered ``n``: one typed block per table
   (:class:`storage.fact_columns.Block`, kept as Arrow IPC bytes; an earlier version kept
   pickled row dicts, which are still read);
2. the runner inserts each pending entry with the deduplication token
   ``embedded:<instance>:<n>:<table>`` (:meth:`SavedState.token`) and then
   :meth:`SavedState.landed` deletes it.

A crash before 1 loses the batch as a whole (no client got its answer; their retries are
new arrivals). A crash between 1 and 2 leaves the entries: the next start lands them, and the
same token makes ClickHouse drop any part that landed already. ``instance`` is drawn when the
database is created, so a new database never reuses an old token.

Memory: persons are cached after their first read; a durable state keeps at most
``max_cached`` of them (least recently used first out; the database has them all). Every
deadline and the newest ``max_event_ids`` applied ids are held in memory.
"""

from __future__ import annotations

import heapq
import pickle
import sqlite3
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funnel.codec import decode_state, encode_state
from funnel.config import CoreConfig
from funnel.dedup import BoundedIds
from funnel.processor import PersonState
from funnel.runtime import Changes
from storage.fact_columns import Block

__all__ = ["STATE_FILE", "Outbox", "SavedState"]

STATE_FILE = "funnel-state-{database}.sqlite"
"""The durable state's file name in the store directory, per database."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS persons (key TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (device TEXT PRIMARY KEY, key TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS deadlines (key TEXT PRIMARY KEY, due INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    n INTEGER NOT NULL, tbl TEXT NOT NULL, rows BLOB NOT NULL, PRIMARY KEY (n, tbl)
);
"""


@dataclass(slots=True)
class Outbox:
    """One table's rows of committed batch ``n``, not landed yet."""

    n: int
    table: str
    rows: Sequence[dict[str, Any]]
    """A :class:`~storage.fact_columns.Block` (or the row dicts of an earlier version)."""


class SavedState:
    """Saved state for the embedded runner; durable when ``path`` is given."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        config: CoreConfig | None = None,
        max_event_ids: int = 1_000_000,
        max_cached: int = 200_000,
    ) -> None:
        self.path = path
        self.config = config
        """Reads person states saved by an earlier version (:func:`funnel.codec.decode_state`)."""
        self.max_cached = max_cached
        self._persons: OrderedDict[str, PersonState] = OrderedDict()
        self._aliases: dict[str, str] = {}
        self._applied = BoundedIds(max_event_ids)
        self._deadlines: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._outbox: list[Outbox] = []
        self._n = 0
        self._complete = path is None
        """Every saved person and link is in memory (no database read can find more)."""
        self.instance = uuid.uuid4().hex[:12]
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._open(path)

    # -- the StateReader protocol (funnel.runtime) --

    def person(self, key: str) -> PersonState | None:
        state = self._persons.get(key)
        if state is not None:
            self._persons.move_to_end(key)
            return state
        if self._complete or self._db is None:
            return None
        found = self._db.execute("SELECT state FROM persons WHERE key = ?", (key,)).fetchone()
        if found is None:
            return None
        state = decode_state(found[0], self.config)
        self._cache(key, state)
        return state

    def persons(self) -> Iterator[tuple[str, PersonState]]:
        """The persons in memory (all of them, unless durable and over ``max_cached``)."""
        return iter(list(self._persons.items()))

    def alias(self, device: str) -> str | None:
        key = self._aliases.get(device)
        if key is not None or self._complete or self._db is None:
            return key
        found = self._db.execute("SELECT key FROM aliases WHERE device = ?", (device,)).fetchone()
        if found is not None:
            self._aliases[device] = found[0]
            return str(found[0])
        return None

    def applied(self, event: str) -> bool:
        return event in self._applied

    # -- the host's side --

    def due(self, now_ms: int) -> list[str]:
        """The persons whose deadline is at or before ``now_ms``, soonest first (they leave
        the queue: the batch that expires them commits their next deadline)."""
        heap, deadlines, keys = self._heap, self._deadlines, []
        while heap and heap[0][0] <= now_ms:
            due, key = heapq.heappop(heap)
            if deadlines.get(key) == due:
                keys.append(key)
        return keys

    def commit(self, changes: Changes, rows: Mapping[str, Block]) -> int:
        """Write ``changes`` and the batch's fact ``rows`` (outbox entries), atomically;
        returns the batch's number. On a failure nothing is written and the cache is
        dropped (it may hold states ahead of the database)."""
        self._n += 1
        entries = [Outbox(self._n, table, table_rows) for table, table_rows in rows.items()]
        if self._db is not None:
            try:
                self._write(changes, entries)
            except sqlite3.Error:
                self._n -= 1
                self._persons.clear()
                self._aliases.clear()
                raise
        for key, state in changes.persons.items():
            if state is None:
                self._persons.pop(key, None)
            else:
                self._cache(key, state)
        self._aliases.update(changes.aliases)
        self._applied.add_all(changes.applied)
        for key, due in changes.deadlines.items():
            if due is None:
                self._deadlines.pop(key, None)
            elif self._deadlines.get(key) != due:
                self._deadlines[key] = due
                heapq.heappush(self._heap, (due, key))
        self._outbox.extend(entries)
        return self._n

    @property
    def durable(self) -> bool:
        """Whether the state is kept in a file (every committed state can be read again)."""
        return self._db is not None

    def drop_cache(self) -> None:
        """Forget the persons in memory: they are read again from the file as committed.
        For a host whose batch changed cached states in place and is dropped (a durable
        state only: in memory, the cache is the state)."""
        if self._db is None:
            raise RuntimeError("an in-memory state has no committed copy to read again")
        self._persons.clear()
        self._complete = False

    def pending(self) -> list[Outbox]:
        """The outbox entries not landed yet, oldest first."""
        return list(self._outbox)

    def token(self, entry: Outbox) -> str:
        return f"embedded:{self.instance}:{entry.n}:{entry.table}"

    def landed(self, entry: Outbox) -> None:
        self._outbox.remove(entry)
        if self._db is not None:
            with self._db:
                self._db.execute(
                    "DELETE FROM outbox WHERE n = ? AND tbl = ?", (entry.n, entry.table)
                )

    def clear_site(self, site_id: str) -> None:
        """Forget every person, link, applied id and deadline of ``site_id``."""
        prefix = f"{site_id}:"
        for cache in (self._persons, self._aliases, self._deadlines):
            for key in [k for k in cache if k.startswith(prefix)]:
                del cache[key]
        self._applied.discard_prefix(prefix)
        if self._db is not None:
            pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            with self._db:
                for table, column in _KEYS:
                    self._db.execute(
                        f"DELETE FROM {table} WHERE {column} LIKE ? ESCAPE '\\'", (pattern,)
                    )

    def forget(self, keys: Iterable[str]) -> int:
        """Drop the persons, device links and deadlines of these person or device keys
        (``funnel forget``); returns how many persons went. The ids of their applied events
        stay: random ids that name no one, and a sender's retry of an erased event stays a
        duplicate instead of bringing it back."""
        keys = set(keys)
        gone: set[str] = set()
        for key in keys:
            if self._persons.pop(key, None) is not None:
                gone.add(key)
            self._aliases.pop(key, None)
            self._deadlines.pop(key, None)  # its heap entry is skipped as stale
        for device, key in list(self._aliases.items()):
            if key in keys:
                del self._aliases[device]
        if self._db is not None:
            with self._db:
                for key in sorted(keys):
                    if self._db.execute("DELETE FROM persons WHERE key = ?", (key,)).rowcount:
                        gone.add(key)
                    self._db.execute("DELETE FROM aliases WHERE device = ? OR key = ?", (key, key))
                    self._db.execute("DELETE FROM deadlines WHERE key = ?", (key,))
        return len(gone)

    def forget_applied(self, keys: Iterable[str]) -> None:
        """Forget that these events (:func:`funnel.runtime.applied_key`) were applied: they
        will be applied again (``funnel reprocess``)."""
        keys = list(keys)
        self._applied.discard(keys)
        if self._db is not None:
            with self._db:
                self._db.executemany("DELETE FROM applied WHERE id = ?", ((k,) for k in keys))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        """Persons in memory."""
        return len(self._persons)

    # -- durable --

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        db.isolation_level = "DEFERRED"  # ``with db:`` is a transaction from here on
        with db:
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('instance', ?)", (uuid.uuid4().hex[:12],)
            )
        self._db = db
        self.instance = str(db.execute("SELECT v FROM meta WHERE k = 'instance'").fetchone()[0])
        newest = db.execute(
            "SELECT id FROM applied ORDER BY rowid DESC LIMIT ?", (self._applied.max_ids,)
        ).fetchall()
        self._applied.add_all(row[0] for row in reversed(newest))
        for key, due in db.execute("SELECT key, due FROM deadlines"):
            self._deadlines[key] = due
        self._heap = [(due, key) for key, due in self._deadlines.items()]
        heapq.heapify(self._heap)
        for n, table, blob in db.execute("SELECT n, tbl, rows FROM outbox ORDER BY n, tbl"):
            # An earlier version pickled row dicts (protocol 2+ starts with 0x80).
            rows = pickle.loads(blob) if blob[:1] == b"\x80" else Block.from_ipc(blob)
            self._outbox.append(Outbox(n, table, rows))
        # A new (or emptied) database: what is not in memory is nowhere, until an eviction.
        self._complete = not any(
            db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
            for table in ("persons", "aliases")
        )
        last = db.execute("SELECT v FROM meta WHERE k = 'batch'").fetchone()
        self._n = int(last[0]) if last else 0

    def _write(self, changes: Changes, entries: list[Outbox]) -> None:
        db = self._db
        assert db is not None
        with db:
            gone = [(k,) for k, s in changes.persons.items() if s is None]
            # In key order: the table is clustered by key (WITHOUT ROWID), and states of ~1 KB
            # inserted in random order split pages all over it (2.6x slower for 20k persons).
            db.executemany(
                "INSERT OR REPLACE INTO persons VALUES (?, ?)",
                [(k, encode_state(s)) for k, s in sorted(changes.persons.items()) if s is not None],
            )
            db.executemany("DELETE FROM persons WHERE key = ?", gone)
            db.executemany("INSERT OR REPLACE INTO aliases VALUES (?, ?)", changes.aliases.items())
            db.executemany(
                "INSERT OR IGNORE INTO applied VALUES (?)", ((e,) for e in changes.applied)
            )
            if changes.applied:
                db.execute(
                    "DELETE FROM applied WHERE rowid <= (SELECT max(rowid) FROM applied) - ?",
                    (self._applied.max_ids,),
                )
            db.executemany(
                "INSERT OR REPLACE INTO deadlines VALUES (?, ?)",
                [(k, d) for k, d in changes.deadlines.items() if d is not None],
            )
            db.executemany(
                "DELETE FROM deadlines WHERE key = ?",
                [(k,) for k, d in changes.deadlines.items() if d is None],
            )
            db.executemany(
                "INSERT INTO outbox VALUES (?, ?, ?)",
                [(e.n, e.table, e.rows.to_ipc()) for e in entries if isinstance(e.rows, Block)],
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('batch', ?)", (str(self._n),))

    def _cache(self, key: str, state: PersonState) -> None:
        persons = self._persons
        persons[key] = state
        persons.move_to_end(key)
        if self._db is not None and len(persons) > self.max_cached:
            persons.popitem(last=False)
            self._complete = False


_KEYS = (("persons", "key"), ("aliases", "device"), ("applied", "id"), ("deadlines", "key"))

"""Embedded key-value stores for the runner's durable per-person state, against a dict.

    python benchmarks/bench_state_store.py [--persons 200000] [--only sqlite,rocksdict,chdb]

Why: the embedded runner keeps every person's state (and the event ids it applied, and the
persons' next deadlines) in memory. To survive a restart it needs them in an embedded store,
written at each group commit and read back when a person's first event in a while arrives.
This measures the candidates on that access pattern, on one machine, in one run:

* ``sqlite``: stdlib :mod:`sqlite3`, WAL, one transaction per commit (``executemany`` upsert),
  ``synchronous=NORMAL`` (WAL fsynced at checkpoints only) and ``FULL`` (fsync per commit);
* ``rocksdict``: RocksDB through the ``rocksdict`` package (raw bytes, bloom filter), one
  ``WriteBatch`` per commit, ``sync=False`` and ``sync=True`` (WAL fsynced per batch);
* ``chdb``: a table in the ClickHouse engine in this process (``chdb.session.Session``), one
  ``INSERT … SELECT … FROM Python(block)`` of an Arrow block per commit, point ``SELECT``s
  with a bound key: ``EmbeddedRocksDB`` with ``optimize_for_bulk_insert = 0`` (memtable and
  unsynced WAL) and the default ``1`` (an SST file built, fsynced and ingested per INSERT),
  and ``ReplacingMergeTree`` ordered by key (``index_granularity = 64``, read with ``FINAL``)
  without and with ``fsync_after_insert``;
* baseline ``dict``: a Python dict taking the same writes (``update``) and reads, pickled to
  one file at close and unpickled at reopen.

Workload (deterministic for a seed): group commits of 2,000 person states (1,500 random
bytes each, keys ``site:a:<uuid>``; from the second commit on 30 % of them re-write persons
already stored), plus 2,000 applied-event-id keys (value ``b""``) and 500 deadline keys
(``due:<ms>:<person key>``, value ``b""``), until ``--persons`` distinct persons are stored.
Each commit's data is made before the clock starts; converting it to the store's form
(an Arrow block for chDB) is timed. Then, each after a clean close and a timed reopen (open
plus the first read): ``--point-reads`` random stored persons read one at a time (stopped
after ``--read-budget`` seconds), and 10 batches of 2,000 distinct persons read at once
(``WHERE k IN (…)`` / ``multi_get``). Every value read is checked against the dict.

Reported per store: commits/s and person-state writes/s, point reads/s, batch keys/s, reopen
ms, bytes allocated on disk after the close, and what a commit survives; then each figure as
a multiple of the dict baseline's cost (time per operation, or bytes), because absolute
rates on a shared, noisy machine mean little. Background work a store leaves after a commit
returns (RocksDB flushes and compactions, ClickHouse merges) is only counted where it slows
the timed calls down. Reads hit the OS page cache (the data was just written). The median
time of one fsync on the disk used is printed too: where it is cheap (a VM whose host caches
writes), the "sync at commit" variants cost here less than on a real disk. A store whose
package is not importable is skipped with a note. The tables, the date, Python's and the
packages' versions are written to ``benchmarks/results/bench_state_store.txt``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import pickle
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, cast

RESULTS = Path(__file__).with_name("results") / "bench_state_store.txt"

VALUE_BYTES = 1_500
STATES_PER_COMMIT = 2_000
APPLIED_PER_COMMIT = 2_000
DEADLINES_PER_COMMIT = 500
REWRITE_SHARE = 0.3
BATCH_KEYS = 2_000
BATCH_ROUNDS = 10

Item = tuple[bytes, bytes]


# --- the workload -------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Which persons each commit writes; the rest of a commit is made from its own seed."""

    seed: int
    persons: list[bytes]
    """Every person key, in the order of first write."""
    commits: list[list[int]]
    """Per commit, the indexes (into :attr:`persons`) of the states it writes."""

    @classmethod
    def make(cls, persons: int, seed: int) -> Workload:
        rng = random.Random(seed)
        keys: list[bytes] = []
        commits: list[list[int]] = []
        while len(keys) < persons:
            again = min(round(STATES_PER_COMMIT * REWRITE_SHARE) if keys else 0, len(keys))
            new = min(STATES_PER_COMMIT - again, persons - len(keys))
            chosen = rng.sample(range(len(keys)), again)
            first = len(keys)
            keys.extend(f"site:a:{_uuid(rng)}".encode() for _ in range(new))
            commits.append(chosen + list(range(first, first + new)))
        return cls(seed, keys, commits)

    def items(self, commit: int) -> list[Item]:
        """The key-value pairs of one commit: states, applied event ids, deadlines."""
        rng = random.Random(f"{self.seed}:{commit}")
        indexes = self.commits[commit]
        values = rng.randbytes(len(indexes) * VALUE_BYTES)
        items = [
            (self.persons[p], values[n * VALUE_BYTES : (n + 1) * VALUE_BYTES])
            for n, p in enumerate(indexes)
        ]
        items += [(f"applied:a:{_uuid(rng)}".encode(), b"") for _ in range(APPLIED_PER_COMMIT)]
        base_ms = 1_800_000_000_000 + commit * 60_000
        for p in rng.sample(indexes, min(DEADLINES_PER_COMMIT, len(indexes))):
            due = base_ms + rng.randrange(86_400_000)
            items.append((b"due:%013d:" % due + self.persons[p], b""))
        return items

    @property
    def state_writes(self) -> int:
        return sum(len(c) for c in self.commits)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# --- the stores ----------------------------------------------------------------------------


class Store(Protocol):
    def commit(self, items: Sequence[Item]) -> None:
        """Write ``items`` as one atomic, durable (as configured) group commit."""

    def get(self, key: bytes) -> bytes | None: ...

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored ones among ``keys``, at once."""

    def close(self) -> None:
        """Close cleanly (what a graceful shutdown does)."""

    def reopen(self) -> None:
        """Open again what :meth:`close` left."""

    def disk_bytes(self) -> int:
        """Bytes allocated on disk for the data (after :meth:`close`)."""


def allocated(path: Path) -> int:
    """Bytes allocated to ``path`` and everything under it."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


class DictStore:
    """The baseline: a dict, pickled to one file at close."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "state.pickle"
        self.data: dict[bytes, bytes] = {}

    def commit(self, items: Sequence[Item]) -> None:
        self.data.update(items)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        data = self.data
        return {k: data[k] for k in keys if k in data}

    def close(self) -> None:
        with self.file.open("wb") as f:
            pickle.dump(self.data, f, protocol=pickle.HIGHEST_PROTOCOL)
        self.data = {}

    def reopen(self) -> None:
        with self.file.open("rb") as f:
            self.data = pickle.load(f)

    def disk_bytes(self) -> int:
        return allocated(self.file)


class SqliteStore:
    """One ``kv`` table (``k BLOB PRIMARY KEY``) in WAL mode; one transaction per commit."""

    def __init__(self, directory: Path, synchronous: str) -> None:
        self.file = directory / "state.db"
        self.synchronous = synchronous
        self.db = self._connect()
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.file, isolation_level=None)  # transactions by hand
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        return db

    def commit(self, items: Sequence[Item]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            items,
        )
        self.db.execute("COMMIT")

    def get(self, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        marks = ",".join("?" * len(keys))
        return dict(self.db.execute(f"SELECT k, v FROM kv WHERE k IN ({marks})", keys))

    def close(self) -> None:
        self.db.close()  # the last connection checkpoints the WAL and removes it

    def reopen(self) -> None:
        self.db = self._connect()

    def disk_bytes(self) -> int:
        return sum(allocated(p) for p in self.file.parent.glob(self.file.name + "*"))


class RocksStore:
    """RocksDB through ``rocksdict`` (raw bytes, bloom filter); a WriteBatch per commit."""

    def __init__(self, directory: Path, sync: bool) -> None:
        import rocksdict

        self.rocksdict: Any = rocksdict
        self.path = directory / "state.rocksdb"
        self.write_options = rocksdict.WriteOptions()
        self.write_options.sync = sync
        self.db: Any = self._open()

    def _open(self) -> Any:
        rocksdict = self.rocksdict
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        return rocksdict.Rdict(str(self.path), options)

    def commit(self, items: Sequence[Item]) -> None:
        batch = self.rocksdict.WriteBatch(raw_mode=True)
        for k, v in items:
            batch.put(k, v)
        self.db.write(batch, self.write_options)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)  # type: ignore[no-any-return]

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        values = self.db.get(list(keys))
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    def close(self) -> None:
        self.db.close()

    def reopen(self) -> None:
        self.db = self._open()

    def disk_bytes(self) -> int:
        return allocated(self.path)


class ChdbEngine:
    """The one chDB engine of this process: one data directory per process (a chDB limit),
    so every chDB store here is a table in its own database of this one directory."""

    def __init__(self, directory: Path) -> None:
        from chdb import session

        self.session_type: Any = cast(Any, session.Session)  # chdb ships no annotations here
        self.directory = directory
        self.session: Any = self.session_type(str(directory))
        self.version = self.session.query("SELECT version()", "TSV").bytes().decode().strip()

    def close(self) -> None:
        self.session.close()


class ChdbStore:
    """A ``kv`` table (``k String, v String``) in the chDB engine; one INSERT per commit."""

    def __init__(self, engine: ChdbEngine, database: str, engine_clause: str, final: bool) -> None:
        import pyarrow

        self.pyarrow: Any = pyarrow  # imported before the clock starts
        self.engine = engine
        self.table = f"{database}.kv"
        self.final = " FINAL" if final else ""
        engine.session.query(f"DROP DATABASE IF EXISTS {database} SYNC")
        engine.session.query(f"CREATE DATABASE {database}")
        engine.session.query(f"CREATE TABLE {self.table} (k String, v String) {engine_clause}")
        described = engine.session.query(
            "SELECT data_paths FROM system.tables WHERE database = {db:String} AND name = 'kv'",
            "JSONEachRow",
            params={"db": database},
        )
        self.paths = [Path(p) for p in json.loads(described.bytes())["data_paths"]]

    def commit(self, items: Sequence[Item]) -> None:
        pa = self.pyarrow
        keys, values = zip(*items, strict=True)
        self._insert(
            pa.table({"k": pa.array(keys, pa.binary()), "v": pa.array(values, pa.binary())})
        )

    def _insert(self, block: Any) -> None:
        # Python(block) finds ``block`` by name in this frame (as storage/chdb_store.py does).
        self.engine.session.query(
            f"INSERT INTO {self.table} (k, v) SELECT k, v FROM Python(block)", "CSV"
        )

    def get(self, key: bytes) -> bytes | None:
        result = self.engine.session.query(
            f"SELECT v FROM {self.table}{self.final} WHERE k = {{k:String}}",
            "RowBinary",
            params={"k": key.decode()},
        )
        values = row_binary_strings(result.bytes())
        return values[0] if values else None

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        listed = ",".join(f"'{k.decode()}'" for k in keys)  # keys here need no escaping
        result = self.engine.session.query(
            f"SELECT k, v FROM {self.table}{self.final} WHERE k IN {{keys:Array(String)}}",
            "RowBinary",
            params={"keys": f"[{listed}]"},
        )
        cells = row_binary_strings(result.bytes())
        return dict(zip(cells[::2], cells[1::2], strict=True))

    def close(self) -> None:
        self.engine.session.close()

    def reopen(self) -> None:
        self.engine.session = self.engine.session_type(str(self.engine.directory))

    def disk_bytes(self) -> int:
        return sum(allocated(p) for p in self.paths if p.exists())

    def drop(self) -> None:
        database = self.table.split(".")[0]
        self.engine.session.query(f"DROP DATABASE IF EXISTS {database} SYNC")


def row_binary_strings(data: bytes) -> list[bytes]:
    """The String cells of a RowBinary answer, in order (each a LEB128 length, then bytes)."""
    cells: list[bytes] = []
    at, end = 0, len(data)
    while at < end:
        size = shift = 0
        while True:
            byte = data[at]
            at += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        cells.append(data[at : at + size])
        at += size
    return cells


# --- the candidates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    """What ``--only`` selects by (a prefix)."""
    label: str
    survives: str
    """What a commit that returned survives."""
    needs: tuple[str, ...]
    """Modules that must be importable."""
    make: Callable[[Path, dict[str, Any]], Store]


def _chdb(shared: dict[str, Any], directory: Path) -> ChdbEngine:
    if "chdb" not in shared:  # one engine (one directory) for the whole run
        shared["chdb"] = ChdbEngine(directory.parent / "chdb")
    engine: ChdbEngine = shared["chdb"]
    return engine


def _rocks_clause(bulk: int) -> str:
    return f"ENGINE = EmbeddedRocksDB PRIMARY KEY k SETTINGS optimize_for_bulk_insert = {bulk}"


def _merge_tree_clause(fsync: int) -> str:
    return (
        "ENGINE = ReplacingMergeTree ORDER BY k SETTINGS index_granularity = 64, "
        f"fsync_after_insert = {fsync}, fsync_part_directory = {fsync}"
    )


CANDIDATES = [
    Candidate("dict", "dict (baseline; pickle at close)", "nothing", (), lambda d, s: DictStore(d)),
    Candidate(
        "sqlite-normal",
        "sqlite WAL synchronous=NORMAL",
        "kill -9",
        (),
        lambda d, s: SqliteStore(d, "NORMAL"),
    ),
    Candidate(
        "sqlite-full",
        "sqlite WAL synchronous=FULL",
        "power loss",
        (),
        lambda d, s: SqliteStore(d, "FULL"),
    ),
    Candidate(
        "rocksdict-nosync",
        "rocksdict sync=False",
        "kill -9",
        ("rocksdict",),
        lambda d, s: RocksStore(d, sync=False),
    ),
    Candidate(
        "rocksdict-sync",
        "rocksdict sync=True",
        "power loss",
        ("rocksdict",),
        lambda d, s: RocksStore(d, sync=True),
    ),
    Candidate(
        "chdb-rocksdb-memtable",
        "chdb EmbeddedRocksDB bulk=0",
        "kill -9",
        ("chdb", "pyarrow"),
        lambda d, s: ChdbStore(_chdb(s, d), "state_rocks0", _rocks_clause(0), final=False),
    ),
    Candidate(
        "chdb-rocksdb-bulk",
        "chdb EmbeddedRocksDB bulk=1",
        "power loss",
        ("chdb", "pyarrow"),
        lambda d, s: ChdbStore(_chdb(s, d), "state_rocks1", _rocks_clause(1), final=False),
    ),
    Candidate(
        "chdb-replacing",
        "chdb ReplacingMergeTree",
        "kill -9",
        ("chdb", "pyarrow"),
        lambda d, s: ChdbStore(_chdb(s, d), "state_rmt0", _merge_tree_clause(0), final=True),
    ),
    Candidate(
        "chdb-replacing-fsync",
        "chdb ReplacingMergeTree fsync",
        "power loss",
        ("chdb", "pyarrow"),
        lambda d, s: ChdbStore(_chdb(s, d), "state_rmt1", _merge_tree_clause(1), final=True),
    ),
]


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    survives: str
    commits_per_s: float
    states_per_s: float
    point_reads: int
    point_per_s: float
    batch_keys_per_s: float
    reopen_s: float
    disk_bytes: int
    wrong: int
    """Values read that differ from the dict's."""


def measure(
    store: Store,
    candidate: Candidate,
    workload: Workload,
    oracle: dict[bytes, bytes] | None,
    point_keys: list[bytes],
    batches: list[list[bytes]],
    read_budget: float,
) -> Result:
    write_s = 0.0
    for n in range(len(workload.commits)):
        items = workload.items(n)
        started = time.perf_counter()
        store.commit(items)
        write_s += time.perf_counter() - started
    store.close()
    disk = store.disk_bytes()

    started = time.perf_counter()
    store.reopen()
    store.get(point_keys[0])
    reopen_s = time.perf_counter() - started

    got: list[bytes | None] = []
    started = time.perf_counter()
    deadline = started + read_budget
    for n, key in enumerate(point_keys):
        got.append(store.get(key))
        if n % 256 == 255 and time.perf_counter() > deadline:
            break
    point_s = time.perf_counter() - started

    answers: list[dict[bytes, bytes]] = []
    started = time.perf_counter()
    for keys in batches:
        answers.append(store.get_many(keys))
    batch_s = time.perf_counter() - started

    wrong = 0
    if oracle is not None:
        wrong += sum(v != oracle.get(k) for k, v in zip(point_keys, got, strict=False))
        for keys, answer in zip(batches, answers, strict=True):
            wrong += sum(answer.get(k) != oracle.get(k) for k in keys)
    commits = len(workload.commits)
    return Result(
        label=candidate.label,
        survives=candidate.survives,
        commits_per_s=commits / write_s,
        states_per_s=workload.state_writes / write_s,
        point_reads=len(got),
        point_per_s=len(got) / point_s,
        batch_keys_per_s=sum(len(k) for k in batches) / batch_s,
        reopen_s=reopen_s,
        disk_bytes=disk,
        wrong=wrong,
    )


def fsync_ms(directory: Path, rounds: int = 100) -> float:
    """Median ms of one fsync after a 4 KiB write here: what "sync at commit" costs a commit
    on this disk (cheap on a VM whose host caches writes, ms on a real disk)."""
    timings = []
    fd = os.open(directory / "fsync.probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(rounds):
            os.write(fd, b"\0" * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            timings.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        (directory / "fsync.probe").unlink()
    return sorted(timings)[rounds // 2] * 1000


def missing_modules(candidate: Candidate) -> list[str]:
    return [m for m in candidate.needs if importlib.util.find_spec(m) is None]


# --- reporting -----------------------------------------------------------------------------


def fmt(x: float) -> str:
    """Three significant digits, thousands separated."""
    if x >= 100:
        return f"{round(x, -len(str(int(x))) + 3):,.0f}"
    return f"{x:.3g}"


def tables(results: list[Result]) -> str:
    head = (
        f"{'store':<33} {'survives':<10} {'commits/s':>9} {'states/s':>9} "
        f"{'point reads/s':>13} {'batch keys/s':>12} {'reopen ms':>9} {'disk MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.label:<33} {r.survives:<10} {fmt(r.commits_per_s):>9} {fmt(r.states_per_s):>9} "
            f"{fmt(r.point_per_s):>13} {fmt(r.batch_keys_per_s):>12} "
            f"{fmt(r.reopen_s * 1000):>9} {fmt(r.disk_bytes / 1e6):>8}"
            + (
                f"  ({r.point_reads:,} point reads)"
                if r.point_reads < results[0].point_reads
                else ""
            )
            + (f"  WRONG: {r.wrong} values differ" if r.wrong else "")
        )
    base = results[0]
    ratio_head = (
        f"{'cost as a multiple of the dict':<33} {'':<10} {'commit':>9} {'state':>9} "
        f"{'point read':>13} {'batch key':>12} {'reopen':>9} {'disk':>8}"
    )
    lines += ["", ratio_head, "-" * len(ratio_head)]
    for r in results:
        lines.append(
            f"{r.label:<33} {'':<10} {fmt(base.commits_per_s / r.commits_per_s):>8}x "
            f"{fmt(base.states_per_s / r.states_per_s):>8}x "
            f"{fmt(base.point_per_s / r.point_per_s):>12}x "
            f"{fmt(base.batch_keys_per_s / r.batch_keys_per_s):>11}x "
            f"{fmt(r.reopen_s / base.reopen_s):>8}x {fmt(r.disk_bytes / base.disk_bytes):>7}x"
        )
    return "\n".join(lines)


def versions(engine: ChdbEngine | None) -> str:
    parts = [f"python {platform.python_version()}", f"sqlite {sqlite3.sqlite_version}"]
    for package in ("rocksdict", "chdb", "chdb-core", "pyarrow"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} (not installed)")
    if engine is not None:
        parts.append(f"ClickHouse {engine.version}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--point-reads", type=int, default=20_000)
    parser.add_argument("--read-budget", type=float, default=60.0, help="seconds, point reads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated name prefixes")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    only = [p for p in args.only.split(",") if p]
    chosen = [
        c
        for c in CANDIDATES
        if not only or c.name == "dict" or any(c.name.startswith(p) for p in only)
    ]
    workload = Workload.make(args.persons, args.seed)
    rng = random.Random(args.seed + 1)
    reads = min(args.point_reads, len(workload.persons))
    point_keys = rng.sample(workload.persons, reads)
    batch = min(BATCH_KEYS, len(workload.persons))
    batches = [rng.sample(workload.persons, batch) for _ in range(BATCH_ROUNDS)]
    print(
        f"{args.persons:,} persons in {len(workload.commits)} commits: "
        f"{workload.state_writes:,} state writes of {VALUE_BYTES} B, "
        f"{len(workload.commits) * APPLIED_PER_COMMIT:,} applied ids, "
        f"~{len(workload.commits) * DEADLINES_PER_COMMIT:,} deadlines; "
        f"{reads:,} point reads, {BATCH_ROUNDS} batch reads of {batch:,}",
        flush=True,
    )

    root = Path(tempfile.mkdtemp(prefix="bench-state-store-", dir=args.dir))
    fsync = fsync_ms(root)
    shared: dict[str, Any] = {}
    results: list[Result] = []
    notes: list[str] = []
    oracle: dict[bytes, bytes] | None = None
    try:
        for candidate in chosen:
            missing = missing_modules(candidate)
            if missing:
                note = f"skipped {candidate.label}: {', '.join(missing)} not importable"
                print(note, flush=True)
                notes.append(note)
                continue
            directory = root / candidate.name
            directory.mkdir()
            started = time.perf_counter()
            store = candidate.make(directory, shared)
            gc.collect()
            gc.disable()  # the values are not tracked; the oracle would make collections slow
            try:
                result = measure(
                    store, candidate, workload, oracle, point_keys, batches, args.read_budget
                )
            finally:
                gc.enable()
            if isinstance(store, DictStore):
                oracle = store.data  # every later store's reads are checked against it
            elif isinstance(store, ChdbStore):
                store.drop()  # the engine stays open for the next chDB store
            else:
                store.close()
            shutil.rmtree(directory, ignore_errors=True)
            results.append(result)
            print(
                f"{candidate.label}: done in {time.perf_counter() - started:.0f} s"
                + (f", WRONG: {result.wrong} values differ" if result.wrong else ""),
                flush=True,
            )
    finally:
        engine: ChdbEngine | None = shared.get("chdb")
        if engine is not None:
            engine.close()
        shutil.rmtree(root, ignore_errors=True)

    report = "\n".join(
        [
            f"bench_state_store  {datetime.now(UTC).isoformat(timespec='seconds')}  "
            f"machine {platform.node()} ({os.cpu_count()} CPUs), {sys.platform}",
            versions(engine),
            f"--persons {args.persons} --point-reads {args.point_reads} --seed {args.seed}; "
            f"one fsync of 4 KiB here: {fsync:.2f} ms (median)",
            "",
            tables(results),
            *(["", *notes] if notes else []),
        ]
    )
    print()
    print(report)
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(report + "\n", encoding="utf-8")
    if any(r.wrong for r in results):
        raise SystemExit("a store read back values that differ from the dict: the run is void")


if __name__ == "__main__":
    main()

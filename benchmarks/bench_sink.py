"""Sink throughput into chDB, from decoded rows to committed rows, against baselines.

    python benchmarks/bench_sink.py [--persons 20000] [--batch-rows 5000,20000,50000]

Input: the facts of ``--persons`` simulated people (simulator → the core, with the ids the
stream gives them; ``tests/fact_traffic.py``), in the mix the pipeline makes (about 2 stage
rows, 1 event, 1 person row and 0.4 attributions per event), as JSON records like the facts
topics hold. Each table's records are cut into batches of ``--batch-rows`` (the sink's
batches of one topic-partition) and each batch is decoded with one ``json.loads``, as the
sink does. Timed, per batch size, each into a fresh database:

* ``store``: :meth:`ChdbStore.insert` of the decoded rows with a deduplication token — the
  sink's path (the Arrow block; :mod:`storage.arrow_rows`);
* ``json``: the same rows as JSONEachRow text (the general path, and the sink's path before
  the Arrow block);
* baseline ``native``: the engine inserting the same rows from a pre-built block in memory
  (``INSERT … SELECT`` from a Memory table): the ceiling for any client;
* baseline ``prebuilt_arrow`` (and ``prebuilt_arrow_no_views``): the rows converted to Arrow
  before the clock starts, then only chDB's insert of the block (``Python()``) timed, with the
  aggregates' materialized views (and with them dropped): the ceiling of the store path;
* baseline ``decode``: ``json.loads`` of the batches alone (not included in the others).

Reported: rows/s of each and ``store`` as a share of ``native``. Appends one JSON line to
``benchmarks/results/sink.jsonl``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fact_traffic

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no annotations

from funnel.dedup import BoundedIds
from storage import origin
from storage.arrow_rows import arrow_block
from storage.backends import ChdbStore, encode_rows
from storage.fact_columns import Block
from storage.migrate import migrate
from storage.sink import fresh_block
from stream_processors.agents import BLOCK_ROWS, BLOCK_TABLES
from tests.fact_traffic import fact_stream

Batches = list[tuple[str, list[bytes]]]


def records_by_table(
    persons: int,
) -> tuple[dict[str, list[bytes]], dict[str, list[tuple[int, int]]]]:
    """Each table's JSON records, and their origins (``(-1, -1)``: none)."""
    by_table: dict[str, list[bytes]] = defaultdict(list)
    origins: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for record in fact_stream(persons, seed=3, messy=False):
        by_table[record.table].append(record.value)
        origins[record.table].append(origin.origin_of(record.headers))
    return by_table, origins


def batches_of(by_table: dict[str, list[bytes]], batch_rows: int) -> Batches:
    return [
        (table, values[i : i + batch_rows])
        for table, values in by_table.items()
        for i in range(0, len(values), batch_rows)
    ]


def decode(values: list[bytes]) -> list[dict[str, object]]:
    return json.loads(b"[" + b",".join(values) + b"]")  # type: ignore[no-any-return]


def timed(batches: Batches, run: Callable[[int, str, list[dict[str, object]]], None]) -> float:
    """Seconds spent in ``run`` over every batch, decoding outside the clock."""
    total = 0.0
    for n, (table, values) in enumerate(batches):
        rows = decode(values)
        start = time.perf_counter()
        run(n, table, rows)
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--batch-rows", default="5000,20000,50000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_rows.split(",")]

    by_table, origins = records_by_table(args.persons)
    engine = ChdbStore(tempfile.mkdtemp(prefix="bench-sink-"), "bench")
    runs: list[dict[str, object]] = []
    for size in sizes:
        batches = batches_of(by_table, size)
        rows = sum(len(values) for _, values in batches)
        gc.collect()
        result: dict[str, object] = {"batch_rows": size, "rows": rows, "inserts": len(batches)}

        store = engine.using(f"store_{size}")
        migrate(store)
        seconds = timed(
            batches,
            lambda n, t, r, store=store: store.insert(t, r, dedup_token=f"{t}:0:{n}:{len(r)}"),
        )
        result["store_rows_per_s"] = round(rows / seconds)

        text = engine.using(f"json_{size}")
        migrate(text)

        def via_json(
            n: int, table: str, decoded: list[dict[str, object]], text: ChdbStore = text
        ) -> None:
            text.execute(
                f"INSERT INTO {text.database}.{table} SETTINGS "
                f"date_time_input_format = 'best_effort', insert_deduplication_token = "
                f"'{table}:0:{n}' FORMAT JSONEachRow\n{encode_rows(decoded)}"
            )

        result["json_rows_per_s"] = round(rows / timed(batches, via_json))

        # The same rows, each batch pre-built in a Memory table, inserted by the engine.
        native = engine.using(f"native_{size}")
        migrate(native)
        for n, (table, values) in enumerate(batches):
            native.execute(
                f"CREATE TABLE {native.database}.b{n} ENGINE = Memory AS "
                f"SELECT * FROM {store.database}.{table} WHERE 0"
            )
            native.insert(f"b{n}", decode(values))
        start = time.perf_counter()
        for n, (table, _) in enumerate(batches):
            native.execute(
                f"INSERT INTO {native.database}.{table} "
                f"SETTINGS insert_deduplication_token = '{table}:0:{n}' "
                f"SELECT * FROM {native.database}.b{n}"
            )
        result["native_rows_per_s"] = round(rows / (time.perf_counter() - start))

        # The store's own path with the Python work taken out of the clock: the rows turned
        # into Arrow first, then only chDB's insert of the Arrow block is timed (with the
        # aggregates' materialized views, and without them). The distance to ``store`` is
        # what converting decoded rows costs; these are the ceiling for any Python client.
        for views in (True, False):
            prebuilt = engine.using(f"prebuilt_{int(views)}_{size}")
            migrate(prebuilt)
            if not views:
                for view in prebuilt.query(
                    "SELECT name FROM system.tables WHERE database = {db:String} "
                    "AND engine = 'MaterializedView'",
                    {"db": prebuilt.database},
                ):
                    prebuilt.execute(f"DROP VIEW {prebuilt.database}.{view['name']}")
            blocks = []
            for table, values in batches:
                block = arrow_block(decode(values), prebuilt._describe(table))
                assert block is not None
                blocks.append((table, block))
            start = time.perf_counter()
            for n, (table, block) in enumerate(blocks):
                prebuilt.insert_arrow(table, block, dedup_token=f"{table}:0:{n}")
            key = "prebuilt_arrow_rows_per_s" if views else "prebuilt_arrow_no_views_rows_per_s"
            result[key] = round(rows / (time.perf_counter() - start))

        # The worker's block records (issue 15): a batch of a block table arrives as Arrow
        # IPC records of 1,000 rows with their fact ids and origins; timed is what the sink
        # does with them: read, join, drop what is at or below the watermarks (and, for
        # events, the ids landed), drop the origin columns, insert the block (with the views).
        blocked = engine.using(f"blocks_{size}")
        migrate(blocked)
        records: list[tuple[str, list[bytes]]] = []
        placed: dict[str, int] = defaultdict(int)
        for table, values in batches:
            if table in BLOCK_TABLES:
                arrow = arrow_block(decode(values), blocked._describe(table))
                assert arrow is not None
                where = origins[table][placed[table] : placed[table] + len(values)]
                placed[table] += len(values)
                parts = pa.array([w[0] for w in where], pa.int32())
                seqs = pa.array([w[1] for w in where], pa.int64())
                arrow = arrow.append_column(pa.field(origin.PARTITION, pa.int32()), parts)
                arrow = arrow.append_column(pa.field(origin.SEQ, pa.int64()), seqs)
                block = Block(arrow)
                starts = range(0, len(block), BLOCK_ROWS)
                parts = [block[i : i + BLOCK_ROWS].to_ipc() for i in starts]
                records.append((table, parts))
        block_rows = sum(len(v) for t, v in batches if t in BLOCK_TABLES)
        landed = BoundedIds()
        marks: dict[str, origin.Watermarks] = defaultdict(origin.Watermarks)
        start = time.perf_counter()
        for n, (table, values) in enumerate(records):
            joined = pa.concat_tables([Block.from_ipc(v).arrow for v in values])
            fresh = fresh_block(joined, marks[table], landed if table == "events" else None)
            assert len(fresh.rows) == fresh.total, "no replays here: every row is fresh"
            blocked.insert(table, fresh.rows, dedup_token=f"{table}:0:{n}")
            landed.add_all(fresh.event_ids)
            marks[table] = fresh.marks
        result["blocks_rows_per_s"] = round(block_rows / (time.perf_counter() - start))

        start = time.perf_counter()
        for _, values in batches:
            decode(values)
        result["decode_rows_per_s"] = round(rows / (time.perf_counter() - start))

        # persons is a ReplacingMergeTree (merges may fold a person's rows): every other
        # table must hold every row, and the three databases the same counts.
        expected = sum(len(v) for t, v in batches if t != "persons")
        counts = [
            s.query(f"SELECT sum(rows) AS n FROM system.parts WHERE database = '{s.database}' "
                    "AND active AND table IN ('events', 'stage_reached', 'attributions', "
                    "'lead_changes')")[0]["n"]
            for s in (store, text, native)
        ]  # fmt: skip
        if any(int(c) != expected for c in counts):
            raise SystemExit(f"row counts differ from {expected}: {counts}")
        result["store_vs_native"] = round(
            int(result["store_rows_per_s"]) / int(result["native_rows_per_s"]),
            2,  # type: ignore[call-overload]
        )
        result["store_vs_json"] = round(
            int(result["store_rows_per_s"]) / int(result["json_rows_per_s"]),
            2,  # type: ignore[call-overload]
        )
        runs.append(result)
        print(json.dumps(result), flush=True)
    engine.close()

    line = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "persons": args.persons,
        "runs": runs,
    }
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    with (out / "sink.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()

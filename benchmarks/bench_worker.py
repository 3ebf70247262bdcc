"""Drain throughput of one stream worker over a pre-filled topic, against two baselines.

    python benchmarks/bench_worker.py [--events 500000] [--partitions 4]

Starts one Apache Kafka broker, fills an events topic with at least ``--events`` simulated
events (all funnels, all seven attribution models on, as shipped), then drains it four ways,
one after the other, on the same machine:

* ``raw`` — the ceiling: an aiokafka consumer that reads every record and ``json.loads`` it;
* ``faust_count`` — the framework floor: a minimal Faust agent that only counts records;
* ``worker`` — ``funnel worker`` (both stages: route, then persons), from a fresh consumer
  group until it has committed the end of the events topic and of ``person-events``;
* ``worker2`` — the same with two ``funnel worker`` processes in one group (the scale-out
  figure: each takes half of the partitions);
* ``embedded`` — :class:`~stream_processors.embedded.EmbeddedPipeline` in this process over
  the same events, into a chDB store (what ``funnel demo`` and ``funnel serve`` run), with
  the rows it landed per event.

Rates are events per second of draining (start-up excluded: the clock starts at the first
record a run takes). Each run appends one JSON line to ``benchmarks/results/worker.jsonl``
with the ratios to ``raw`` and the issue's goals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "worker.jsonl"


def fill(
    bootstrap: str, topic: str, events: int, seed: int, window: int = 1
) -> tuple[list[bytes], int]:
    """Produce simulated events until at least ``events``; return their payloads and the
    records sent. With ``window`` > 1, the events of one key among every ``window``
    consecutive events go as one record holding a JSON array (a tracker's batch from one
    device, DESIGN §4)."""
    from producers.kafka_producer import EventProducer
    from producers.simulator import simulate

    payloads: list[bytes] = []
    records = 0
    batch = 0
    with EventProducer(bootstrap, topic, compression=None) as producer:
        while len(payloads) < events:
            sim = simulate(20_000, seed=seed + batch, site_id=f"bench{batch}")
            for start in range(0, len(sim.events), window):
                by_key: dict[bytes, list[bytes]] = {}
                for event in sim.events[start : start + window]:
                    value = event.model_dump_json(exclude_none=True).encode()
                    by_key.setdefault(event.partition_key.encode(), []).append(value)
                    payloads.append(value)
                for key, values in by_key.items():
                    record = values[0] if len(values) == 1 else b"[" + b",".join(values) + b"]"
                    producer.send_raw(key, record)
                    records += 1
            batch += 1
        producer.flush()
    return payloads, records


async def drain_raw(bootstrap: str, topic: str, total: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    seen, started = 0, 0.0
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                if not started:
                    started = time.perf_counter()
                for record in records:
                    json.loads(record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    return {"events": seen, "seconds": time.perf_counter() - started}


def faust_count_app(bootstrap: str, topic: str, total: int, out: Path) -> None:
    """The framework floor: a Faust agent that counts, then writes its timing and exits."""
    import faust

    app = faust.App(
        f"bench-count-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    state = {"seen": 0, "started": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for _ in stream:
            if not state["seen"]:
                state["started"] = time.perf_counter()
            state["seen"] += 1
            if state["seen"] >= total:
                seconds = time.perf_counter() - state["started"]
                out.write_text(json.dumps({"events": state["seen"], "seconds": seconds}))
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def drain_faust_count(bootstrap: str, topic: str, total: int, work: Path) -> dict[str, float]:
    out = work / "faust-count.json"
    subprocess.run(
        [
            *(sys.executable, __file__, "--role", "faust-count", "--bootstrap", bootstrap),
            *("--topic", topic, "--events", str(total), "--out", str(out)),
        ],
        cwd=work,
        check=True,
        timeout=3600,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict[str, float] = json.loads(out.read_text())
    return result


def _committed(bootstrap: str, group: str, topics: list[str]) -> tuple[int, int]:
    """(sum of committed offsets, sum of end offsets) of ``group`` over ``topics``."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
        ends = consumer.end_offsets(tps)
        return sum(consumer.committed(tp) or 0 for tp in tps), sum(ends.values())
    finally:
        consumer.close()


def _records(bootstrap: str, prefixes: tuple[str, ...]) -> dict[str, int]:
    """Records written to each topic whose name starts with one of ``prefixes`` (the run's
    topics and the worker's changelogs: all new in this run), inputs included; by topic name
    without its prefix."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        found: dict[str, int] = {}
        for topic in consumer.topics():
            prefix = next((p for p in prefixes if topic.startswith(p)), None)
            if prefix is None:
                continue
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            found[topic[len(prefix) :].lstrip("-.")] = sum(consumer.end_offsets(tps).values())
        return found
    finally:
        consumer.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drain_worker(
    bootstrap: str, prefix: str, partitions: int, work: Path, events: int, processes: int = 1
) -> dict[str, Any]:
    """``funnel worker`` (``processes`` of them, one group) from a fresh group; timed from
    the group's first commit to the end. ``events``: how many the events topic holds (its
    records may hold several)."""
    from funnel.topics import TopicNames

    names = TopicNames(prefix)
    group = f"bench-worker-{uuid.uuid4().hex[:8]}"
    logs = [work / f"worker-{group}-{n}.log" for n in range(processes)]
    workers = []
    for n, log_path in enumerate(logs):
        profile: list[str] = []
        if where := os.environ.get("FUNNEL_BENCH_PROFILE"):  # py-spy's collapsed stacks
            profile = ["py-spy", "record", "--nonblocking", "--rate", "100", "--format", "raw"]
            profile += ["--output", f"{where}-worker{n}.txt", "--"]
        with log_path.open("wb") as log:
            workers.append(
                subprocess.Popen(
                    [
                        *profile,
                        *(sys.executable, "-m", "funnel.cli", "worker", "--kafka", bootstrap),
                        *("--app-id", group, "--topic-prefix", prefix),
                        *("--partitions", str(partitions)),
                        *("--data-dir", str(work / f"worker-{group}-{n}")),
                        *("--web-port", str(_free_port()), "--status-every", "3600"),
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        _, total = _committed(bootstrap, group, [names.events])
        started, first = 0.0, 0
        while True:
            for worker, log_path in zip(workers, logs, strict=True):
                if worker.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"a worker exited:\n{tail}")
            done, _ = _committed(bootstrap, group, [names.events])
            if done and not started:
                started, first = time.perf_counter(), done
            if done >= total:
                # The second stage too: every person message taken.
                inner, inner_end = _committed(bootstrap, group, [names.person_events])
                if inner >= inner_end:
                    seconds = time.perf_counter() - started
                    records = _records(bootstrap, (prefix, group))
                    return {
                        "events": (total - first) * events / total,
                        "seconds": seconds,
                        "records_per_event": sum(records.values()) / events,
                        "records_by_topic": {t: round(n / events, 3) for t, n in records.items()},
                    }
            time.sleep(0.5)
    finally:
        # SIGINT to each process group: the workers stop, and py-spy (if any) writes profiles.
        for worker in workers:
            os.killpg(worker.pid, signal.SIGINT)
        for worker in workers:
            worker.wait(60)


def drain_embedded(payloads: list[bytes], work: Path) -> dict[str, float]:
    from funnel.events import parse_event
    from funnel.processor import CoreConfig
    from funnel.runtime import tune_gc
    from storage.backends import ChdbStore
    from storage.migrate import migrate
    from stream_processors.embedded import EmbeddedPipeline

    store = ChdbStore(work / "store")
    migrate(store)
    pipeline = EmbeddedPipeline(store, CoreConfig.default())
    tune_gc()  # as every ``funnel`` command does at start
    started = time.perf_counter()
    for payload in payloads:
        pipeline.submit(parse_event(payload))
    pipeline.flush()
    seconds = time.perf_counter() - started
    pipeline.close()
    tables = ("events", "stage_reached", "attributions", "lead_changes", "persons")
    rows = sum(
        int(store.query(f"SELECT count() AS n FROM {store.database}.{t}")[0]["n"]) for t in tables
    )
    store.close()
    return {"events": len(payloads), "seconds": seconds, "rows_per_event": rows / len(payloads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default="raw,faust_count,worker,embedded")
    parser.add_argument(
        "--window",
        type=int,
        default=1,
        help="the worker's input: a key's events among every N go as one array record",
    )
    parser.add_argument("--note", default="")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "faust-count":
        faust_count_app(args.bootstrap, args.topic, args.events, args.out)
        return

    from devtools.kafka_broker import KafkaBroker
    from funnel.topics import TopicNames
    from stream_processors.topics import create_topics

    targets = [t for t in args.targets.split(",") if t]
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp, KafkaBroker() as broker:
        work, bootstrap = Path(tmp), broker.bootstrap_servers
        names = TopicNames(f"bench{uuid.uuid4().hex[:8]}.")
        create_topics(bootstrap, names, args.partitions)
        filled = time.perf_counter()
        payloads, _ = fill(bootstrap, names.events, args.events, args.seed)
        print(f"filled {len(payloads):,} events in {time.perf_counter() - filled:.0f} s")
        worker_names, worker_records = names, len(payloads)
        if args.window > 1 and ("worker" in targets or "worker2" in targets):
            # The baselines read one event per record; the worker, the tracker-like arrays.
            worker_names = TopicNames(f"bench{uuid.uuid4().hex[:8]}.")
            create_topics(bootstrap, worker_names, args.partitions)
            _, worker_records = fill(
                bootstrap, worker_names.events, args.events, args.seed, args.window
            )
            print(f"the worker's input: {worker_records:,} records (window {args.window})")
        for target in targets:
            if target == "raw":
                runs[target] = asyncio.run(drain_raw(bootstrap, names.events, len(payloads)))
            elif target == "faust_count":
                runs[target] = drain_faust_count(bootstrap, names.events, len(payloads), work)
            elif target in ("worker", "worker2"):
                if target == "worker2" and "worker" in runs:
                    # A second drain of the same input needs its own copy of the topics.
                    worker_names = TopicNames(f"bench{uuid.uuid4().hex[:8]}.")
                    create_topics(bootstrap, worker_names, args.partitions)
                    fill(bootstrap, worker_names.events, args.events, args.seed, args.window)
                runs[target] = drain_worker(
                    bootstrap,
                    worker_names.prefix,
                    args.partitions,
                    work,
                    len(payloads),
                    processes=2 if target == "worker2" else 1,
                )
                runs[target]["input_records_per_event"] = worker_records / len(payloads)
            elif target == "embedded":
                runs[target] = drain_embedded(payloads, work)
            rate = runs[target]["events"] / runs[target]["seconds"]
            print(f"{target:12s} {rate:>10,.0f} events/s")

    rates = {t: round(r["events"] / r["seconds"]) for t, r in runs.items()}
    raw = rates.get("raw")
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bench": "worker",
        "machine": {"node": platform.node(), "cpus": os.cpu_count()},
        "settings": {
            "events": len(payloads),
            "partitions": args.partitions,
            "window": args.window,
            "note": args.note,
        },
        "events_per_s": rates,
        "ratio_to_raw": {t: round(r / raw, 3) for t, r in rates.items()} if raw else {},
        "two_workers_vs_one": (
            round(rates["worker2"] / rates["worker"], 2)
            if rates.get("worker") and rates.get("worker2")
            else None
        ),
        "goal": {
            "worker_at_least_15000": rates.get("worker", 0) >= 15_000,
            "worker_at_least_half_of_raw": bool(raw) and rates.get("worker", 0) >= raw / 2,
            "embedded_at_least_30000": rates.get("embedded", 0) >= 30_000,
            "embedded_at_least_quarter_of_raw": bool(raw) and rates.get("embedded", 0) >= raw / 4,
        },
        "rows_per_event": {
            t: round(r["rows_per_event"], 2) for t, r in runs.items() if "rows_per_event" in r
        },
        "kafka_records_per_event": {
            t: round(r["records_per_event"], 2) for t, r in runs.items() if "records_per_event" in r
        },
        "kafka_records_per_event_by_topic": {
            t: r["records_by_topic"] for t, r in runs.items() if "records_by_topic" in r
        },
    }
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

"""Throughput of the runtime against the hosts' per-event floor, measured in the same run.

    python benchmarks/bench_core.py [--persons 20000] [--repeat 3]

* **baseline** — the floor any host pays per event: decoding the internal record with the
  chosen codec (:mod:`funnel.codec`: msgspec MessagePack) plus one dict update per person;
* **parse** — validating each event's JSON into an :class:`~funnel.events.Event` (pydantic),
  what the collector and the Kafka route stage do;
* **runtime** — parse plus :class:`funnel.runtime.Batch` (dedup, identity, merges, every
  shipped funnel, all seven rule-based models, leads, one person row per person per batch)
  and the facts as typed Arrow blocks (:func:`storage.fact_columns.fact_blocks`), in batches
  of 5,000 events;
* **late** — one event that belongs just before the last of a person's 200 logged events,
  against one in order at the end of the same log (the refold from the nearest mark).

Results are appended as one JSON line to ``benchmarks/results/core.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from funnel.clock import from_micros
from funnel.events import Event, EventType, parse_event
from funnel.processor import CoreConfig, PersonState, process
from funnel.runtime import Batch, tune_gc
from producers.simulator import simulate
from storage.fact_columns import fact_blocks
from stream_processors.state import SavedState


def best_of(repeat: int, run: Callable[[], object]) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings)


def _late_vs_in_order(config: CoreConfig, repeat: int) -> tuple[float, float]:
    """Seconds per event: a late event at log size 200, and one in order."""
    kinds = ["impression", "click", "impression", "lead", "order", "payment"]
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    history = [
        Event.model_validate(
            {
                "event_id": f"00000000-0000-4000-8000-{i:012d}",
                "type": kinds[i % len(kinds)],
                "site_id": "s",
                "anonymous_id": "a",
                "customer_id": "c",
                "occurred_at": t0 + timedelta(minutes=i),
                "order_id": f"o{i}",
                **({"revenue": "5", "currency": "USD"} if i % len(kinds) == 5 else {}),
            }
        )
        for i in range(config.max_log)
    ]
    state: PersonState | None = None
    for event in history:
        state, _ = process(state, event, config)
    assert state is not None
    saved = msgspec.msgpack.encode(state)
    decoder = msgspec.msgpack.Decoder(PersonState)
    before_last = state.log[-1].at_us - 1
    late = history[0].model_copy(
        update={
            "event_id": "10000000-0000-4000-8000-000000000000",
            "type": EventType.CLICK,
            "occurred_at": from_micros(before_last),
        }
    )
    in_order = late.model_copy(update={"occurred_at": t0 + timedelta(days=1)})
    rounds = 200

    def one(event: Event) -> float:
        states = [decoder.decode(saved) for _ in range(rounds)]
        start = time.perf_counter()
        for s in states:
            process(s, event, config)
        return (time.perf_counter() - start) / rounds

    return (
        min(one(late) for _ in range(repeat)),
        min(one(in_order) for _ in range(repeat)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()

    events = simulate(args.persons, seed=1).events
    wire = [e.model_dump_json(exclude_none=True) for e in events]
    records = [msgspec.msgpack.encode(json.loads(w)) for w in wire]
    keys = [e.partition_key for e in events]
    del events  # a host holds the records, not the simulator's objects
    config = CoreConfig.default()
    tune_gc()  # as every ``funnel`` command does at start

    def baseline() -> None:
        decode = msgspec.msgpack.decode
        latest: dict[str, object] = {}
        for key, record in zip(keys, records, strict=True):
            latest[key] = decode(record)

    def parse() -> None:
        for payload in wire:
            parse_event(payload)

    def runtime() -> None:
        saved = SavedState()
        for start in range(0, len(wire), args.batch):
            batch = Batch(config, saved)
            for payload in wire[start : start + args.batch]:
                batch.submit(parse_event(payload))
            changes = batch.close()
            saved.commit(changes, fact_blocks(changes.facts))
            for entry in saved.pending():
                saved.landed(entry)

    base_s = best_of(args.repeat, baseline)
    parse_s = best_of(args.repeat, parse)
    run_s = best_of(args.repeat, runtime)
    late_s, in_order_s = _late_vs_in_order(config, args.repeat)
    n = len(wire)
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "events": n,
        "baseline_events_per_s": round(n / base_s),
        "parse_events_per_s": round(n / parse_s),
        "runtime_events_per_s": round(n / run_s),
        "runtime_cost_vs_baseline": round(run_s / base_s, 1),
        "runtime_cost_vs_parse": round(run_s / parse_s, 1),
        "late_at_log_200_us": round(late_s * 1e6),
        "in_order_at_log_200_us": round(in_order_s * 1e6),
        "late_cost_vs_in_order": round(late_s / in_order_s, 1),
    }
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    with (out / "core.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

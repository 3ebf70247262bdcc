"""Throughput of the pure core against a baseline measured in the same run.

    python benchmarks/bench_core.py [--persons 20000] [--repeat 3]

Baseline: decoding each event's JSON and validating it into an :class:`~funnel.events.Event`
(the work every adapter does anyway). Measured: the same decode plus
:func:`funnel.processor.process` and building the fact rows. The report gives events/s for
both and the ratio, so it means something on a shared, noisy machine. Results are appended
as one JSON line to ``benchmarks/results/core.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from funnel.events import parse_event
from funnel.processor import CoreConfig, PersonState, process
from producers.simulator import simulate


def best_of(repeat: int, run: object) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    events = simulate(args.persons, seed=1).events
    wire = [e.model_dump_json(exclude_none=True) for e in events]
    config = CoreConfig.default()

    def baseline() -> None:
        for payload in wire:
            parse_event(payload)

    def core() -> None:
        states: dict[str, PersonState] = {}
        for payload in wire:
            event = parse_event(payload)
            state, facts = process(states.get(event.partition_key), event, config)
            states[event.partition_key] = state
            for fact in facts:
                fact.row()

    base_s = best_of(args.repeat, baseline)
    core_s = best_of(args.repeat, core)
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "events": len(wire),
        "baseline_events_per_s": round(len(wire) / base_s),
        "core_events_per_s": round(len(wire) / core_s),
        "core_cost_vs_baseline": round(core_s / base_s, 2),
    }
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    with (out / "core.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""``funnel report funnel``: a period (chains), all time (aggregates), and raw ``windowFunnel``.

    python benchmarks/bench_reports.py [--persons 1000000] [--events-per-person 10] [--runs 20]

Builds, in a chDB store, a site of ``--persons`` people with ``persons x events-per-person``
events over 90 days (10M events by default) and their ``stage_reached`` facts (which feed the
aggregates through the materialized views of migration 0008, as the sink's inserts do) and
``persons`` rows (level and status per person, for the split). Each
person reaches a level of the 6-step sales funnel, the chain's events one hour apart, then has
extra impressions after it. Generated in SQL so that the benchmark builds in seconds; the same
rows the pipeline would write for such people.

Then answers the funnel three ways, on the same store, in the same run:

* ``period`` — the sales funnel's step counts for a 60-day period broken down by entry
  channel: :func:`storage.reports.funnel_report` (``split=False``), what ``funnel report
  funnel --by channel --from … --to … --no-split`` runs. Periods follow DESIGN §6 (the chains
  entering in the period), computed with ``windowFunnel`` over the resolved events;
* ``all_time`` — the same report without a period or breakdown: answered from the stream's
  facts (the ``agg_stage_day`` aggregate);
* ``raw`` — the baseline: a plain ``windowFunnel`` over the raw ``events`` of the period, per
  person, grouped by the channel of the person's first impression (one chain per person in
  this data, so it must give the period's answer);

* ``query_time`` — the same 6-step funnel asked at query time (``funnel report funnel
  --steps impression,click,lead,order,payment,repeat --window 30d --by channel``, issue 17):
  over the period, and over all time (the whole 10M events, against the aggregates);

checks that ``period``, ``query_time`` and ``raw`` agree, and reports p50/p90 milliseconds
and the ratios to ``raw``. The report with the converted/dropped/in-window split (which scans
the period's persons) is timed too. Results go to ``benchmarks/results/reports.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "reports.jsonl"
START = datetime(2026, 1, 1, tzinfo=UTC)
CHANNELS = [
    "Paid Search",
    "Organic Search",
    "Paid Social",
    "Organic Social",
    "Email",
    "Display",
    "Referral",
    "Direct",
]
STEPS = ["impression", "click", "lead", "order", "payment", "repeat"]


def build(store: object, persons: int, per_person: int) -> dict[str, float]:
    """Fill ``events`` and ``stage_reached`` with the synthetic site; returns timings."""
    db = store.database  # type: ignore[attr-defined]
    channels = "[" + ", ".join(f"'{c}'" for c in CHANNELS) + "]"
    steps = "[" + ", ".join(f"'{s}'" for s in STEPS) + "]"
    # Per person: entry second within 90 days, channel, level (1..6, geometric-ish).
    person = (
        f"toUInt64(number) AS p, 'p' || toString(p) AS person_id, "
        f"toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + "
        "toIntervalSecond(cityHash64(p, 1) % (90 * 86400)) AS t0, "
        f"{channels}[1 + cityHash64(p, 2) % {len(CHANNELS)}] AS channel, "
        "(cityHash64(p, 3) % 10000) / 10000 AS u, "
        "1 + (u < 0.3) + (u < 0.1) + (u < 0.04) + (u < 0.02) + (u < 0.005) AS level"
    )
    timings = {}
    started = time.perf_counter()
    store.execute(  # type: ignore[attr-defined]
        f"INSERT INTO {db}.events (event_id, site_id, event_type, occurred_at, received_at, "
        "person_id, anonymous_id, channel) "
        "SELECT concat(person_id, ':', toString(k)) AS event_id, 'bench', "
        f"if(k < level, {steps}[k + 1], 'impression') AS event_type, "
        "if(k < level, t0 + toIntervalHour(k), t0 + toIntervalHour(level) + toIntervalMinute(k)) "
        "AS at, at, person_id, person_id, channel FROM ("
        f"SELECT {person} FROM numbers({persons})) "
        f"ARRAY JOIN range({per_person}) AS k "
        "SETTINGS max_insert_threads = 2, max_block_size = 1000000"
    )
    timings["events_s"] = time.perf_counter() - started
    started = time.perf_counter()
    store.execute(  # type: ignore[attr-defined]
        f"INSERT INTO {db}.stage_reached (site_id, person_id, funnel, step, step_index, "
        "reached_at, entered_at, channel, campaign, entry_channel, entry_campaign, sign) "
        f"SELECT 'bench', person_id, 'sales', {steps}[k + 1], k + 1, "
        "t0 + toIntervalHour(k), t0, channel, '', channel, '', 1 FROM ("
        f"SELECT {person} FROM numbers({persons})) "
        "ARRAY JOIN range(level) AS k SETTINGS max_block_size = 1000000"
    )
    timings["stage_reached_s"] = time.perf_counter() - started
    started = time.perf_counter()
    store.execute(  # type: ignore[attr-defined]
        f"INSERT INTO {db}.persons (site_id, person_id, first_seen, last_seen, first_channel, "
        "last_channel, payments, funnel_levels, funnel_status, updated_at) "
        "SELECT 'bench', person_id, t0, t0 + toIntervalHour(level), channel, channel, "
        "toUInt32(greatest(level - 4, 0)), map('sales', toUInt8(level)), "
        "map('sales', multiIf(level = 6, 'converted', "
        f"t0 + INTERVAL 30 DAY < toDateTime64('{START + timedelta(days=80):%Y-%m-%d}', 3, 'UTC'), "
        f"'dropped', 'in_window')), t0 + toIntervalHour(level) FROM (SELECT {person} "
        f"FROM numbers({persons})) SETTINGS max_block_size = 1000000"
    )
    timings["persons_s"] = time.perf_counter() - started
    return timings


def raw_counts(store: object, start: datetime, end: datetime) -> dict[str, list[int]]:
    """The period's funnel by hand: ``windowFunnel`` per person over the events from the
    period's start, step 1 only for impressions in the period, grouped by the channel of the
    first of them (every event of a person has one channel in this data)."""
    db = store.database  # type: ignore[attr-defined]
    entry = "occurred_at >= {start:DateTime64(3)} AND occurred_at < {end:DateTime64(3)}"
    conditions = ", ".join(
        f"event_type = '{s}'" + (f" AND {entry}" if i == 0 else "") for i, s in enumerate(STEPS)
    )
    window = 30 * 86_400_000
    rows = store.query(  # type: ignore[attr-defined]
        "SELECT g, level, count() AS n FROM ("
        f"SELECT person_id, argMinIf(channel, occurred_at, event_type = 'impression' AND {entry}) "
        f"AS g, windowFunnel({window})(toUInt64(toUnixTimestamp64Milli(occurred_at)), "
        f"{conditions}) AS level FROM {db}.events WHERE site_id = 'bench' AND NOT is_bot "
        "AND occurred_at >= {start:DateTime64(3)} "
        "AND occurred_at < {end:DateTime64(3)} + INTERVAL 30 DAY GROUP BY person_id"
        ") WHERE level > 0 GROUP BY g, level",
        {"start": start.strftime("%Y-%m-%d %H:%M:%S"), "end": end.strftime("%Y-%m-%d %H:%M:%S")},
    )
    counts: dict[str, list[int]] = {}
    for row in rows:
        per = counts.setdefault(str(row["g"]), [0] * len(STEPS))
        for k in range(int(row["level"])):
            per[k] += int(row["n"])
    return counts


def timed(runs: int, work: Callable[[], object]) -> tuple[list[float], object]:
    result = work()  # warm-up (and the answer)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append((time.perf_counter() - started) * 1000)
    return timings, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events-per-person", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--raw-runs", type=int, default=5)
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    from funnel.processor import CoreConfig
    from storage.backends import ChdbStore
    from storage.migrate import migrate
    from storage.reports import ReportScope, funnel_report
    from storage.reports.query import parse_steps

    spec = CoreConfig.default().funnels.get("sales")
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as work:
        store = ChdbStore(Path(work) / "store")
        migrate(store)
        build_s = build(store, args.persons, args.events_per_person)
        store.execute(f"OPTIMIZE TABLE {store.database}.agg_stage_day FINAL")
        events = int(store.query(f"SELECT count() AS n FROM {store.database}.events")[0]["n"])
        start, end = START + timedelta(days=15), START + timedelta(days=75)
        scope = ReportScope(start=start, end=end, site="bench", by="channel")

        def period() -> dict[str, list[int]]:
            reports = funnel_report(store, spec, scope, split=False)
            return {r.group or "": [s.count for s in r.steps] for r in reports}

        def all_time() -> object:
            return funnel_report(store, spec, ReportScope(site="bench"), split=False)

        asked = parse_steps(",".join(STEPS), window="30d")

        def query_time(scope: ReportScope) -> dict[str, list[int]]:
            reports = funnel_report(store, asked, scope, split=False)
            return {r.group or "": [s.count for s in r.steps] for r in reports}

        everyone = ReportScope(site="bench", by="channel")
        query_ms, query_answer = timed(args.runs, lambda: query_time(scope))
        query_all_ms, _ = timed(max(3, args.runs // 4), lambda: query_time(everyone))
        period_ms, period_answer = timed(args.runs, period)
        all_time_ms, _ = timed(args.runs, all_time)
        split_ms, _ = timed(max(3, args.runs // 4), lambda: funnel_report(store, spec, scope))
        raw_ms, raw_answer = timed(args.raw_runs, lambda: raw_counts(store, start, end))
        store.close()
    same = period_answer == raw_answer == query_answer
    p50 = statistics.median(period_ms)
    all_time_p50 = statistics.median(all_time_ms)
    raw_p50 = statistics.median(raw_ms)
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bench": "reports",
        "machine": {"node": platform.node(), "python": platform.python_version()},
        "settings": {
            "persons": args.persons,
            "events": events,
            "period_days": 60,
            "breakdown": "channel",
            "runs": args.runs,
            "raw_runs": args.raw_runs,
            "note": args.note,
        },
        "build_s": {k: round(v, 1) for k, v in build_s.items()},
        "same_answer": same,
        "ms": {
            "period_chains_p50": round(p50, 2),
            "period_chains_p90": round(sorted(period_ms)[int(0.9 * (len(period_ms) - 1))], 2),
            "all_time_aggregates_p50": round(all_time_p50, 2),
            "with_status_split_p50": round(statistics.median(split_ms), 2),
            "raw_windowfunnel_p50": round(raw_p50, 2),
            "query_time_period_p50": round(statistics.median(query_ms), 2),
            "query_time_all_time_by_channel_p50": round(statistics.median(query_all_ms), 2),
        },
        "query_time_over_raw": round(statistics.median(query_ms) / raw_p50, 2),
        "query_time_all_time_over_aggregates": round(
            statistics.median(query_all_ms) / all_time_p50, 1
        ),
        "period_over_raw": round(p50 / raw_p50, 2),
        "raw_over_all_time": round(raw_p50 / all_time_p50, 1),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))
    if not same:
        raise SystemExit("the period report and windowFunnel disagree: the benchmark is void")


if __name__ == "__main__":
    main()

"""The simulator and its messiness: deterministic, truthful, and as messy as asked."""

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from funnel.events import InvalidEvent, parse_event
from producers.messiness import BOT_USER_AGENT, Mess, arrivals
from producers.simulator import CHANNEL_PROFILES, simulate


def test_same_seed_same_population() -> None:
    a, b = simulate(300, seed=3), simulate(300, seed=3)
    assert [e.event_id for e in a.events] == [e.event_id for e in b.events]
    assert a.truth.step_counts("sales") == b.truth.step_counts("sales")
    assert [e.event_id for e in simulate(300, seed=4).events] != [e.event_id for e in a.events]


def test_channels_convert_differently() -> None:
    sim = simulate(6000, seed=1)
    by_channel: dict[str, list[int]] = {}
    for person in sim.truth.persons.values():
        by_channel.setdefault(person.channel, []).append(person.levels["sales"])
    assert set(by_channel) == {p.name for p in CHANNEL_PROFILES}
    click_rate = {
        c: sum(lv >= 2 for lv in levels) / len(levels) for c, levels in by_channel.items()
    }
    assert click_rate["Paid Search"] > 2 * click_rate["Display"]


def test_clean_arrivals_are_the_events() -> None:
    sim = simulate(200, seed=2)
    stream = arrivals(sim.events, Mess())
    assert [a.payload["event_id"] for a in stream] == [e.event_id for e in sim.events]
    assert {a.kind for a in stream} == {"event"}


def test_messy_arrivals() -> None:
    sim = simulate(3000, seed=5, bots=40)
    mess = Mess(duplicates=0.05, reorder_seconds=5, skewed_devices=0.2, late=0.02, malformed=0.02)
    stream = arrivals(sim.events, mess, seed=9)
    kinds = Counter(a.kind for a in stream)
    assert kinds["event"] == len(sim.events)
    assert 0.03 < kinds["duplicate"] / len(sim.events) < 0.07
    assert 0.01 < kinds["malformed"] / len(sim.events) < 0.03
    ids = Counter(a.payload["event_id"] for a in stream if a.kind != "malformed")
    assert set(ids) == {e.event_id for e in sim.events}
    assert sum(n - 1 for n in ids.values()) == kinds["duplicate"]
    for arrival in stream:
        if arrival.kind == "malformed":
            with pytest.raises(InvalidEvent):
                parse_event(arrival.payload)
        else:
            parse_event(arrival.payload)
    times = {e.event_id: e.occurred_at for e in sim.events}
    skewed = [a for a in stream if a.kind == "event" and a.skew]
    assert skewed
    for a in skewed:
        claimed = datetime.fromisoformat(a.payload["occurred_at"])
        assert abs(claimed - times[a.payload["event_id"]] - a.skew) < timedelta(milliseconds=2)
    order = [a.payload["event_id"] for a in stream if a.kind == "event"]
    assert order != [e.event_id for e in sim.events]  # reordered and late
    assert sum(a.user_agent == BOT_USER_AGENT for a in stream) >= 40


def test_multi_device_customers() -> None:
    sim = simulate(4000, seed=6, multi_device=0.5)
    movers = [p for p in sim.truth.persons.values() if len(p.devices) > 1]
    assert movers
    for person in movers:
        later = [e for e in person.events if e.anonymous_id == person.devices[1]]
        assert later
        assert all(e.customer_id == person.customer_id for e in later)
        assert [e.seq for e in later] == list(range(len(later)))


def test_truth_and_spend_files(tmp_path: Path) -> None:
    sim = simulate(1500, seed=8)
    sim.truth.write(tmp_path / "truth.jsonl")
    sim.write_spend(tmp_path / "spend.csv")
    records = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert len(records) == len(sim.truth.persons)
    payer = next(r for r in records if r["levels"]["sales"] >= 5)
    assert list(payer["stages"]["sales"])[:5] == ["impression", "click", "lead", "order", "payment"]
    assert {c["type"] for c in payer["conversions"]} >= {"lead", "order", "payment"}
    assert all(t["channel"] for t in payer["touches"])
    lines = (tmp_path / "spend.csv").read_text().splitlines()
    assert lines[0] == "date,channel,campaign,cost,currency"
    channels = {line.split(",")[1] for line in lines[1:]}
    assert channels <= {"Paid Search", "Paid Social", "Display", "Email"}
    assert sum(row.cost for row in sim.spend) > 0

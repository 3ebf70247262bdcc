"""Reprocessing history after a rule change (issue 18): the old events take the new rule,
and the store equals a fresh run of the same events under it; twice gives the same."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from funnel.channels import ChannelRules
from funnel.events import Event
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.migrate import migrate
from storage.reports.catalog import compute, parse_request
from storage.reports.render import to_payload
from stream_processors.embedded import EmbeddedPipeline
from stream_processors.reprocess import reprocess
from stream_processors.state import STATE_FILE, SavedState

OLD = CoreConfig.default()
REPORTS = [("channels", {}), ("attribution", {}), ("funnel", {}), ("leads", {}), ("paths", {})]
NEWSLETTER = """
[[rule]]
channel = "Newsletter"
sources = ["newsletter"]
"""


@pytest.fixture(scope="module")
def new_config(tmp_path_factory: pytest.TempPathFactory) -> CoreConfig:
    """The default channel rules with a rule of our own first: the newsletter is a channel."""
    defaults = Path(__file__).parents[3] / "funnel" / "defaults" / "channels.toml"
    text = defaults.read_text("utf-8")
    first = text.index("[[rule]]")
    path = tmp_path_factory.mktemp("rules") / "channels.toml"
    path.write_text(text[:first] + NEWSLETTER.lstrip() + "\n" + text[first:], "utf-8")
    rules = ChannelRules.from_file(path)
    return CoreConfig(channels=rules, funnels=OLD.funnels, leads=OLD.leads)


def received_order(events: list[Event]) -> list[Event]:
    """The order the store gives them back in (times at millisecond precision)."""

    def ms(moment: object) -> int:
        return int(moment.timestamp() * 1000) if moment is not None else 0  # type: ignore[attr-defined]

    return sorted(events, key=lambda e: (ms(e.received_at), ms(e.occurred_at), e.event_id))


def answers(store: ChdbStore, config: CoreConfig) -> list[object]:
    return [
        to_payload(compute(store, parse_request(name, {"site": "r", **p}), config.funnels))
        for name, p in REPORTS
    ]


def fresh(chdb_engine: ChdbStore, label: str) -> ChdbStore:
    store = chdb_engine.using(f"rp_{label}_{uuid.uuid4().hex[:8]}")
    migrate(store)
    return store


def test_reprocess_applies_a_new_channel_rule_to_old_events(
    chdb_engine: ChdbStore, new_config: CoreConfig, tmp_path: Path
) -> None:
    sim = simulate(500, seed=17, site_id="r", multi_device=0.4)
    store = fresh(chdb_engine, "old")
    saved = SavedState(tmp_path / STATE_FILE.format(database="old"), config=OLD)
    pipeline = EmbeddedPipeline(store, OLD, saved=saved)
    pipeline.submit_all(sim.events)
    pipeline.flush()
    pipeline.close()
    before = {
        r["channel"]
        for r in compute(store, parse_request("channels", {"site": "r"}), OLD.funnels).records()
    }  # type: ignore[union-attr]
    assert "Newsletter" not in before
    assert "Email" in before

    result = reprocess(store, saved, new_config, ["r"])
    assert result.events == len(sim.events)
    channels = {
        r["channel"]
        for r in compute(
            store, parse_request("channels", {"site": "r"}), new_config.funnels
        ).records()
    }  # type: ignore[union-attr]
    assert "Newsletter" in channels  # the old events took the new rule

    # equal to a fresh run of the same events under the new rule
    other = fresh(chdb_engine, "new")
    run = EmbeddedPipeline(other, new_config)
    run.submit_all(received_order(sim.events))
    run.expire()
    run.flush()
    run.close()
    assert answers(store, new_config) == answers(other, new_config)

    # twice: the same tables
    first = answers(store, new_config)
    counts = {
        t: int(store.query(f"SELECT count() AS n FROM {store.database}.{t}")[0]["n"])
        for t in ("events", "stage_reached", "attributions", "persons", "lead_changes")
    }
    reprocess(store, saved, new_config, ["r"])
    assert answers(store, new_config) == first
    assert {
        t: int(store.query(f"SELECT count() AS n FROM {store.database}.{t}")[0]["n"])
        for t in counts
    } == counts

    # the stream goes on from the reprocessed state: a new event of a known person, once
    known = sim.events[-1]
    later = known.model_copy(
        update={
            "event_id": str(uuid.uuid4()),
            "occurred_at": known.occurred_at + timedelta(minutes=5),
        }
    )
    go_on = EmbeddedPipeline(store, new_config, saved=saved)
    assert go_on.submit(later)
    assert not go_on.submit(sim.events[0])  # an old one is still a duplicate
    go_on.flush()
    go_on.close()
    saved.close()


def test_the_command_reprocesses_with_the_rules_it_is_given(
    tmp_path: Path, new_config: CoreConfig
) -> None:
    funnel = str(Path(sys.executable).with_name("funnel"))
    store = f"chdb://{tmp_path / 'store'}"
    rules = tmp_path / "channels.toml"
    defaults = Path(__file__).parents[3] / "funnel" / "defaults" / "channels.toml"
    text = defaults.read_text("utf-8")
    first = text.index("[[rule]]")
    rules.write_text(text[:first] + NEWSLETTER.lstrip() + "\n" + text[first:], "utf-8")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [funnel, *args], capture_output=True, text=True, timeout=300, check=False
        )

    assert cli("demo", "--persons", "300", "--store", store).returncode == 0
    done = cli("reprocess", "--channels", str(rules), "--store", store)
    assert done.returncode == 0, done.stderr
    assert "reprocessed" in done.stderr
    table = json.loads(cli("report", "channels", "--store", store, "--format", "json").stdout)
    assert "Newsletter" in {r["channel"] for r in table["rows"]}
    bad = cli("reprocess", "--site", "nope", "--store", store)
    assert bad.returncode == 2
    assert "no events of site 'nope'" in bad.stderr


def credits_by_person(store: ChdbStore) -> dict[str, Counter[str]]:
    rows = store.query(
        f"SELECT person_id, conversion_id, model, channel, round(sum(credit), 6) AS c "
        f"FROM {store.database}.attributions GROUP BY ALL HAVING c != 0"
    )
    out: dict[str, Counter[str]] = {}
    for r in rows:
        out.setdefault(str(r["person_id"]), Counter())[
            f"{r['conversion_id']}|{r['model']}|{r['channel']}"
        ] += float(r["c"])  # type: ignore[arg-type]
    return out


def test_a_period_reprocesses_its_persons_whole_and_leaves_the_others(
    chdb_engine: ChdbStore, new_config: CoreConfig, tmp_path: Path
) -> None:
    sim = simulate(400, seed=23, site_id="r", multi_device=0.4)
    stores, states = [], []
    for label in ("part", "full"):
        store = fresh(chdb_engine, label)
        saved = SavedState(tmp_path / STATE_FILE.format(database=label), config=OLD)
        pipeline = EmbeddedPipeline(store, OLD, saved=saved)
        pipeline.submit_all(sim.events)
        pipeline.flush()
        pipeline.close()
        stores.append(store)
        states.append(saved)
    part, full = stores
    before = credits_by_person(part)
    times = sorted(e.occurred_at for e in sim.events)
    start, end = times[len(times) // 3], times[len(times) // 2]
    done = reprocess(part, states[0], new_config, ["r"], start=start, end=end)
    reprocess(full, states[1], new_config, ["r"])
    assert 0 < done.events < len(sim.events)
    chosen_rows = part.query(
        f"SELECT DISTINCT person_id FROM {part.database}.events "
        "WHERE occurred_at >= {s:DateTime64(3)} AND occurred_at < {e:DateTime64(3)}",
        {
            "s": start.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            "e": end.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        },
    )
    chosen = {str(r["person_id"]) for r in chosen_rows}
    after, everyone_new = credits_by_person(part), credits_by_person(full)
    changed = 0
    for person in set(before) | set(after):
        if person in chosen:
            assert after.get(person) == everyone_new.get(person), person  # re-derived: new rules
            changed += after.get(person) != before.get(person)
        else:  # outside the period: untouched, unless linked to a person in it
            untouched = after.get(person) == before.get(person)
            assert untouched or after.get(person) == everyone_new.get(person), person
    assert changed > 0, "some person in the period must have a newsletter credit now"
    unchanged = [p for p in before if p not in chosen and after.get(p) == before[p]]
    assert unchanged, "persons outside the period keep their facts"
    for saved in states:
        saved.close()

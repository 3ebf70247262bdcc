"""Dead-letter replay (issue 18): after a fix, what intake accepts lands once and is marked;
what still fails stays; a second replay does nothing; the command lists and replays."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from funnel.processor import CoreConfig
from producers.dead_letters import dead_letter_table, replay
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline

# within the dead letters' 30 days: older ones are gone
RECEIVED = (datetime.now(UTC) - timedelta(days=5)).replace(microsecond=0)


def item(event_id: str, **extra: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "click",
        "site_id": "d",
        "anonymous_id": "anon-7",
        "occurred_at": (RECEIVED - timedelta(minutes=1)).isoformat(),
        **extra,
    }


def letter(
    payload: str, code: str, at: datetime = RECEIVED, field: str = "type"
) -> dict[str, object]:
    errors = [{"field": field, "reason": "refused by an older rule", "code": code}]
    return {"received_at": at, "site_id": "d", "reason": json.dumps(errors), "payload": payload}


LETTERS = [
    # refused by a rule since fixed: valid now
    letter(json.dumps(item("6f1c2a9e-0000-4000-8000-000000000001")), "unknown_type"),
    letter(
        json.dumps(item("6f1c2a9e-0000-4000-8000-000000000002")),
        "unknown_type",
        RECEIVED + timedelta(days=2),
    ),
    # still wrong
    letter(
        json.dumps(item("6f1c2a9e-0000-4000-8000-000000000003", type="purchase")), "unknown_type"
    ),
    letter("{not json", "invalid_json", field="$"),
    letter(json.dumps({"event_id": "x"}), "store_refused", field="$store.events"),
]


def events(store: ChdbStore) -> list[str]:
    rows = store.query(f"SELECT event_id FROM {store.database}.events ORDER BY event_id")
    return [str(r["event_id"]) for r in rows]


def test_replay_lands_what_intake_accepts_now_once(store: ChdbStore) -> None:
    store.insert("rejected_events", LETTERS)
    pipeline = EmbeddedPipeline(store, CoreConfig.default())
    now = datetime.now(UTC)
    only_since = replay(store, pipeline, since=RECEIVED + timedelta(days=1), replayed_at=now)
    assert (only_since.landed, only_since.events) == (1, 1)
    assert events(store) == ["6f1c2a9e-0000-4000-8000-000000000002"]
    result = replay(store, pipeline, reason="unknown_type", replayed_at=now)
    assert (result.landed, result.events) == (1, 1)  # the other one was replayed already
    assert (
        dict(result.still_failing) == {"unknown_event_type": 1}
        or sum(result.still_failing.values()) == 1
    )
    everything = replay(store, pipeline, replayed_at=now)
    assert (everything.landed, everything.events) == (0, 0)
    assert sum(everything.still_failing.values()) == 2  # the bad type and the junk
    assert everything.skipped_store_refused == 1
    assert events(store) == [
        "6f1c2a9e-0000-4000-8000-000000000001",
        "6f1c2a9e-0000-4000-8000-000000000002",
    ]
    # the letters stay, the replayed ones counted as such
    table = {
        (r["reason"], r["field"]): (r["letters"], r["replayed"])
        for r in dead_letter_table(store).records()
    }
    assert table == {
        ("unknown_type", "type"): (3, 2),
        ("invalid_json", "$"): (1, 0),
        ("store_refused", "$store.events"): (1, 0),
    }
    pipeline.close()


def test_a_replay_whose_marks_were_lost_counts_nothing_twice(store: ChdbStore) -> None:
    store.insert("rejected_events", LETTERS[:1])
    pipeline = EmbeddedPipeline(store, CoreConfig.default())
    now = datetime.now(UTC)
    assert replay(store, pipeline, replayed_at=now).events == 1
    store.execute(f"TRUNCATE TABLE {store.database}.dead_letter_replays")  # as if it crashed
    again = replay(store, pipeline, replayed_at=now)
    assert (again.landed, again.events) == (1, 0)  # a duplicate for the runner's state
    assert len(events(store)) == 1
    pipeline.close()


def test_the_commands_list_and_replay(tmp_path: Path) -> None:
    funnel = str(Path(sys.executable).with_name("funnel"))
    store_url = f"chdb://{tmp_path / 'store'}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [funnel, *args, "--store", store_url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run("migrate").returncode == 0
    feed = (
        "import json, sys\n"
        "from storage.backends import open_store\n"
        "from tests.integration.storage.test_dead_letters import LETTERS\n"
        f"s = open_store({store_url!r}, 'funnel')\n"
        "s.insert('rejected_events', LETTERS)\n"
        "s.close()\n"
    )
    fed = subprocess.run(
        [sys.executable, "-c", feed],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[3],
    )
    assert fed.returncode == 0, fed.stderr
    listed = run("dlq", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["rows"]
    assert sum(r["letters"] for r in rows) == 5
    replayed = run("dlq", "replay", "--reason", "unknown_type")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 2 letter(s): 2 event(s) applied; still failing: 1" in replayed.stderr
    again = run("dlq", "replay")
    assert "replayed 0 letter(s)" in again.stderr
    assert "1 row(s) the store refused" in again.stderr

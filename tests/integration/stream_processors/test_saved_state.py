"""The embedded runner's durable state (issue 14): a restart continues where it stopped, and
facts committed with the state land once, whatever point a crash cut the commit at."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from funnel.events import EventType
from funnel.processor import CoreConfig
from storage.backends import ChdbStore, StoreError
from stream_processors.embedded import EmbeddedPipeline
from stream_processors.state import SavedState
from tests.factories import make_event

CONFIG = CoreConfig.default()


class Crashing:
    """The real store; ``insert`` into ``table`` dies (before or after the rows landed)."""

    def __init__(self, store: ChdbStore, table: str, *, after: bool) -> None:
        self.store, self.table, self.after = store, table, after
        self.database = store.database

    def insert(self, table: str, rows: Sequence[Mapping[str, object]], **kw: Any) -> None:
        if table == self.table:
            if self.after:
                self.store.insert(table, rows, **kw)
            raise StoreError("the process died here (a test)")
        self.store.insert(table, rows, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _count(store: ChdbStore, sql: str) -> int:
    return int(store.query(sql.format(db=store.database))[0]["n"])


@pytest.mark.parametrize("after", [False, True], ids=["before-landing", "after-landing"])
def test_a_commit_cut_before_its_facts_landed_lands_them_once_on_restart(
    store: ChdbStore, tmp_path: Path, after: bool
) -> None:
    path = tmp_path / "state.sqlite"
    events = [make_event(EventType.IMPRESSION, i, person=f"p{i % 7}", site="d") for i in range(30)]
    first = EmbeddedPipeline(
        Crashing(store, "stage_reached", after=after),
        CONFIG,  # type: ignore[arg-type]
        saved=SavedState(path),
    )
    first.submit_all(events)
    with pytest.raises(StoreError):
        first.flush()
    first.saved.close()  # the process is gone; its committed state and outbox stay

    saved = SavedState(path)
    assert saved.pending()  # what the crash left committed, not landed
    second = EmbeddedPipeline(store, CONFIG, saved=saved)
    assert [second.submit(e) for e in events] == [False] * len(events)  # the clients' retries
    second.flush()
    assert _count(store, "SELECT count() AS n FROM {db}.events") == 30
    assert (
        _count(store, "SELECT sum(sign) AS n FROM {db}.stage_reached WHERE funnel = 'sales'") == 7
    )
    assert not saved.pending()


def test_state_ids_links_and_deadlines_survive_a_restart(store: ChdbStore, tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first = EmbeddedPipeline(store, CONFIG, saved=SavedState(path))
    first.submit(make_event(EventType.IMPRESSION, 0, person="dev", site="d"))
    first.submit(make_event(EventType.CLICK, 1000, person="dev", site="d", customer_id="c1"))
    first.flush()
    first.saved.close()

    saved = SavedState(path)
    second = EmbeddedPipeline(store, CONFIG, saved=saved)
    assert saved.alias("d:a:dev") == "d:c:c1"
    state = second.person("d:c:c1")
    assert state is not None
    assert state.profile.funnels["sales"].level == 2
    # the device's next event is the customer's, and its window's end is still due
    second.submit(make_event(EventType.LEAD, 2000, person="dev", site="d"))
    assert second.expire(10**15) == 1
    second.flush()
    rows = store.query(
        f"SELECT person_id, argMax(funnel_status['sales'], updated_at) AS s FROM "
        f"{store.database}.persons GROUP BY person_id HAVING person_id = 'c1'"
    )
    assert rows == [{"person_id": "c1", "s": "dropped"}]
    assert (
        _count(store, "SELECT sum(sign) AS n FROM {db}.stage_reached WHERE funnel = 'sales'") == 3
    )


class FailsOnce:
    """The real store; the ``nth`` insert into ``table`` fails (nothing of it lands)."""

    def __init__(self, store: ChdbStore, table: str, nth: int) -> None:
        self.store, self.table, self.left = store, table, nth
        self.database = store.database
        self.threads: set[str] = set()

    def insert(self, table: str, rows: Sequence[Mapping[str, object]], **kw: Any) -> None:
        self.threads.add(threading.current_thread().name.partition("_")[0])
        if table == self.table:
            self.left -= 1
            if self.left == 0:
                raise StoreError("the store was away (a test)")
        self.store.insert(table, rows, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_batches_landed_behind_processing_land_once_even_when_a_write_fails(
    store: ChdbStore,
) -> None:
    """A full batch lands in the landing thread while the next one is processed; a write it
    could not make surfaces at the next batch (or flush), and is retried with its token."""
    events = [
        make_event(EventType.IMPRESSION, i, person=f"p{i % 40}", site="b") for i in range(400)
    ]
    flaky = FailsOnce(store, "stage_reached", 2)
    pipeline = EmbeddedPipeline(flaky, CONFIG, batch_size=50)  # type: ignore[arg-type]
    failures = 0
    for event in events:
        try:
            pipeline.submit(event)
        except StoreError:
            failures += 1  # the client of this event would retry: it is a duplicate now
            assert not pipeline.submit(event)
    pipeline.flush()
    pipeline.close()
    assert failures == 1
    assert flaky.threads == {"funnel-lander", "MainThread"}  # behind, and the final flush
    assert not pipeline.saved.pending()
    assert _count(store, "SELECT count() AS n FROM {db}.events") == 400
    assert _count(store, "SELECT uniqExact(event_id) AS n FROM {db}.events") == 400
    assert (
        _count(store, "SELECT sum(sign) AS n FROM {db}.stage_reached WHERE funnel = 'sales'") == 40
    )

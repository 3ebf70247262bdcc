"""The sink (``funnel sink``): facts topics → ClickHouse, each offset range landed once.

Contract, per topic-partition:

* records are inserted in offset order, one insert per polled batch, into the table the
  topic names (:meth:`stream_processors.topics.TopicNames.table_of`);
* each insert carries ``insert_deduplication_token = "<topic>:<partition>:<first>:<last>"``;
* the offset after ``last`` is committed only after the store acknowledged the insert, so a
  crash between insert and commit replays a range the store has already seen, and ClickHouse
  drops the replay (the tables keep a deduplication window);
* when the store is unavailable the sink retries the same batch with backoff and commits
  nothing meanwhile; it never skips a batch.

Facts re-sent by the stream (a worker replays what it had not committed when it crashed or
lost a partition) carry the ``fact_id`` of their first copy. The sink remembers the ids it
landed within its horizon (:class:`LandedIds`: by default the last 24 hours, at most 2M ids),
reloads them from the tables when it starts, and drops a fact whose id it has landed. The
same memory covers its own crashes: a batch inserted but not committed comes back with ids
the restarted sink loaded, whatever range the replay polls. Rows without a ``fact_id`` are
only covered by the token.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from storage.backends import Store, StoreUnavailable
from stream_processors.topics import FACT_TABLES, TopicNames

__all__ = ["LandedIds", "Sink"]

log = logging.getLogger(__name__)


class LandedIds:
    """The fact ids landed recently: a set that forgets its oldest ids beyond ``max_ids``."""

    def __init__(self, max_ids: int = 2_000_000) -> None:
        self.max_ids = max_ids
        self._ids: dict[str, None] = {}  # insertion-ordered: the oldest first

    def __contains__(self, fact_id: object) -> bool:
        return fact_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add_all(self, fact_ids: Iterable[str]) -> None:
        ids = self._ids
        for fact_id in fact_ids:
            ids[fact_id] = None
        excess = len(ids) - self.max_ids
        if excess > 0:
            for old in list(itertools.islice(ids, excess)):
                del ids[old]


class Sink:
    """Consume the facts topics and insert them into ``store``, each fact once."""

    def __init__(
        self,
        store: Store,
        *,
        bootstrap_servers: str,
        group_id: str = "funnel-sink",
        topics: TopicNames | None = None,
        max_batch: int = 5000,
        poll_timeout_ms: int = 500,
        dedup_horizon: timedelta = timedelta(hours=24),
        max_landed_ids: int = 2_000_000,
    ) -> None:
        self.store = store
        self.names = topics or TopicNames()
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.rows_written = 0
        self.duplicates_dropped = 0
        self.landed = LandedIds(max_landed_ids)
        self._load_landed(dedup_horizon)
        self._consumer: Any = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            client_id="funnel-sink",
        )
        self._consumer.subscribe(self.names.all_facts)

    def poll_once(self) -> int:
        """Poll one batch, land it, commit it; return the number of rows written."""
        polled = self._consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_batch)
        written = 0
        for tp, records in polled.items():
            if records:
                written += self._land(tp, records)
        self.rows_written += written
        return written

    def _load_landed(self, horizon: timedelta) -> None:
        """Remember the fact ids landed within ``horizon`` (newest kept if over the bound)."""
        seconds = int(horizon.total_seconds())
        for table in FACT_TABLES:
            found = self.store.query(
                f"SELECT fact_id FROM {self.store.database}.{table} "
                f"WHERE fact_id != '' AND landed_at >= now64(3) - INTERVAL {seconds} SECOND "
                f"ORDER BY landed_at DESC LIMIT {self.landed.max_ids}"
            )
            self.landed.add_all(row["fact_id"] for row in reversed(found))

    def _fresh(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` without the facts already landed (or repeated within ``rows``)."""
        fresh, ids = [], set()
        for row in rows:
            fact_id = row.get("fact_id")
            if fact_id:
                if fact_id in self.landed or fact_id in ids:
                    continue
                ids.add(fact_id)
            fresh.append(row)
        self.duplicates_dropped += len(rows) - len(fresh)
        return fresh

    def _land(self, tp: TopicPartition, records: list[Any]) -> int:
        rows = self._fresh([json.loads(record.value) for record in records])
        first, last = records[0].offset, records[-1].offset
        token = f"{tp.topic}:{tp.partition}:{first}:{last}"
        table = self.names.table_of(tp.topic)
        delay = 0.5
        while rows:
            try:
                self.store.insert(table, rows, dedup_token=token)
                self.landed.add_all(str(row["fact_id"]) for row in rows if row.get("fact_id"))
                break
            except StoreUnavailable as exc:
                log.warning("store unavailable (%s); retrying %s in %.1f s", exc, token, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._consumer.commit({tp: OffsetAndMetadata(last + 1, "", -1)})
        return len(rows)

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Land batches until ``stop`` is set (or forever); closes the consumer at the end."""
        try:
            while stop is None or not stop.is_set():
                self.poll_once()
        finally:
            self.close()

    def close(self) -> None:
        self._consumer.close()

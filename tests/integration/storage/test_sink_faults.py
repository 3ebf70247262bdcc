"""The sink under faults, on the real broker and the embedded engine.

* ``funnel sink`` is killed (SIGKILL) at random points of a 200k-event run (~950k facts, in
  the records the Kafka worker sends: Arrow blocks and JSON rows), five times, and
  restarted; the tables end up holding exactly the facts produced.
* While the store refuses inserts the sink pauses its partitions, keeps its group
  membership, commits nothing, and lands everything once the store is back.
* A batch inserted but not committed is replayed with the same deduplication token, even by
  a sink that knows none of the landed fact ids.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from devtools.kafka_broker import KafkaBroker
from funnel.topics import TopicNames
from storage.backends import ChdbStore, Row, StoreUnavailable
from storage.sink import Backoff, Sink
from stream_processors.topics import create_topics
from tests.fact_traffic import FactRecord, fact_stream
from tests.servers import free_port

PARTITIONS = 4
#: ~92k simulated people → ~200k events → ~950k facts in ~220k records.
PERSONS = int(os.environ.get("FUNNEL_SINK_FAULT_PERSONS", "92000"))
#: Records per simulated person, about: spreads the kills over the whole run.
RECORDS_PER_PERSON = 2.4
#: Person-events records per worker batch: the facts of the block tables go as blocks then.
BATCH = 1000
KILLS = 5
SEED = 20261123


def produce(
    bootstrap: str,
    names: TopicNames,
    records: Iterable[FactRecord],
    sent: list[FactRecord] | None = None,
) -> None:
    """Send ``records`` to their facts topics (appending each to ``sent``), then flush."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks="all"
    )
    pending: list[Any] = []
    try:
        for record in records:
            topic = names.facts(record.table)
            headers = list(record.headers)
            pending.append(producer.send(topic, record.value, key=record.key, headers=headers))
            if sent is not None:
                sent.append(record)
            if len(pending) >= 50_000:
                _delivered(producer, pending)
        _delivered(producer, pending)
    finally:
        producer.close()


def _delivered(producer: KafkaProducer, pending: list[Any]) -> None:
    """Flush, and fail unless the broker acknowledged every record (the truth is what it
    holds: a record whose delivery failed would be counted as lost by the sink)."""
    producer.flush()
    for future in pending:
        future.get(timeout=0)  # raises the delivery error, if any
    pending.clear()


class Progress:
    """The group's committed offsets, summed over the facts topics (one open consumer)."""

    def __init__(
        self, bootstrap: str, group: str, names: TopicNames, partitions: int = PARTITIONS
    ) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self.partitions = [TopicPartition(t, p) for t in names.all_facts for p in range(partitions)]

    def committed(self) -> int:
        return sum(self._consumer.committed(tp) or 0 for tp in self.partitions)

    def end(self) -> int:
        return sum(self._consumer.end_offsets(self.partitions).values())

    def close(self) -> None:
        self._consumer.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def read_tables(store_dir: Path) -> dict[str, list[list[str]]]:
    """The landed rows, read by another process (chDB: one data directory per process)."""
    script = (
        "import json, sys\n"
        "from storage.backends import ChdbStore\n"
        "s = ChdbStore(sys.argv[1], 'funnel')\n"
        "out = {}\n"
        "for t in ('events', 'stage_reached', 'attributions', 'lead_changes'):\n"
        "    out[t] = [[r['fact_id'], r['person_id']] for r in s.query("
        "f'SELECT fact_id, person_id FROM funnel.{t}')]\n"
        "out['persons'] = [[r['person_id'], r['at']] for r in s.query("
        "'SELECT person_id, toString(updated_at) AS at FROM funnel.persons FINAL')]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(store_dir)],
        capture_output=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def truth_of(facts: Sequence[FactRecord]) -> dict[str, Any]:
    rows: dict[str, list[list[str]]] = defaultdict(list)
    latest: dict[str, str] = {}
    for record in facts:
        if record.table == "persons":
            row = record.row
            updated = datetime.fromisoformat(str(row["updated_at"])).astimezone(UTC)
            at = f"{updated:%Y-%m-%d %H:%M:%S}.{updated.microsecond // 1000:03d}"
            person = str(row["person_id"])
            latest[person] = max(latest.get(person, at), at)
        else:
            ids, persons = record.columns("fact_id", "person_id")
            rows[record.table].extend([str(f), str(p)] for f, p in zip(ids, persons, strict=True))
    return {**rows, "persons": latest}


def assert_landed_exactly(
    landed: dict[str, list[list[str]]], truth: dict[str, Any], log: Path | None = None
) -> None:
    for table in ("events", "stage_reached", "attributions", "lead_changes"):
        ids = Counter(fact_id for fact_id, _ in landed[table])
        twice = [i for i, n in ids.items() if n > 1]
        assert not twice, f"{table}: {len(twice)} facts landed twice, e.g. {twice[:3]}"
        got, want = set(map(tuple, landed[table])), set(map(tuple, truth[table]))
        if got != want:  # say what differs, briefly: a full diff of ~1M rows is unreadable
            missing, extra = sorted(want - got), sorted(got - want)
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(
                f"{table}: {len(missing)} facts missing (e.g. {missing[:5]}, ..., "
                f"{missing[-3:]}), {len(extra)} not produced (e.g. {extra[:5]});"
                f" the sinks' log ends with:\n{tail}"
            )
    # persons is a ReplacingMergeTree: each person's latest row is what it guarantees.
    assert dict(map(tuple, landed["persons"])) == truth["persons"]


@pytest.fixture
def sink_processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "sink.log").open("ab")

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "funnel.cli", "sink", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.close()


def test_sink_killed_at_random_points_lands_every_fact_once(
    kafka_bootstrap: str,
    tmp_path: Path,
    sink_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    names = TopicNames(f"kill{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, PARTITIONS)
    store_dir = tmp_path / "store"
    args = (
        "--kafka", kafka_bootstrap, "--store", f"chdb://{store_dir}", "--group", group,
        "--topic-prefix", names.prefix, "--instance-id", "sink-1",
    )  # fmt: skip
    # The facts are computed while they are produced and consumed: the run is one pass.
    facts: list[FactRecord] = []
    generated = fact_stream(PERSONS, seed=SEED, partitions=PARTITIONS, blocks=BATCH)
    producer = threading.Thread(
        target=produce, args=(kafka_bootstrap, names, generated, facts), daemon=True
    )
    producer.start()
    progress = Progress(kafka_bootstrap, group, names)
    rng = random.Random(SEED)
    try:
        for kill in range(KILLS):
            proc = sink_processes(*args)
            # A random point ahead: after this sink has committed some thousands more rows.
            expected = int(PERSONS * RECORDS_PER_PERSON)
            target = progress.committed() + rng.randint(expected // 40, expected // 8)
            wait_for(
                lambda: progress.committed() >= target or proc.poll() is not None,  # noqa: B023
                240,
                f"the sink to commit {target} (kill {kill + 1})",
            )
            assert proc.poll() is None, "the sink ended by itself"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        producer.join(timeout=600)
        assert not producer.is_alive()
        assert progress.committed() < len(facts), "every kill came before the end"
        final = sink_processes(*args)
        wait_for(lambda: progress.committed() >= progress.end(), 300, "the last sink")
        final.send_signal(signal.SIGTERM)
        final.wait(timeout=30)
    finally:
        progress.close()
    truth = truth_of(facts)
    events = len(truth["events"])
    assert events >= 200_000 or PERSONS < 92_000, f"a 200k-event run, not {events}"
    assert_landed_exactly(read_tables(store_dir), truth, tmp_path / "sink.log")


class FlakyStore:
    """The real embedded store, unavailable while ``down`` is set (as a server restarting)."""

    def __init__(self, store: ChdbStore) -> None:
        self.store = store
        self.database = store.database
        self.down = threading.Event()
        self.refused = 0
        self.crash_after_insert = False

    def execute(self, sql: str, params: Any = None) -> None:
        self.store.execute(sql, params)

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return self.store.query(sql, params)

    def insert(self, table: str, rows: Sequence[Row], *, dedup_token: str | None = None) -> None:
        if self.down.is_set():
            self.refused += 1
            raise StoreUnavailable("the store is down (test)")
        self.store.insert(table, rows, dedup_token=dedup_token)
        if self.crash_after_insert:
            raise SystemExit("crashed after the insert, before the commit (test)")

    def close(self) -> None:
        pass


def lead_changes(numbers: range) -> list[FactRecord]:
    return [
        FactRecord(
            "lead_changes",
            f"p{n}".encode(),
            json.dumps(
                {
                    "fact_id": f"0:{n}:0",
                    "site_id": "s",
                    "person_id": f"p{n}",
                    "customer_id": "",
                    "temperature": "warm",
                    "previous": "cold",
                    "queue": "sales",
                    "changed_at": "2026-10-01T10:00:00Z",
                    "manager_id": "",
                }
            ).encode(),
        )
        for n in numbers
    ]


def landed_ids(store: ChdbStore) -> Counter[str]:
    rows = store.query(f"SELECT fact_id FROM {store.database}.lead_changes")
    return Counter(str(r["fact_id"]) for r in rows)


def test_sink_pauses_while_the_store_is_down_and_resumes_without_loss(
    kafka_bootstrap: str, store: ChdbStore
) -> None:
    names = TopicNames(f"pause{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, 2)
    produce(kafka_bootstrap, names, lead_changes(range(3000)))
    flaky = FlakyStore(store)
    flaky.down.set()
    sink = Sink(
        flaky,  # type: ignore[arg-type]  # a Store by its methods
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        topics=names,
        max_rows=1000,
        max_age_s=0.2,
        poll_timeout_ms=100,
        backoff=Backoff(initial_s=0.1, max_s=0.4),
        # A member that stops polling for 3 s leaves the group: the outage outlasts that.
        consumer_config={
            "max_poll_interval_ms": 3000,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
    )
    progress = Progress(kafka_bootstrap, group, names, 2)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: sink.paused and flaky.refused >= 3, 60, "the sink to hold back")
        held = len(sink.batches)
        produce(kafka_bootstrap, names, lead_changes(range(3000, 6000)))
        started_at = time.monotonic()
        refused = flaky.refused
        # Outlast max_poll_interval_ms while refusing, counted in refusals (0.4 s apart).
        wait_for(lambda: flaky.refused >= refused + 10, 60, "more refusals")
        assert time.monotonic() - started_at > 3.0
        assert progress.committed() == 0
        assert len(sink.batches) == held, "a paused sink fetches nothing more"
        assert sink.rebalances == 1, "the sink kept its group membership"
        flaky.down.clear()
        wait_for(lambda: progress.committed() >= progress.end(), 60, "the sink to catch up")
    finally:
        stop.set()
        thread.join(timeout=30)
        progress.close()
    assert not sink.paused
    ids = landed_ids(store)
    assert len(ids) == 6000
    assert set(ids.values()) == {1}


def test_a_batch_landed_but_not_committed_is_replayed_with_the_same_token(
    kafka_bootstrap: str, store: ChdbStore
) -> None:
    names = TopicNames(f"replay{uuid.uuid4().hex[:8]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, names, 1)
    produce(kafka_bootstrap, names, lead_changes(range(2500)))
    flaky = FlakyStore(store)
    flaky.crash_after_insert = True

    def sink(max_rows: int) -> Sink:
        return Sink(
            flaky,  # type: ignore[arg-type]  # a Store by its methods
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            topics=names,
            max_rows=max_rows,
        )

    first = sink(1000)
    with pytest.raises(SystemExit):
        first.run_forever()  # lands one batch of 1000, dies before committing it
    assert sum(landed_ids(store).values()) == 1000
    flaky.crash_after_insert = False
    # Other batch sizes now: the plan recorded with the offsets cuts the replay the same.
    second = sink(700)
    assert len(second.landed) == 0
    progress = Progress(kafka_bootstrap, group, names, 1)
    stop = threading.Event()
    thread = threading.Thread(target=second.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: progress.committed() >= 2500, 60, "the second sink")
    finally:
        stop.set()
        thread.join(timeout=30)
        progress.close()
    ids = landed_ids(store)
    assert len(ids) == 2500
    assert set(ids.values()) == {1}


def _restartable_sink(
    store: Any, bootstrap: str, group: str, names: TopicNames, *, max_rows: int
) -> Sink:
    """A sink of small, quick batches on a broker the test stops and starts: its requests
    give up after 5 s, so that it notices the broker away soon."""
    return Sink(
        store,
        bootstrap_servers=bootstrap,
        group_id=group,
        topics=names,
        max_rows=max_rows,
        max_age_s=0.2,
        poll_timeout_ms=100,
        consumer_config={"request_timeout_ms": 5000, "retry_backoff_ms": 100},
    )


def test_a_broker_away_as_the_sink_takes_partitions_back_is_waited_out(
    store: ChdbStore, tmp_path: Path
) -> None:
    """A rebalance (a broker restart causes one) assigns the partitions again, and the sink
    asks for their committed offsets; or the group is joined again in the poll. Should the
    broker go away just then, the sink waits for it instead of exiting (the fault table's
    broker row ended the sink so, once at each place)."""
    names = TopicNames(f"away{uuid.uuid4().hex[:6]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    broker = KafkaBroker(port=free_port(), data_dir=tmp_path / "kafka")
    bootstrap = broker.start()
    try:
        create_topics(bootstrap, names, 2)
        produce(bootstrap, names, lead_changes(range(400)))
        sink = _restartable_sink(store, bootstrap, group, names, max_rows=100)
        try:
            wait_for(lambda: sink.poll_once() >= 0 and sink.rows_written > 0, 60, "a batch")
            broker.stop()
            # What the group's rebalance listener does when partitions are assigned again.
            sink._on_assigned(sink._consumer.assignment())
            for _ in range(2):  # polls with the broker away: none may raise
                sink.poll_once()
            # And the group to be joined again with its coordinator unknown, as after a
            # restart: the client looks for the coordinator in the poll.
            sink._consumer._coordinator.coordinator_dead("the broker restarted (test)")
            sink._consumer._coordinator.request_rejoin()
            sink.poll_once()
            broker.start()  # same port, same data
            wait_for(
                lambda: sink.poll_once() >= 0 and sum(landed_ids(store).values()) >= 400,
                120,
                "every fact",
            )
        finally:
            sink.close()
    finally:
        broker.stop()
    ids = landed_ids(store)
    assert set(ids) == {f"0:{n}:0" for n in range(400)}
    assert max(ids.values()) == 1


class _BrokerGoesAfterInsert:
    """The store, except that the broker goes away right after the first insert: the commit
    that follows the insert fails, as when a broker restart falls between the two."""

    def __init__(self, store: ChdbStore, broker: KafkaBroker) -> None:
        self._store, self._broker, self.struck = store, broker, False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name != "insert":
            return attribute

        def insert(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if not self.struck:
                self.struck = True
                self._broker.stop()
            return result

        return insert


def test_a_commit_lost_to_a_broker_restart_after_the_insert_is_made_again(
    store: ChdbStore, tmp_path: Path
) -> None:
    """The sink landed a batch and the broker went away before its offset was committed. No
    new record comes to that partition, and no rebalance: the sink must still commit what it
    landed once the broker is back, or its group stays a record short for good (the fault
    table's broker row found the group one record behind, the record in the store)."""
    names = TopicNames(f"commit{uuid.uuid4().hex[:6]}.")
    group = f"sink-{uuid.uuid4().hex[:8]}"
    broker = KafkaBroker(port=free_port(), data_dir=tmp_path / "kafka")
    bootstrap = broker.start()
    try:
        create_topics(bootstrap, names, 1)
        produce(bootstrap, names, lead_changes(range(50)))
        failing = _BrokerGoesAfterInsert(store, broker)
        sink = _restartable_sink(failing, bootstrap, group, names, max_rows=1000)
        try:
            wait_for(lambda: sink.poll_once() >= 0 and failing.struck, 60, "the first insert")
            broker.start()  # same port, same data
            ids = landed_ids(store)
            assert set(ids) == {f"0:{n}:0" for n in range(50)}, "the batch landed"
            progress = Progress(bootstrap, group, names, partitions=1)
            try:
                wait_for(
                    lambda: sink.poll_once() >= 0 and progress.committed() == 50,
                    60,
                    "the landed batch's offset committed",
                )
            finally:
                progress.close()
        finally:
            sink.close()
    finally:
        broker.stop()
    assert max(landed_ids(store).values()) == 1

"""Erasing a person from the stream (Kafka mode): the workers' state, and tombstones.

``funnel forget`` with ``--kafka`` does, before it erases the store's rows
(:func:`storage.forget.erase`):

1. :func:`send_commands`: a ``forget`` command on ``person-events`` for each of the person's
   keys (the customer and every device), to the partition of that key, whose worker holds
   the person's state; and an ``unlink`` command for each device, to the partition of its
   ``events`` key, whose worker holds the device's link to the customer (the route stage's
   table: events and person-events have as many partitions and are assigned together, so
   the persons stage of that partition erases it). The worker deletes each entry, which
   writes a tombstone to the table's changelog, and sends a tombstone for the person's
   compacted ``facts.persons`` record.
2. :func:`wait_for_tombstones`: those tombstones on ``facts.persons`` are the workers'
   receipt. Nothing of the person comes after them (an event of theirs arriving later starts
   a new person, as a visitor who comes back would).
3. :func:`wait_for_sink`: the sink's group has committed every facts record up to then, so
   every row the person left is in the store when the store's rows are erased.

What stays, and why: the person's records in the ``events`` and ``rejected`` topics (not
compacted: Kafka cannot delete single records from them) until the topics' retention
(``retention.ms``) drops them; size that retention to the erasure deadline you must meet.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from funnel.identity import customer_key, device_key, person_id_of
from funnel.topics import TopicNames
from storage.backends import Store
from storage.forget import Erasure, Subject, erase, find_subject
from stream_processors.topics import partition_of

__all__ = ["StreamErasure", "StreamTimeout", "erase_person", "forget_in_stream", "sink_caught_up"]


class StreamTimeout(TimeoutError):
    """The workers or the sink did not do their part in time (are they running?)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command on ``person-events``: its key, kind and the ``facts.persons`` key of the
    tombstone the worker answers with."""

    key: str
    kind: str  # "forget" (a person's state) or "unlink" (a device's link)
    tombstone: str


@dataclass(frozen=True, slots=True)
class StreamErasure:
    """What the stream erased: person states and device links (entries asked for; a worker
    that held none for a key deletes nothing), and the tombstones it sent."""

    states: int
    links: int
    tombstones: int


def commands(subject: Subject) -> list[Command]:
    """The commands that erase ``subject`` from the workers' tables."""
    site = subject.site_id
    keys = sorted(
        [customer_key(site, c) for c in subject.customer_ids]
        + [device_key(site, a) for a in subject.anonymous_ids]
    )
    forget = [Command(k, "forget", f"{site}:{person_id_of(k)}") for k in keys]
    # The route stage keeps a device's link under the events record's key, site:<device>.
    devices = sorted(subject.anonymous_ids)
    unlink = [Command(f"{site}:{a}", "unlink", f"{site}:{a}") for a in devices]
    return forget + unlink


def erase_person(
    store: Store,
    bootstrap: str,
    names: TopicNames,
    site_id: str,
    *,
    customer: str | None = None,
    anonymous: str | None = None,
    requested_by: str,
    at: datetime,
    sink_group: str,
    timeout_s: float,
    own_sink: bool = False,
) -> tuple[Subject, Erasure, StreamErasure]:
    """``funnel forget`` in Kafka mode: the sink catches up (every device of the person is
    in the store), the person is found, erased from the workers, then from the store.

    With ``own_sink`` (an embedded store: one process owns it, so its ``funnel sink`` is
    stopped first), this process lands the facts meanwhile, as a member of the sink's group;
    otherwise the running sink does."""
    require_topics(bootstrap, names)  # before a sink of ours subscribes (and creates them)
    with _landing(store, bootstrap, names, sink_group, own_sink):
        sink_caught_up(bootstrap, names, sink_group, timeout_s)
        subject = find_subject(store, site_id, customer=customer, anonymous=anonymous)
        stream = forget_in_stream(
            bootstrap, names, subject, sink_group=sink_group, timeout_s=timeout_s
        )
    state = {"kafka:person-state": stream.states, "kafka:device-links": stream.links}
    return subject, erase(store, subject, requested_by=requested_by, at=at, state=state), stream


def _landing(
    store: Store, bootstrap: str, names: TopicNames, group: str, own: bool
) -> contextlib.AbstractContextManager[None]:
    """With ``own``: a sink of ``group`` landing facts in ``store`` meanwhile."""
    if not own:
        return contextlib.nullcontext()
    from storage.sink import Sink

    return Sink(store, bootstrap_servers=bootstrap, group_id=group, topics=names).running()


def require_topics(bootstrap: str, names: TopicNames) -> None:
    """Raise :class:`StreamTimeout` unless person-events and every facts topic exist."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        for topic in (names.person_events, *names.all_facts):
            _partitions(consumer, topic)
    finally:
        consumer.close()


def sink_caught_up(bootstrap: str, names: TopicNames, group: str, timeout_s: float) -> None:
    """Wait until the sink landed every facts record written until now (or raise)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        wait_for_sink(consumer, names, group, time.monotonic() + timeout_s)
    finally:
        consumer.close()


def forget_in_stream(
    bootstrap: str, names: TopicNames, subject: Subject, *, sink_group: str, timeout_s: float
) -> StreamErasure:
    """Erase ``subject`` from the workers (steps 1-3 of the module's description)."""
    todo = commands(subject)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        persons = _partitions(consumer, names.facts("persons"))
        start = consumer.end_offsets(persons)
        send_commands(bootstrap, names, todo, _count(consumer, names.person_events))
        seen = wait_for_tombstones(consumer, start, todo, time.monotonic() + timeout_s)
        wait_for_sink(consumer, names, sink_group, time.monotonic() + timeout_s)
    finally:
        consumer.close()
    kinds = Counter(c.kind for c in todo)
    return StreamErasure(kinds["forget"], kinds["unlink"], seen)


def send_commands(bootstrap: str, names: TopicNames, todo: list[Command], partitions: int) -> None:
    """Send ``todo`` (acknowledged by every replica) each to the partition of its key."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="funnel-forget")
    try:
        futures = [
            producer.send(
                names.person_events,
                key=c.key.encode(),
                value=json.dumps({"kind": c.kind}).encode(),
                partition=partition_of(c.key.encode(), partitions),
            )
            for c in todo
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def wait_for_tombstones(
    consumer: KafkaConsumer, start: dict[TopicPartition, int], todo: list[Command], deadline: float
) -> int:
    """Read ``facts.persons`` from ``start`` until a tombstone for every command came."""
    wanted = Counter(c.tombstone.encode() for c in todo)
    consumer.assign(list(start))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    seen: Counter[bytes] = Counter()
    while wanted - seen:
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(k.decode() for k in wanted - seen))
            raise StreamTimeout(
                f"no worker confirmed the erasure of {missing}: is `funnel worker` running "
                "(with this --topic-prefix)? Run the command again once it is: it is idempotent"
            )
        for records in consumer.poll(timeout_ms=500).values():
            seen.update(r.key for r in records if r.value is None and r.key in wanted)
    consumer.unsubscribe()
    return sum(seen.values())


def wait_for_sink(consumer: KafkaConsumer, names: TopicNames, group: str, deadline: float) -> None:
    """Wait until ``group`` committed every facts record written until now."""
    partitions = [tp for topic in names.landed for tp in _partitions(consumer, topic)]
    ends = consumer.end_offsets(partitions)
    watcher = KafkaConsumer(bootstrap_servers=bootstrap_of(consumer), group_id=group)
    try:
        while True:
            behind = {
                tp: end for tp, end in ends.items() if end and (watcher.committed(tp) or 0) < end
            }
            if not behind:
                return
            if time.monotonic() > deadline:
                raise StreamTimeout(
                    f"the sink (group {group!r}) has not landed the person's last facts "
                    f"({len(behind)} partition(s) behind): is `funnel sink` running? Run the "
                    "command again once it is: it is idempotent"
                )
            time.sleep(0.5)  # polls a commit position another process moves
    finally:
        watcher.close()


def bootstrap_of(consumer: KafkaConsumer) -> str:
    servers = consumer.config["bootstrap_servers"]
    return servers if isinstance(servers, str) else ",".join(servers)


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    # Asked among all topics first: the metadata of one named topic would create it on a
    # broker that creates topics on first use.
    known = consumer.partitions_for_topic(topic) if topic in consumer.topics() else None
    if not known:
        raise StreamTimeout(f"topic {topic!r} does not exist: check --kafka and --topic-prefix")
    return [TopicPartition(topic, p) for p in sorted(known)]


def _count(consumer: KafkaConsumer, topic: str) -> int:
    return len(_partitions(consumer, topic))

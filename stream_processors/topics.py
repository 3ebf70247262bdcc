"""Topic names: the events topic in, one facts topic per ClickHouse table out.

Names are configurable by prefix (``--topic-prefix`` / ``FUNNEL_TOPIC_PREFIX``); the facts
topic of a table is ``<prefix>facts.<table>``, so the sink can tell a record's table from its
topic alone. The outputs other systems read:

* ``<prefix>facts.stage_reached``, ``<prefix>facts.attributions`` — funnel and credit facts;
* ``<prefix>facts.lead_changes`` — the **leads** topic: every temperature change with its
  routing queue, keyed by person, for a CRM;
* ``<prefix>facts.persons`` — every person's current row, keyed by person and **compacted**
  (the latest row per person is kept);
* ``<prefix>rejected`` — rejected events with their reasons.

Partition counts are set when the topics are created (``--partitions``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

from kafka.partitioner.default import murmur2

from funnel.facts import FACT_TABLES

__all__ = ["FACT_TABLES", "TopicNames", "create_topics", "partition_of"]


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic the pipeline uses, derived from one prefix."""

    prefix: str = "funnel."

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def rejected(self) -> str:
        return f"{self.prefix}rejected"

    @property
    def person_events(self) -> str:
        """Internal: events and identity commands, keyed by person (the repartition topic)."""
        return f"{self.prefix}person-events"

    def facts(self, table: str) -> str:
        return f"{self.prefix}facts.{table}"

    @property
    def leads(self) -> str:
        """Lead temperature changes with their routing queue (the ``lead_changes`` facts)."""
        return self.facts("lead_changes")

    @property
    def persons(self) -> str:
        """Every person's latest row, compacted by person."""
        return self.facts("persons")

    def table_of(self, topic: str) -> str:
        """The table a facts topic feeds (inverse of :meth:`facts`)."""
        marker = f"{self.prefix}facts."
        if not topic.startswith(marker):
            raise ValueError(f"{topic!r} is not a facts topic")
        return topic[len(marker) :]

    @property
    def all_facts(self) -> list[str]:
        return [self.facts(t) for t in FACT_TABLES]


@lru_cache(maxsize=65_536)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key``: murmur2, as the Java client,
    kafka-python and aiokafka (Faust) place keyed records. Remembered per key: murmur2 is
    pure Python in kafka-python, and keys repeat (a visitor's batch, a person's records)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


_COMPACTED = {"cleanup.policy": "compact"}


def create_topics(bootstrap_servers: str, names: TopicNames, partitions: int) -> list[str]:
    """Create the events, rejected and facts topics with ``partitions`` partitions.

    Idempotent: topics that exist are left as they are. Returns the names created. The
    persons topic is compacted (its records are keyed by person). Creating
    them up front matters: a producer that writes first would auto-create the events topic
    with the broker's default partition count.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = [names.events, names.rejected, names.person_events, *names.all_facts]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="funnel-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # Another process may create them meanwhile: that is as good.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            t,
                            num_partitions=partitions,
                            replication_factor=1,
                            topic_configs=_COMPACTED if t == names.persons else {},
                        )
                        for t in missing
                    ]
                )
        return missing
    finally:
        admin.close()

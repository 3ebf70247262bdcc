"""Kafka's side of the topics: creating them, and the partition a key lands on.

The names themselves are pure and live in the core (:mod:`funnel.topics`). Partition counts
are set when the topics are created (``--partitions``).
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

from kafka.partitioner.default import murmur2

from funnel.topics import TopicNames

__all__ = ["create_topics", "partition_of"]


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

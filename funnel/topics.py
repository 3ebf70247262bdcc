"""Topic names: the events topic in, one facts topic per ClickHouse table out (pure: the
sink, the worker, the collector and the CLI derive every name from here).

Names are configurable by prefix (``--topic-prefix`` / ``FUNNEL_TOPIC_PREFIX``, default
:data:`DEFAULT_PREFIX`); the facts topic of a table is ``<prefix>facts.<table>``, so the sink
can tell a record's table from its topic alone. The outputs other systems read:

* ``<prefix>facts.stage_reached``, ``<prefix>facts.attributions`` — funnel and credit facts;
* ``<prefix>facts.lead_changes`` — the **leads** topic: every temperature change with its
  routing queue, keyed by person, for a CRM;
* ``<prefix>facts.persons`` — every person's current row, keyed by person and **compacted**
  (the latest row per person is kept);
* ``<prefix>rejected`` — rejected events with their reasons (the sink lands them in
  ``rejected_events``).

Creating the topics and placing keys on partitions are Kafka's business
(:mod:`stream_processors.topics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from funnel.facts import FACT_TABLES
from funnel.settings import DEFAULT_TOPIC_PREFIX

__all__ = ["DEFAULT_PREFIX", "FACT_TABLES", "REJECTED_TABLE", "TopicNames"]

DEFAULT_PREFIX: Final = DEFAULT_TOPIC_PREFIX
REJECTED_TABLE: Final = "rejected_events"


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic the pipeline uses, derived from one prefix."""

    prefix: str = DEFAULT_PREFIX

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
        """The table a topic the sink lands feeds (:attr:`landed`; a facts topic: the
        inverse of :meth:`facts`)."""
        if topic == self.rejected:
            return REJECTED_TABLE
        marker = f"{self.prefix}facts."
        if not topic.startswith(marker):
            raise ValueError(f"{topic!r} is not a facts topic")
        return topic[len(marker) :]

    @property
    def all_facts(self) -> list[str]:
        return [self.facts(t) for t in FACT_TABLES]

    @property
    def landed(self) -> list[str]:
        """The topics the sink lands in the store: every facts topic, and the dead letters
        (``rejected`` → ``rejected_events``)."""
        return [*self.all_facts, self.rejected]

"""Topic names: the events topic in, one facts topic per ClickHouse table out.

Names are configurable by prefix; the facts topic of a table is ``<prefix>facts.<table>``, so
the sink can tell a record's table from its topic alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from funnel.facts import EventRow, StageReached

__all__ = ["FACT_TABLES", "TopicNames"]

#: The ClickHouse tables the stream produces facts for, in the order the sink writes them.
FACT_TABLES: tuple[str, ...] = (EventRow.table, StageReached.table)


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

    def facts(self, table: str) -> str:
        return f"{self.prefix}facts.{table}"

    def table_of(self, topic: str) -> str:
        """The table a facts topic feeds (inverse of :meth:`facts`)."""
        marker = f"{self.prefix}facts."
        if not topic.startswith(marker):
            raise ValueError(f"{topic!r} is not a facts topic")
        return topic[len(marker) :]

    @property
    def all_facts(self) -> list[str]:
        return [self.facts(t) for t in FACT_TABLES]

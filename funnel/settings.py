"""The defaults every process shares, in one place (the CLI, the collector, the worker, the
sink and the stores read them from here; a flag or a ``FUNNEL_*`` variable overrides each).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

__all__ = [
    "DEDUP_HORIZON",
    "DEFAULT_DATABASE",
    "DEFAULT_KAFKA",
    "DEFAULT_PARTITIONS",
    "DEFAULT_STORE",
    "DEFAULT_TOPIC_PREFIX",
]

#: The embedded store in the working directory (``--store`` / ``FUNNEL_STORE``).
DEFAULT_STORE: Final = "chdb://./.funnel"
#: The ClickHouse database (``--database`` / ``FUNNEL_DATABASE``).
DEFAULT_DATABASE: Final = "funnel"
#: A local broker, as ``funnel dev kafka --port 9092`` starts it (``--kafka`` / ``FUNNEL_KAFKA``).
DEFAULT_KAFKA: Final = "127.0.0.1:9092"
#: Every topic's name starts with it (``--topic-prefix`` / ``FUNNEL_TOPIC_PREFIX``).
DEFAULT_TOPIC_PREFIX: Final = "funnel."
#: Partitions of the topics the pipeline creates (``--partitions``).
DEFAULT_PARTITIONS: Final = 4
#: How long an id is remembered to recognise a copy: an event id in a person's state (by event
#: time), and a fact id the sink landed (by landing time).
DEDUP_HORIZON: Final = timedelta(days=7)

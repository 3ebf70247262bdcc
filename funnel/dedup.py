"""Deduplication by event id within a time horizon (client retries, redelivered records).

:class:`RecentIds` is the value a stream keeps per key: the ids it has seen with their event
times, pruned to the horizon behind the newest one. It serialises to JSON for a table.
:class:`BoundedIds` is a set of the most recent ids, up to a count: the ids the sink landed,
and the event ids the embedded runner applied, across persons.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import datetime, timedelta

__all__ = ["BoundedIds", "RecentIds"]


class RecentIds:
    """Event ids recently routed for one key, with their times (the dedup table's value)."""

    def __init__(self, ids: dict[str, float]) -> None:
        self.ids = ids

    @classmethod
    def load(cls, raw: bytes | None) -> RecentIds:
        return cls(json.loads(raw) if raw else {})

    def add(self, event_id: str, at: datetime, horizon: timedelta) -> bool:
        """Remember ``event_id``; ``False`` if it was seen within ``horizon``."""
        if event_id in self.ids:
            return False
        self.ids[event_id] = at.timestamp()
        if len(self.ids) > 64:  # prune now and then, not on every event
            cutoff = max(self.ids.values()) - horizon.total_seconds()
            self.ids = {e: t for e, t in self.ids.items() if t >= cutoff}
        return True

    def dump(self) -> bytes:
        return json.dumps(self.ids).encode()


class BoundedIds:
    """The ids added recently: a set that forgets its oldest ids beyond ``max_ids``."""

    def __init__(self, max_ids: int = 2_000_000) -> None:
        self.max_ids = max_ids
        self._ids: dict[str, None] = {}  # insertion-ordered: the oldest first

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: str) -> bool:
        """Remember ``item``; ``False`` if it is remembered already."""
        if item in self._ids:
            return False
        self.add_all((item,))
        return True

    def add_all(self, items: Iterable[str]) -> None:
        ids = self._ids
        ids.update(dict.fromkeys(items))
        excess = len(ids) - self.max_ids
        if excess > 0:
            for old in list(itertools.islice(ids, excess)):
                del ids[old]

    def discard_prefix(self, prefix: str) -> None:
        """Forget every id starting with ``prefix``."""
        self._ids = {k: None for k in self._ids if not k.startswith(prefix)}

"""Deduplication by event id within a time horizon (client retries, redelivered records).

:class:`RecentIds` is the value a stream keeps per key: the ids it has seen with their event
times, pruned to the horizon behind the newest one. It serialises to JSON for a table.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

__all__ = ["RecentIds"]


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

"""Deduplication by id: :class:`BoundedIds` is a set of the most recent ids, up to a count —
the ids the sink landed, and the event ids the embedded runner applied, across persons. (A
person's own applied ids, within the dedup horizon, are in their state:
:attr:`funnel.processor.PersonState.seen`.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

__all__ = ["BoundedIds"]


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

    def discard(self, items: Iterable[str]) -> None:
        """Forget these ids."""
        for item in items:
            self._ids.pop(item, None)

    def discard_prefix(self, prefix: str) -> None:
        """Forget every id starting with ``prefix``."""
        self._ids = {k: None for k in self._ids if not k.startswith(prefix)}

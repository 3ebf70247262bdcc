"""Commits into the embedded store and reads of it take turns: a read sees whole commits.

The process that owns the embedded store (``funnel serve``) commits the facts of each group
of requests (:class:`stream_processors.embedded.GatedPipeline`) and answers reports
(:mod:`storage.reports.api`) from the same store; both go through one :class:`CommitGate`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CommitGate"]


class CommitGate:
    """Commits into the store and report reads take turns: a read sees whole commits only.

    ``version`` counts commits; it changes only under the gate.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version = 0

    @contextmanager
    def commit(self) -> Iterator[None]:
        with self._lock:
            yield
            self.version += 1

    @contextmanager
    def read(self) -> Iterator[int]:
        """Hold off commits; yields the version the read sees."""
        with self._lock:
            yield self.version

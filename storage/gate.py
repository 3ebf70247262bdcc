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

    Ingestion goes first: a commit waits only for the read or commit under way, never for
    reads that came before it, and a read waits while any commit does (a flood of reports
    delays reports, not acknowledgements). ``version`` counts commits; it changes only under
    the gate.
    """

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._busy = False
        self._commits_waiting = 0
        self._reads_waiting = 0
        self.version = 0

    @contextmanager
    def commit(self) -> Iterator[None]:
        with self._turns:
            self._commits_waiting += 1
            try:
                while self._busy:
                    self._turns.wait()
            finally:
                self._commits_waiting -= 1
            self._busy = True
        try:
            yield
            self.version += 1
        finally:
            self._release()

    @contextmanager
    def read(self) -> Iterator[int]:
        """Hold off commits; yields the version the read sees."""
        with self._turns:
            self._reads_waiting += 1
            try:
                while self._busy or self._commits_waiting:
                    self._turns.wait()
            finally:
                self._reads_waiting -= 1
            self._busy = True
        try:
            yield self.version
        finally:
            self._release()

    def _release(self) -> None:
        with self._turns:
            self._busy = False
            self._turns.notify_all()

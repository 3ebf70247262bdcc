"""Poison isolation: land a batch except the rows the store refuses on their own.

Validation at the edge (:mod:`funnel.events`) keeps values the tables cannot hold out of the
pipeline; this is the net under it (DESIGN §9a: "a row the store refuses goes to the
dead-letter path with its reason while the rest lands; one bad value never blocks other
events or sites"). Used by the embedded runner and the Kafka sink alike.

:func:`insert_isolating` inserts the batch; when the store refuses it *for its data*
(:attr:`storage.backends.StoreError.refuses_data`: a value out of range, a constraint, a block
over a limit such as too many partitions), it splits the batch in halves and inserts each,
down to single rows. A row refused alone is poison and is returned with the store's reason;
every other row lands. A block-level refusal (too many partitions) thus lands everything in
smaller blocks. Any other error (the store is down, the schema is wrong) raises: nothing is
dead-lettered for the store's own state.

Deduplication: the halves carry tokens derived from the batch's token and their position
(``<token>/<first>-<last>``), so a replay of the same batch (same rows, same token) splits the
same way and each part that landed before is dropped by ClickHouse again. Cost: about two
inserts per level, ``log2(rows)`` levels per poison row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from funnel.intake import POISON, Rejection
from funnel.serialization import dumps_row
from storage.backends import Row, Store, StoreError

__all__ = ["STORE_REFUSED", "Refused", "insert_isolating"]

STORE_REFUSED = "store_refused"


@dataclass(frozen=True, slots=True)
class Refused:
    """A row the store refused on its own, and why."""

    table: str
    row: Row
    reason: str
    code: str = STORE_REFUSED
    """``store_refused``, or :data:`funnel.intake.POISON` (the processing raised on it)."""

    @property
    def error(self) -> dict[str, str]:
        """The machine-readable error (as the collector answers and dead-letters them)."""
        where = "$runtime" if self.code == POISON else f"$store.{self.table}"
        return {"field": where, "reason": self.reason, "code": self.code}

    def dead_letter(self, received_at: datetime) -> dict[str, object]:
        """The ``rejected_events`` row recording it: the collector's dead-letter record
        (:meth:`funnel.intake.Rejection.row`), with the store's (or runtime's) reason."""
        site = str(self.row.get("site_id") or "")
        # No position in a request: the row was refused after the request was answered.
        return Rejection(-1, [self.error], dumps_row(self.row)[:65_536], site).row(received_at)


def insert_isolating(
    store: Store, table: str, rows: Sequence[Row], *, dedup_token: str | None = None
) -> list[Refused]:
    """Insert ``rows`` into ``table``; return the rows refused on their own (see the module
    docstring). Raises :class:`StoreError` for a failure that is not the rows' fault."""
    refused: list[Refused] = []
    _insert(store, table, rows, dedup_token, dedup_token, 0, refused)
    return refused


def _insert(
    store: Store,
    table: str,
    rows: Sequence[Row],
    token: str | None,
    part: str | None,
    first: int,
    refused: list[Refused],
) -> None:
    """Insert ``rows`` (from ``first`` in the batch with ``token``) with the token ``part``."""
    try:
        store.insert(table, rows, dedup_token=part)
        return
    except StoreError as exc:
        if not exc.refuses_data:
            raise
        if len(rows) == 1:
            refused.append(Refused(table, rows[0], _short(str(exc))))
            return
    middle = len(rows) // 2
    for start, half in ((first, rows[:middle]), (first + middle, rows[middle:])):
        half_token = None if token is None else f"{token}/{start}-{start + len(half) - 1}"
        _insert(store, table, half, token, half_token, start, refused)


def _short(message: str) -> str:
    """The engine's message without its stack trace."""
    return message.split("\n", 1)[0][:1000]

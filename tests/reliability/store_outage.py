"""The store unavailable on demand (fault injection), for the fault table's ``store`` row.

    python -m tests.reliability.store_outage SWITCH sink <funnel sink arguments>

runs ``funnel sink`` with its store wrapped: while the file ``SWITCH`` exists, every call
raises :class:`~storage.backends.StoreUnavailable`, the error a ClickHouse server that cannot
be reached gives (:class:`storage.server_store.ServerStore`). chDB runs inside the sink's
process and cannot be taken away from it, so the outage is made at the store's interface;
the sink, Kafka and the engine are real.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import funnel.cli.sink
from storage.backends import Store, StoreUnavailable


class Outage:
    """``store``, down while ``switch`` exists."""

    def __init__(self, store: Store, switch: Path) -> None:
        self._store, self._switch = store, switch

    def close(self) -> None:
        self._store.close()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._switch.exists():
                raise StoreUnavailable("the store is down (tests.reliability.store_outage)")
            return attribute(*args, **kwargs)

        return call


if __name__ == "__main__":
    from funnel.cli import main

    switch = Path(sys.argv.pop(1))
    open_store = funnel.cli.sink._open_store
    funnel.cli.sink._open_store = lambda *a, **k: Outage(open_store(*a, **k), switch)  # type: ignore[assignment]
    sys.argv[0] = "funnel"
    main()

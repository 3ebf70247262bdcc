"""The ``funnel`` command (DESIGN §10): one module per command group, the root in
:mod:`funnel.cli.root`. Importing this package registers every command on :data:`main`; the
adapters each command needs are imported inside it, so ``funnel --help`` loads none.
"""

from __future__ import annotations

from funnel.cli import admin, demo, dev, dlq, keys, report, serve, simulate, sink, worker
from funnel.cli.root import main

__all__ = ["main"]

_COMMANDS = (
    admin,
    demo,
    dev,
    dlq,
    keys,
    report,
    serve,
    simulate,
    sink,
    worker,
)  # registered on import

"""Logging for every ``funnel`` command: levels, and one JSON object per line when asked.

``funnel --log-format json`` (or ``FUNNEL_LOG_FORMAT=json``) writes each record to stderr as
``{"ts", "level", "logger", "msg", ...}`` plus any ``extra={...}`` fields and the exception,
so a log shipper can index them; ``text`` (the default) is for people. ``--log-level`` (or
``FUNNEL_LOG_LEVEL``) sets the threshold. Progress bars and reports are not logs: they go to
stderr and stdout through the CLI's consoles.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Final

__all__ = ["FORMATS", "JsonFormatter", "configure"]

FORMATS: Final = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "warning", fmt: str = "text") -> None:
    """Set the root logger's level and format (stderr); replaces earlier handlers."""
    if fmt not in FORMATS:
        raise ValueError(f"log format is one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

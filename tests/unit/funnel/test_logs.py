"""Structured logging: one JSON object per record, extra fields and exceptions included."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from funnel.logs import JsonFormatter, configure


def test_json_record_carries_level_logger_message_and_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "funnel.sink",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "store down %s",
            "args": ("now",),
            "partition": 3,
        }
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "warning"
    assert entry["logger"] == "funnel.sink"
    assert entry["msg"] == "store down now"
    assert entry["partition"] == 3
    assert entry["ts"].endswith("+00:00")


def test_exceptions_are_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure("info", "xml")


def test_cli_logs_json_lines_on_stderr() -> None:
    code = (
        "import logging, sys\n"
        "from funnel.cli import main\n"
        "@main.command()\n"
        "def hello():\n"
        "    logging.getLogger('funnel.test').info('hi', extra={'site': 's1'})\n"
        "sys.exit(main(['--log-level', 'info', '--log-format', 'json', 'hello']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {"level": "info", "logger": "funnel.test", "msg": "hi", "site": "s1"}.items() <= lines[
        0
    ].items()

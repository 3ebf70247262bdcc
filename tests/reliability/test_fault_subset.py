"""The fault table's subset that runs with the suite (issue 19): the collector killed with
SIGKILL several times while clients send messy traffic through it and retry, the whole Kafka
pipeline behind it (two workers, the sink, chDB, a broker of its own). Nothing accepted is
lost or stored twice, and the stage facts equal the ground truth. The full table: ``python -m
tests.reliability.fault_table`` (README, "The fault table")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_collector_kills_lose_and_double_nothing() -> None:
    # In a process of its own: it opens a chDB store, and chDB serves one per process.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.reliability.fault_table",
            "--json",
            "--faults",
            "collector",
            "--persons",
            "150",
            "--seconds",
            "16",
            "--seed",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    row = json.loads(run.stdout.strip().splitlines()[-1])
    assert row["fault"] == "collector"
    assert row["strikes"] >= 1
    assert row["events"] > 200
    assert (row["lost"], row["duplicated"], row["stage_errors"]) == (0, 0, 0)

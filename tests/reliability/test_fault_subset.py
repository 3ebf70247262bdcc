"""The fault table's subset that runs with the suite (issue 19): the collector killed with
SIGKILL several times while clients send messy traffic through it and retry, the whole Kafka
pipeline behind it (two workers, the sink, chDB). Nothing accepted is lost or stored twice,
and the stage facts equal the ground truth. The full table: ``python -m
tests.reliability.fault_table`` (README, "The fault table")."""

from __future__ import annotations

from pathlib import Path

from devtools.kafka_broker import KafkaBroker
from tests.reliability.fault_table import run_fault
from tests.servers import free_port


def test_collector_kills_lose_and_double_nothing(tmp_path: Path) -> None:
    with KafkaBroker(port=free_port(), data_dir=tmp_path / "kafka") as broker:
        work = tmp_path / "run"
        work.mkdir()
        row = run_fault(
            "collector", broker.bootstrap_servers, work, persons=150, seed=5, seconds=16
        )
    assert row.strikes >= 1
    assert row.events > 200
    assert (row.lost, row.duplicated, row.stage_errors) == (0, 0, 0)

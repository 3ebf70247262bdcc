"""``funnel demo`` end to end, as a user runs it (a subprocess owning its own store)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from producers.simulator import simulate


def run_demo(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funnel.cli", "demo", "--store", f"chdb://{store}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def test_demo_json_report_matches_ground_truth_and_reruns_identically(tmp_path: Path) -> None:
    first = run_demo(tmp_path / "store", "--persons", "1500", "--seed", "5", "--format", "json")
    report = json.loads(first.stdout)
    truth = simulate(1500, seed=5).truth.step_counts("sales")
    assert [s["count"] for s in report["steps"]] == truth
    assert [s["step"] for s in report["steps"]][:3] == ["impression", "click", "lead"]
    click = report["steps"][1]
    # Rates print as fractions with 4 decimals (one number format for every output).
    assert click["step_conversion"] == round(truth[1] / truth[0], 4)
    assert report["overall_conversion"] == round(truth[-1] / truth[0], 4)
    assert "processing" in first.stderr  # progress is shown, on stderr

    again = run_demo(tmp_path / "store", "--persons", "1500", "--seed", "5", "--format", "json")
    assert json.loads(again.stdout) == report


def test_demo_table_report(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "store", "--persons", "500")
    assert "Funnel 'sales'" in result.stdout
    assert "Overall conversion" in result.stdout

"""The website tracker (producers/tracker/t.js) stays small, parses, and keeps its public API.

The collector serves the script minified with rjsmin; these tests check exactly that output.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import rjsmin

TRACKER = Path(__file__).resolve().parents[3] / "producers" / "tracker" / "t.js"
GZIP_BUDGET_BYTES = 8192
PUBLIC_API = ("identify", "track", "consent", "optOut", "optIn", "flush", "reset", "push")


@pytest.fixture(scope="module")
def minified() -> str:
    return str(rjsmin.jsmin(TRACKER.read_text(encoding="utf-8")))


def test_minified_and_gzipped_tracker_fits_the_budget(minified: str) -> None:
    size = len(gzip.compress(minified.encode("utf-8"), compresslevel=9))
    assert size < GZIP_BUDGET_BYTES, f"t.js is {size} bytes minified+gzipped"


@pytest.mark.parametrize("variant", ["source", "minified"])
def test_node_accepts_the_syntax(variant: str, minified: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed to syntax-check the tracker"
    script = TRACKER
    if variant == "minified":
        script = tmp_path / "t.min.js"
        script.write_text(minified, encoding="utf-8")
    result = subprocess.run(
        [node, "--check", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_minified_tracker_defines_the_public_api(minified: str) -> None:
    assert "window.funnel=api" in minified
    api = re.search(r"var api=\{(.*?)\};", minified)
    assert api is not None
    names = set(re.findall(r"(\w+):", api.group(1)))
    assert set(PUBLIC_API) <= names
    assert "_dropped" in names


def test_minified_tracker_keeps_its_wire_names(minified: str) -> None:
    for name in ("'/v1/batch?key='", "'_fnl_id'", "'_fnl_seq'", "'_fnl_utm'", "sendBeacon"):
        assert name in minified

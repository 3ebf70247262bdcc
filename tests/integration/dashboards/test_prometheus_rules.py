"""The Prometheus config and rules (``dashboards/prometheus``), checked by the real promtool.

promtool comes with Debian's ``prometheus`` package, which ``scripts/system-deps`` installs; a
machine without it fails these tests rather than skipping them. Besides promtool's own checks
and the rule unit tests (``dashboards/prometheus/tests/*.yml``), the rule files are held to the
metric catalogue (``funnel.metrics``), to the recorded series they define and to the funnel
definitions the step order is generated from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboards.funnel_step_rules import render
from funnel import metrics
from funnel.funnels import FunnelCatalog

pytestmark = pytest.mark.integration

PROMETHEUS = Path(__file__).resolve().parents[3] / "dashboards" / "prometheus"
RULE_FILES = ("funnel_steps.yml", "rules.yml", "alerts.yml")
UNIT_TESTS = sorted(path.name for path in (PROMETHEUS / "tests").glob("*.yml"))

# A PromQL identifier (metric names may hold colons: recorded series do); suffixes the
# exposition adds to the catalogue's names.
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
# A recorded series: level:metric:operations (YAML keys and host:port have one colon).
_RECORDED = re.compile(r"[A-Za-z_]*:[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_]+")
_COMMENT = re.compile(r"(?:^|\s)#.*$", re.MULTILINE)
_FILE_NAME = re.compile(r"[\w./-]+\.ya?ml")


def promtool(*args: str) -> str:
    """Run promtool in the rules directory; its output, or a failure showing it."""
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: sudo ./scripts/system-deps --install"
    done = subprocess.run(
        [binary, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def yaml_text(name: str) -> str:
    """A YAML file of the rules directory without its comments (which may name anything)."""
    return _COMMENT.sub("", (PROMETHEUS / name).read_text("utf-8"))


def identifiers(text: str) -> set[str]:
    """The identifiers in ``text``, file names (``../funnel_steps.yml``) aside."""
    return set(_IDENTIFIER.findall(_FILE_NAME.sub("", text)))


def test_scrape_config_is_valid_and_loads_every_rule_file() -> None:
    output = promtool("check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output
    for name in RULE_FILES:
        assert f"Checking {name}" in output


def test_rule_files_are_valid() -> None:
    output = promtool("check", "rules", *RULE_FILES)
    assert output.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_rule_unit_tests_pass(name: str) -> None:
    assert "SUCCESS" in promtool("test", "rules", f"tests/{name}")


def test_unit_tests_exist_for_every_alert() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", yaml_text("alerts.yml"), re.MULTILINE))
    tested = set()
    for name in UNIT_TESTS:
        text = yaml_text(f"tests/{name}")
        tested |= set(re.findall(r"alertname:\s*(\w+)", text))
        tested |= set(re.findall(r'alertname="(\w+)"', text))
    assert len(alerts) >= 10
    assert alerts - tested == set()


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    blocks = re.split(r"^\s*- alert: ", yaml_text("alerts.yml"), flags=re.MULTILINE)[1:]
    assert blocks
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"^\s+severity: (critical|warning)$", block, re.MULTILINE), name
        for annotation in ("summary", "description", "runbook"):
            assert re.search(rf"^\s+{annotation}: \S", block, re.MULTILINE), (name, annotation)


def test_every_metric_used_is_in_the_catalogue() -> None:
    """Expressions, annotation queries and the unit tests' input series alike."""
    files = [*RULE_FILES, *(f"tests/{name}" for name in UNIT_TESTS)]
    used = {
        name
        for file in files
        for name in identifiers(yaml_text(file))
        if name.startswith("funnel_") and ":" not in name
    }
    bare = {
        next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name) for name in used
    }
    assert {"funnel_stage_reached", "funnel_freshness_seconds", "funnel_sink_store_up"} <= bare
    assert bare - metrics.ALL == set()


def test_every_recorded_series_used_is_recorded() -> None:
    """A misspelt recorded name is valid PromQL that never matches: its alert never fires."""
    files = [*RULE_FILES, *(f"tests/{name}" for name in UNIT_TESTS)]
    recorded = {
        name for file in RULE_FILES for name in re.findall(r"record: (\S+)", yaml_text(file))
    }
    used = {name for file in files for name in _RECORDED.findall(yaml_text(file))}
    assert len(recorded) >= 15
    assert used - recorded == set()


def test_step_order_is_generated_from_the_default_funnels() -> None:
    committed = (PROMETHEUS / "funnel_steps.yml").read_text("utf-8")
    regenerate = "python -m dashboards.funnel_step_rules > dashboards/prometheus/funnel_steps.yml"
    assert committed == render(FunnelCatalog.default(), "funnel/defaults/funnels.toml"), regenerate
    pairs = sum(len(spec.steps) - 1 for spec in FunnelCatalog.default().specs)
    assert committed.count("record: funnel_step:funnel_stage_previous:info") == pairs

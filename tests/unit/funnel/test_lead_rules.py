"""Lead rules as configured data (issue 12): FUNNEL_LEADS is read, bad files are refused in
one line naming the file, and the rules say when a temperature cools."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from funnel.leads import (
    LEADS_ENV,
    LeadRules,
    LeadRulesError,
    LeadSignals,
    Temperature,
    load_lead_rules,
)
from funnel.processor import CoreConfig

DAY = 86_400_000
HOUR = 3_600_000

SHORT = """
cool_after = "14d"

[[rule]]
temperature = "hot"
open_order = true
cool_after = "3d"

[[rule]]
temperature = "warm"
min_clicks = 2
within = "1d"

[queues]
hot = "closers"
"""


@pytest.fixture
def short(tmp_path: Path) -> Path:
    path = tmp_path / "leads.toml"
    path.write_text(SHORT, "utf-8")
    return path


def test_the_defaults_without_a_file_or_the_variable() -> None:
    rules = load_lead_rules(env={})
    assert rules == LeadRules.default()
    assert rules.cool_after == timedelta(days=30)
    assert rules.queue(Temperature.HOT) == "priority"


def test_a_file_by_path_or_named_by_funnel_leads(short: Path, tmp_path: Path) -> None:
    by_path = load_lead_rules(short, env={})
    assert by_path.cool_after == timedelta(days=14)
    assert by_path.rule[0].cool_after == timedelta(days=3)
    assert by_path.queue(Temperature.HOT) == "closers"
    assert by_path.queue(Temperature.COLD) == "cold"  # no queue configured: its name
    assert load_lead_rules(env={LEADS_ENV: str(short)}) == by_path
    assert load_lead_rules(env={LEADS_ENV: ""}) == LeadRules.default()  # set but empty
    other = tmp_path / "other.toml"
    other.write_text('[[rule]]\ntemperature = "hot"\nintents = ["buy"]\n[queues]\n', "utf-8")
    assert load_lead_rules(other, env={LEADS_ENV: str(short)}).cool_after == timedelta(days=30)
    assert LeadRules.from_file(short) == by_path


def test_core_config_carries_the_loaded_rules(short: Path) -> None:
    rules = load_lead_rules(short, env={})
    assert CoreConfig.from_files(leads=rules).leads is rules
    assert CoreConfig.from_files().leads == LeadRules.default()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[rule]\ntemperature = 'hot'", "not valid TOML"),
        ("[[rule]]\ntemperature = 'lukewarm'\nintents = ['x']\n[queues]\n", "rule.0.temperature"),
        ("[[rule]]\ntemperature = 'warm'\n[queues]\n", "a warm rule needs a condition"),
        ("cool_after = 'soon'\nrule = []\n[queues]\n", "not a duration"),
        ("cool_after = '0d'\nrule = []\n[queues]\n", "cool_after"),
        ("rule = []\nqueue = {}\n", "queue"),
        ("[[rule]]\ntemperature = 'warm'\nmin_clicks = -3\n[queues]\n", "min_clicks"),
    ],
)
def test_bad_rules_are_refused_in_one_line_naming_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "leads.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(LeadRulesError) as refused:
        load_lead_rules(env={LEADS_ENV: str(path)})
    message = str(refused.value)
    assert isinstance(refused.value, ValueError)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


def test_a_missing_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(LeadRulesError, match=r"nowhere\.toml: cannot read"):
        load_lead_rules(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LeadRulesError, match=r"binary\.toml: cannot read"):
        load_lead_rules(binary)


def test_signals_count_while_fresh_then_the_temperature_cools() -> None:
    rules = LeadRules.default()
    clicks = LeadSignals(is_lead=True, click_times_ms=[1 * HOUR, 2 * HOUR, 3 * HOUR])
    assert rules.temperature(clicks, 3 * HOUR) is Temperature.WARM
    assert rules.temperature(clicks, 3 * HOUR + 30 * DAY) is Temperature.WARM  # still fresh
    assert rules.temperature(clicks, 3 * HOUR + 30 * DAY + 1) is Temperature.COLD
    spread = LeadSignals(is_lead=True, click_times_ms=[0, 4 * DAY, 8 * DAY])  # never 3 in 7d
    assert rules.temperature(spread, 8 * DAY) is Temperature.COLD

    order = LeadSignals(is_lead=True, intent="demo", intent_at_ms=20 * DAY, open_orders=["o1"])
    order.order_times_ms = {"o1": 10 * DAY}
    assert rules.temperature(order, 40 * DAY) is Temperature.HOT
    assert rules.temperature(order, 40 * DAY + 1) is Temperature.WARM  # the order lapsed
    assert rules.temperature(order, 50 * DAY + 1) is Temperature.COLD  # the demo too
    assert rules.cooling(order, 20 * DAY) == [
        (40 * DAY + 1, Temperature.WARM),
        (50 * DAY + 1, Temperature.COLD),
    ]
    # Clicks are remembered as long as they can still make a lead warm.
    assert rules.click_memory_ms == 7 * DAY + 30 * DAY

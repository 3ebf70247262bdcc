"""Funnel rates on the worked examples of DESIGN §6 and the storage issue."""

import pytest

from funnel.report import FunnelReport, one_in

STEPS = ["impression", "click", "lead", "order"]


def test_ten_percent_per_step() -> None:
    report = FunnelReport.from_counts("sales", None, STEPS, [1000, 100, 10, 1])
    assert [s.step_conversion for s in report.steps] == [1.0, 0.1, 0.1, 0.1]
    assert report.overall_conversion == pytest.approx(0.001)
    assert one_in(report.overall_conversion) == "1:1000"
    assert [s.dropped_from_previous for s in report.steps] == [0, 900, 90, 9]


def test_four_three_two_one() -> None:
    report = FunnelReport.from_counts("sales", None, STEPS, [4, 3, 2, 1])
    rates = [round(s.step_conversion or 0, 3) for s in report.steps[1:]]
    assert rates == [0.75, 0.667, 0.5]
    assert report.overall_conversion == 0.25
    assert report.steps[-1].one_in == "1:4"


def test_one_in_eighty() -> None:
    report = FunnelReport.from_counts("s", None, ["entry", "sale"], [4000, 50])
    assert report.overall_conversion == pytest.approx(0.0125)
    assert report.steps[-1].one_in == "1:80"


def test_empty_steps_have_no_rate() -> None:
    report = FunnelReport.from_counts("s", None, ["a", "b", "c"], [0, 0, 0])
    assert [s.step_conversion for s in report.steps] == [None, None, None]  # 0 / 0 at step 1 too
    assert report.steps[-1].one_in == "-"
    assert report.to_dict()["one_in"] == "-"


def test_one_in_formats() -> None:
    assert one_in(0.26) == "1:3.8"
    assert one_in(1 / 235.3) == "1:235"
    assert one_in(0.5) == "1:2"
    assert one_in(None) == "-"

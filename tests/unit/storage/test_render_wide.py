"""A wide attribution table in a terminal: the models become rows, every figure whole."""

from __future__ import annotations

from funnel.attribution import MODELS
from funnel.report import Table
from storage.reports.render import pairs_as_rows, render

CHANNELS = ("Paid Search", "Organic Social", "Email")


def attribution_table() -> Table:
    """The attribution report's shape: channel, a credit per model, a revenue per model."""
    rows = tuple(
        (
            channel,
            *(round(0.1 * (i + 1) + 0.01 * j, 4) for j, _ in enumerate(MODELS)),
            *(1000.0 * (i + 1) + j for j, _ in enumerate(MODELS)),
        )
        for i, channel in enumerate(CHANNELS)
    )
    columns = ("channel", *MODELS, *(f"{m}_revenue" for m in MODELS))
    return Table(title="Attribution", columns=columns, rows=rows, meta={"conversion": "payment"})


def test_a_wide_table_shows_the_models_as_rows_with_no_figure_cut() -> None:
    table = attribution_table()
    for width in (80, 100, 120):
        text = render(table, "table", width=width)
        assert "…" not in text
        assert max(len(line) for line in text.splitlines()) <= width
        for model in MODELS:
            assert model in text
        assert "1,006.00" in text  # Paid Search, the last model's revenue


def test_a_table_that_fits_keeps_its_columns() -> None:
    text = render(attribution_table(), "table", width=1000)
    header = next(line for line in text.splitlines() if "channel" in line)
    assert all(model in header for model in MODELS)
    assert "model" not in header.split()


def test_pairs_become_rows_and_keep_every_value() -> None:
    table = attribution_table()
    long = pairs_as_rows(table)
    assert long is not None
    assert long.columns == ("channel", "model", "credit", "credited_revenue")
    assert len(long.rows) == len(CHANNELS) * len(MODELS)
    wide = {row[0]: dict(zip(table.columns, row, strict=True)) for row in table.rows}
    for channel, model, credit, revenue in long.rows:
        assert credit == wide[channel][model]
        assert revenue == wide[channel][f"{model}_revenue"]
    assert long.meta == table.meta


def test_a_table_without_model_pairs_is_left_alone() -> None:
    table = Table(title="t", columns=("channel", "count"), rows=(("Email", 3),))
    assert pairs_as_rows(table) is None

"""``funnel dlq``: the dead letters (refused events) by reason, and their replay after a fix."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from funnel.cli.root import (
    _config,
    _open_existing,
    _saved_state,
    channels_option,
    database_option,
    err,
    format_option,
    funnels_option,
    main,
    store_option,
)


def _since(text: str | None) -> datetime | None:
    from storage.reports.scope import parse_when

    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def _filters(command: Any) -> Any:
    for option in reversed(
        (
            click.option("--site", default=None, help="Only this site's letters."),
            click.option("--reason", default=None, help="Only this reason code (see list)."),
            click.option("--since", default=None, help="Only letters received since (date/time)."),
        )
    ):
        command = option(command)
    return command


@main.group()
def dlq() -> None:
    """Dead letters: the events intake refused, with their reasons (rejected_events)."""


@dlq.command("list")
@_filters
@store_option
@database_option
@format_option
def list_cmd(
    site: str | None, reason: str | None, since: str | None, store: str, database: str, fmt: str
) -> None:
    """Dead letters by site, reason code and field, with how many were replayed."""
    from funnel.cli.report import print_result
    from producers.dead_letters import dead_letter_table

    db = _open_existing(store, database)
    try:
        table = dead_letter_table(db, site=site, reason=reason, since=_since(since))
    finally:
        db.close()
    print_result(table, fmt)


@dlq.command("replay")
@_filters
@funnels_option
@channels_option
@store_option
@database_option
def replay_cmd(
    site: str | None,
    reason: str | None,
    since: str | None,
    funnels_file: Path | None,
    channels_file: Path | None,
    store: str,
    database: str,
) -> None:
    """Send the letters not replayed yet through intake again (after a fix).

    What intake accepts now lands, once, and is marked so it is never replayed twice; what
    still fails stays. Runs on the embedded store's own state: stop `funnel serve` first (the
    store belongs to one process at a time).
    """
    from producers.dead_letters import replay
    from stream_processors.embedded import EmbeddedPipeline

    config = _config(funnels_file, channels_file)
    db = _open_existing(store, database)
    saved = _saved_state(store, database, config)
    try:
        pipeline = EmbeddedPipeline(db, config, saved=saved)
        try:
            result = replay(
                db,
                pipeline,
                site=site,
                reason=reason,
                since=_since(since),
                replayed_at=datetime.now(UTC),
            )
        finally:
            pipeline.close()  # before the store: no landing thread outlives it
    finally:
        saved.close()
        db.close()
    failing = ", ".join(f"{code} {n:,}" for code, n in result.still_failing.most_common())
    err.print(
        f"replayed {result.landed:,} letter(s): {result.events:,} event(s) applied; "
        f"still failing: {sum(result.still_failing.values()):,}"
        + (f" ({failing})" if failing else "")
    )
    if result.skipped_store_refused:
        err.print(
            f"{result.skipped_store_refused:,} row(s) the store refused are not intake's to "
            "replay: left as they are"
        )

"""``funnel demo``: simulate, process in this process, report — on a fresh laptop."""

from __future__ import annotations

import time
from pathlib import Path

import click

from funnel.cli.root import (
    _config,
    _open_store,
    _progress,
    _saved_state,
    channels_option,
    database_option,
    err,
    format_option,
    funnels_option,
    main,
    store_option,
)
from funnel.settings import (
    DEFAULT_STORE,
)

DEMO_BATCH = 250_000
"""Facts per committed batch in the demo (about 55,000 events)."""


@main.command()
@click.option("--persons", default=20_000, show_default=True, help="Simulated people.")
@click.option("--seed", default=7, show_default=True)
@click.option("--site", default="demo", show_default=True)
@click.option("--funnel", "funnel_name", default="sales", show_default=True)
@store_option
@database_option
@funnels_option
@channels_option
@format_option
def demo(
    persons: int,
    seed: int,
    site: str,
    funnel_name: str,
    store: str,
    database: str,
    funnels_file: Path | None,
    channels_file: Path | None,
    fmt: str,
) -> None:
    """Simulate a population, process it in-process into the embedded store, print the report.

    The demo's site is replaced on every run, so running it twice gives the same report.
    """
    from funnel.cli.report import print_result
    from producers.simulator import simulate
    from storage.migrate import clear_site
    from storage.reports import ReportScope, funnel_report
    from stream_processors.embedded import EmbeddedPipeline

    config = _config(funnels_file, channels_file)
    try:
        spec = config.funnels.get(funnel_name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--funnel") from exc
    started = time.perf_counter()
    db = _open_store(store, database)
    saved = _saved_state(store, database, config)
    try:
        clear_site(db, site)
        saved.clear_site(site)
        with _progress() as progress:
            task = progress.add_task("simulating", total=None)
            sim = simulate(persons, seed=seed, site_id=site, funnels=config.funnels)
            progress.update(task, total=len(sim.events), completed=len(sim.events))
            task = progress.add_task("processing", total=len(sim.events))
            processing = time.perf_counter()
            # Large batches: a bulk load commits each person's state once per batch.
            pipeline = EmbeddedPipeline(db, config, saved=saved, batch_size=DEMO_BATCH)
            try:
                for i, event in enumerate(sim.events, 1):
                    pipeline.submit(event)
                    if i % 5000 == 0:
                        progress.update(task, completed=i)
                pipeline.expire()  # the status timer: windows that expired by now have dropped
                pipeline.flush()
            finally:
                pipeline.close()  # before the store: no landing thread outlives it
            processed = time.perf_counter() - processing
            progress.update(task, completed=len(sim.events))
        reports = funnel_report(db, spec, ReportScope(site=site))
    finally:
        saved.close()
        db.close()
    elapsed = time.perf_counter() - started
    err.print(
        f"{len(sim.events):,} events from {persons:,} people processed into {store} "
        f"in {processed:.1f} s ({len(sim.events) / processed:,.0f} events/s; "
        f"{elapsed:.1f} s with the simulation and the report)"
    )
    print_result(reports, fmt)
    if fmt == "table":
        where = "" if store == DEFAULT_STORE else f" --store {store}"
        err.print(
            f"Next: funnel report dropoff{where} · funnel report attribution{where} · "
            f"funnel report channels{where} · funnel serve{where} (the live page)"
        )

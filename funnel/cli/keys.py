"""``funnel keys add|list|revoke``: the collector's write and read keys, kept as digests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from funnel.cli.root import err, main

if TYPE_CHECKING:
    from producers.collector.keyfile import KeyFile

F = TypeVar("F", bound=Callable[..., Any])


def _file(read: bool, path: Path | None) -> KeyFile:
    from producers.collector.keyfile import KeyFile

    if path is None:
        variable = "FUNNEL_READ_KEYS_FILE" if read else "FUNNEL_WRITE_KEYS_FILE"
        default = ".funnel/read-keys.json" if read else ".funnel/write-keys.json"
        path = Path(os.environ.get(variable) or default)
    return KeyFile(path, read=read)


def _options(command: F) -> F:
    command = click.option(
        "--read",
        is_flag=True,
        help="Read keys (the report API, the live page, /metrics) instead of write keys.",
    )(command)
    return click.option(
        "--file",
        "path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The key file [FUNNEL_WRITE_KEYS_FILE or FUNNEL_READ_KEYS_FILE, else "
        ".funnel/write-keys.json or .funnel/read-keys.json].",
    )(command)


@main.group()
def keys() -> None:
    """The collector's write and read keys, in a key file that keeps their digests only.

    Point the collector at the file (FUNNEL_WRITE_KEYS_FILE, FUNNEL_READ_KEYS_FILE) and
    restart it after a change: it reads the file when it starts.
    """


@keys.command("add")
@click.option(
    "--site", "sites", multiple=True, required=True, help="Its site (read keys: repeat, or *)."
)
@_options
def add(sites: tuple[str, ...], read: bool, path: Path | None) -> None:
    """Make a key: printed once, here; the file keeps its digest."""
    file = _file(read, path)
    try:
        key, entry = file.add(tuple(sites))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--site") from None
    click.echo(key)
    kind = "read" if read else "write"
    err.print(
        f"a new {kind} key for {', '.join(entry.sites)} ({entry.short}…) is in {file.path}; "
        "the key is shown this once: keep it now"
    )


@keys.command("list")
@_options
def list_keys(read: bool, path: Path | None) -> None:
    """The keys of the file: the start of each digest, and its sites."""
    file = _file(read, path)
    entries = file.entries()
    for entry in entries:
        click.echo(f"{entry.short}…  {','.join(entry.sites)}")
    err.print(f"{len(entries)} {'read' if read else 'write'} key(s) in {file.path}")


@keys.command("revoke")
@click.argument("name")
@_options
def revoke(name: str, read: bool, path: Path | None) -> None:
    """Remove a key, named by itself or by the start of its digest (from `list`)."""
    from producers.collector.keyfile import NoSuchKey

    file = _file(read, path)
    try:
        entry = file.revoke(name.rstrip("…"))
    except NoSuchKey as exc:
        raise click.ClickException(str(exc)) from None
    err.print(f"revoked {entry.short}… ({','.join(entry.sites)}); restart the collector")

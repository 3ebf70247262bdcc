"""owner.json: written atomically, ignored when stale, removed only by its owner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage.reports.catalog import parse_request
from storage.reports.owner import (
    OWNER_FILE,
    Owner,
    fetch_report,
    read_owner,
    remove_owner,
    store_directory,
    write_owner,
)
from tests.servers import free_port


def test_store_directory_of_urls(tmp_path: Path) -> None:
    assert store_directory(f"chdb://{tmp_path}") == tmp_path
    assert store_directory(str(tmp_path)) == tmp_path
    assert store_directory("clickhouse://u:p@host:9000/db") is None


def test_a_live_owner_is_read_and_removed_by_itself_only(tmp_path: Path) -> None:
    me = Owner(url="http://127.0.0.1:1", pid=os.getpid(), database="funnel")
    write_owner(tmp_path, me)
    assert read_owner(tmp_path) == me
    remove_owner(tmp_path, pid=os.getpid() + 1)  # not its owner: stays
    assert (tmp_path / OWNER_FILE).exists()
    remove_owner(tmp_path)
    assert not (tmp_path / OWNER_FILE).exists()
    remove_owner(tmp_path)  # idempotent


def test_stale_owners_are_ignored(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(finished.stdout)
    write_owner(tmp_path, Owner(url="http://127.0.0.1:1", pid=dead, database="funnel"))
    assert read_owner(tmp_path) is None  # the pid is gone
    # A live pid but nothing answering at the URL: no owner to ask, open the store.
    silent = Owner(url=f"http://127.0.0.1:{free_port()}", pid=os.getpid(), database="funnel")
    write_owner(tmp_path, silent)
    assert fetch_report(tmp_path, "funnel", parse_request("leads", {})) is None
    (tmp_path / OWNER_FILE).write_text("{not json", "utf-8")
    assert read_owner(tmp_path) is None

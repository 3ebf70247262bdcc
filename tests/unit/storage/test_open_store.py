"""``open_store``: a URL of another scheme is refused, and a store to read is never created.

These refusals happen before the engine starts (a store another process holds is
``tests/integration/cli/test_cli_errors.py``: it needs a second process).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.backends import open_store


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown store URL 'postgres://x'"):
        open_store("postgres://x")


def test_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError, match=r"no store at .*nothing \(no such directory\)"):
        open_store(f"chdb://{missing}", create=False)
    assert not missing.exists()


def test_a_directory_without_a_store_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="holds no ClickHouse data"):
        open_store(str(tmp_path), create=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_store_without_the_database_names_the_ones_it_has(tmp_path: Path) -> None:
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "funnel.sql").write_text("ATTACH DATABASE funnel")
    with pytest.raises(FileNotFoundError, match=r"has no database 'other' \(it has funnel\)"):
        open_store(f"chdb://{tmp_path}", "other", create=False)
    assert not (tmp_path / "metadata" / "other.sql").exists()

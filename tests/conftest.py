"""Fixtures shared by every test: the embedded ClickHouse engine (chDB).

chDB serves one data directory per process, so the whole session shares one engine and each
test gets a database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from storage.backends import ChdbStore
from storage.migrate import migrate


@pytest.fixture(scope="session")
def chdb_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path_factory.mktemp("chdb"), "funnel_test")
    yield store
    store.close()


@pytest.fixture
def store(chdb_engine: ChdbStore) -> ChdbStore:
    """A fresh, migrated database in the session's embedded engine."""
    db = chdb_engine.using(f"t_{uuid.uuid4().hex[:12]}")
    migrate(db)
    return db

"""The fact tables' columns defined in code (storage/fact_columns.py) against the tables the
migrations make, and facts landed as typed blocks, on the embedded engine (chDB)."""

from __future__ import annotations

from funnel.facts import Fact, PersonRow
from funnel.processor import CoreConfig
from funnel.runtime import Batch
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.fact_columns import COLUMNS, Block, fact_blocks
from storage.poison import insert_isolating
from stream_processors.state import SavedState


def test_the_columns_in_code_are_the_migrated_tables_and_the_facts_fields(
    store: ChdbStore,
) -> None:
    for kind, columns in COLUMNS.items():
        assert list(columns) == list(kind.__struct_fields__), kind.table
        described = {
            row["name"]: row["type"]
            for row in store.query(f"DESCRIBE TABLE {store.database}.{kind.table}")
        }
        assert {name: described.get(name) for name in columns} == columns, kind.table


def _facts() -> list[Fact]:
    sim = simulate(150, seed=5, site_id="cols", multi_device=0.3)
    batch = Batch(CoreConfig.default(), SavedState())
    batch.submit_all(sim.events)
    return batch.close().facts


def test_a_block_holds_exactly_the_facts_rows() -> None:
    facts = _facts()
    blocks = fact_blocks(facts)
    assert set(blocks) == {f.table for f in facts}
    for table, block in blocks.items():
        expected = [f.row() for f in facts if f.table == table]
        assert block.rows() == expected, table
        assert Block.from_ipc(block.to_ipc()).rows() == expected
        middle = len(block) // 2
        assert block[:middle].rows() + block[middle:].rows() == expected
        assert block[middle] == expected[middle]
        assert block[-1] == expected[-1]


def test_facts_landed_as_blocks_read_back_as_their_rows(store: ChdbStore) -> None:
    facts = _facts()
    for table, block in fact_blocks(facts).items():
        count = f"SELECT count() AS n FROM {store.database}.{table}"
        assert insert_isolating(store, table, block, dedup_token=f"t:{table}") == []
        landed = store.query(count)[0]["n"]
        insert_isolating(store, table, block, dedup_token=f"t:{table}")  # a replay: dropped
        assert store.query(count)[0]["n"] == landed, table
        if table != "persons":  # persons: a person's versions in one insert collapse to one
            assert landed == len(block), table
    persons = store.query(
        "SELECT person_id, argMax(funnel_levels, updated_at) AS levels, "
        f"toString(argMax(revenue, updated_at)) AS revenue FROM {store.database}.persons "
        "GROUP BY person_id"
    )
    latest: dict[str, PersonRow] = {}
    for f in facts:
        if isinstance(f, PersonRow) and (
            f.person_id not in latest or latest[f.person_id].updated_at < f.updated_at
        ):
            latest[f.person_id] = f
    assert {p["person_id"]: (p["levels"], p["revenue"]) for p in persons} == {
        k: (f.funnel_levels, str(f.revenue)) for k, f in latest.items()
    }

-- `persons` was the one fact table without an insert deduplication window: a replayed batch
-- (the embedded outbox after a crash, a sink retry) landed its person rows twice. Harmless for
-- the answer (ReplacingMergeTree: the same version of the same row), but it doubled the rows
-- to merge and made the table's row count depend on crashes. Now a replay is dropped as it is
-- everywhere else (found by tests/integration/storage/test_fact_columns.py).

ALTER TABLE $db.persons MODIFY SETTING non_replicated_deduplication_window = 10000;

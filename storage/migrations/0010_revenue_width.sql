-- A person's running revenue grows without bound: two payments at the edge's limit
-- (99,999,999,999,999.9999, an event's Decimal(18, 4)) overflowed persons.revenue, the insert
-- was refused, and every later commit with it (issue 11). The running total is Decimal(38, 4):
-- 10^20 payments at the limit before it could overflow. Per-event amounts stay Decimal(18, 4),
-- which the collector enforces.

ALTER TABLE $db.persons MODIFY COLUMN revenue Decimal(38, 4);

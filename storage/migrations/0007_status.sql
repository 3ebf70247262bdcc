-- Funnel status (DESIGN §6) and regular customers: `persons.funnel_status` (a Map since 0001)
-- now says per funnel `in_window`, `converted` or `dropped`; the stream's timer turns
-- `in_window` into `dropped` when the window expires. `regular`: three payments or more.

ALTER TABLE $db.persons ADD COLUMN IF NOT EXISTS regular Bool DEFAULT false;

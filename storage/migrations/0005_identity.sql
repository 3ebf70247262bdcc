-- Identity stitching: a person merged into a known customer keeps its row, marked.
-- Current persons: WHERE merged_into = ''. A device's events keep its anonymous person_id
-- in `events` until it is linked; persons.merged_into maps it to the customer.

ALTER TABLE $db.persons ADD COLUMN IF NOT EXISTS merged_into String DEFAULT '';

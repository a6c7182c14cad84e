-- Migration 5: schedules as data (issue #18, items 1 and 2). A schedule names the entrypoint
-- its ticks run and the payload they carry, so any registered entrypoint can be scheduled, many
-- times, with arguments, from a cell (q.add_schedule) rather than only by @q.schedule in code.
-- Existing schedules are @q.schedule ones: their ticks ran the entrypoint named after them,
-- with no payload.
ALTER TABLE {schema}.schedules
    ADD COLUMN entrypoint text,
    ADD COLUMN payload bytea,
    ADD COLUMN source text NOT NULL DEFAULT 'code' CHECK (source IN ('code', 'data'));
UPDATE {schema}.schedules SET entrypoint = name;
ALTER TABLE {schema}.schedules ALTER COLUMN entrypoint SET NOT NULL;

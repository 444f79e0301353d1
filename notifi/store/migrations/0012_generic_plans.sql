-- notifi_load_jobs and notifi_refresh_status (migrations 0010, 0011) were planned again at
-- every call. PL/pgSQL keeps each statement's plan in the plan cache, but the cache uses the
-- kept generic plan only when its estimated cost is no higher than the custom plans' average;
-- for a batch whose size the generic plan guesses (an unnest of an array parameter: 10 rows)
-- and a custom plan knows (one or two keys at a steady rate), it never is, so every call made
-- a custom plan. Their plans are nested loops over primary keys whatever the keys (0011's SET
-- clauses), so the generic one is right: one load of one job went from 180 to 50 us of backend
-- CPU, and at a steady 1,000/s loading fell from 102 to 38 us of Postgres time per webhook
-- (pg_stat_statements, 2026-12-06). notifi_record_outcomes happened to keep its generic plan;
-- it gets the setting too, so that does not hang on the planner's estimates.
-- A later CREATE OR REPLACE of any of them must repeat this SET clause with 0011's
-- (tests/integration/test_index_lookups.py fails otherwise).
ALTER FUNCTION notifi_load_jobs(uuid[], smallint[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION notifi_refresh_status(uuid[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION notifi_record_outcomes(
    uuid[], smallint[], int[], timestamptz[], real[], text[], int[], text[], text[],
    timestamptz[], uuid[]
) SET plan_cache_mode = force_generic_plan;

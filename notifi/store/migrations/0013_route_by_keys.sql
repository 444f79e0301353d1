-- The router's statement (the named query route) reads only the rows of the notifications it
-- routes. As a top-level prepared statement it kept a generic plan made while the tables were
-- young, and that plan found the batch through the two partial indexes its conditions imply:
-- the notifications by a whole scan of notifications_unrouted (every notification not routed
-- yet), their deliveries by a BitmapAnd with deliveries_open (every open delivery, 3,047 index
-- entries per notification routed). Both grow with the backlog, so a busy router slowed as it
-- fell behind: 31-65 ms per call for about 65 notifications at a steady 1,000/s, 0.77 ms of
-- Postgres time per webhook, three quarters of all of it (pg_stat_statements and auto_explain,
-- 2026-12-06).
-- Here the batch is reached through the primary keys only, whatever the planner estimates:
-- the not-yet-routed test is written as num_nulls(...) = 2, which no partial index predicate is
-- proved from, and the deliveries are joined on their key alone and filtered by status after
-- the materialized CTE, so deliveries_open is not a candidate either. The function plans as
-- 0011's and 0012's do (no sequential scans, hash or merge joins; the generic plan kept).
-- A later CREATE OR REPLACE must repeat the SET clauses (tests/integration/test_index_lookups.py).
CREATE OR REPLACE FUNCTION notifi_route(ids uuid[], horizon_s double precision)
RETURNS TABLE (
    notification_id uuid, "position" smallint, attempt int, due_at timestamptz, due_now bool
) LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH routed AS (
        UPDATE notifications n
           SET routed_at = now()
         WHERE n.id = ANY (ids) AND num_nulls(n.routed_at, n.deleted_at) = 2
     RETURNING n.id, n.partition_key, n.scheduled_at
    ), keyed AS MATERIALIZED (
        SELECT d.notification_id, d.position, d.attempts + 1 AS attempt, d.status,
               greatest(r.scheduled_at, now()) AS due_at, r.partition_key
          FROM routed r
          JOIN deliveries d ON d.notification_id = r.id
    ), open AS (
        SELECT * FROM keyed k WHERE k.status IN ('pending', 'scheduled')
    ), later AS (
        INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
        SELECT o.notification_id, o.position, o.attempt, o.due_at, o.partition_key
          FROM open o
         WHERE o.due_at > now() + make_interval(secs => horizon_s)
    )
    SELECT o.notification_id, o.position, o.attempt, o.due_at,
           o.due_at <= now() + make_interval(secs => horizon_s)
      FROM open o;
END
$fn$;

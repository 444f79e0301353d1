-- The delivery pipeline's keyed batch statements probe their indexes whatever the tables' size
-- was when their plans were made. PL/pgSQL (like a prepared statement) keeps a generic plan,
-- made the first times a session runs the statement; on a young database (a new deployment, a
-- benchmark's first minutes) the deliveries and notifications tables are small then, a hash
-- join over a sequential scan is the cheapest plan for a batch whose size the planner guesses
-- (10 keys), and it stays in use until an ANALYZE invalidates it while the tables grow: every
-- webhook's load, record and status refresh read the whole deliveries table or notifications
-- table (1,392 rows read per notification in the first seconds at 120/s; 15 with this). A
-- batch is a handful of keys: nested loops over the primary keys are right at every size, so
-- these functions plan without sequential scans, hash or merge joins.
-- A later CREATE OR REPLACE of any of them must repeat these SET clauses (a redefinition drops
-- them); tests/integration/test_index_lookups.py fails otherwise.
ALTER FUNCTION notifi_refresh_status(uuid[])
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION notifi_record_outcomes(
    uuid[], smallint[], int[], timestamptz[], real[], text[], int[], text[], text[],
    timestamptz[], uuid[]
) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;

-- What a delivery worker needs for each job of a fetched batch (the named query load_jobs).
CREATE OR REPLACE FUNCTION notifi_load_jobs(uuid[], smallint[])
RETURNS TABLE (
    notification_id uuid, "position" smallint, client_id text, title text, body text,
    data jsonb, scheduled_at timestamptz, created_at timestamptz, deleted_at timestamptz,
    expires_at timestamptz, kind text, destination jsonb, status text, attempts int,
    destination_id uuid, destination_gone bool, destination_enabled bool,
    destination_updated_at timestamptz, failing_since timestamptz, rate_limit real
) LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT n.id AS notification_id, d.position, n.client_id, n.title, n.body, n.data,
           n.scheduled_at, n.created_at, n.deleted_at, n.expires_at, d.kind,
           CASE WHEN s.id IS NULL THEN d.destination
                ELSE s.config || jsonb_build_object('type', s.kind)
                     || jsonb_strip_nulls(jsonb_build_object(
                            'secret', s.secret,
                            'previous_secret',
                            CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END))
           END AS destination,
           d.status, d.attempts, d.destination_id,
           d.destination_id IS NOT NULL AND s.id IS NULL AS destination_gone,
           s.enabled AS destination_enabled, s.updated_at AS destination_updated_at,
           s.failing_since, s.rate_limit
      FROM unnest($1::uuid[], $2::smallint[]) AS k(notification_id, position)
      JOIN deliveries d ON d.notification_id = k.notification_id AND d.position = k.position
      JOIN notifications n ON n.id = d.notification_id
      LEFT JOIN destinations s ON s.id = d.destination_id;
END
$fn$;

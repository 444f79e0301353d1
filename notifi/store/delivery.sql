-- The delivery role's queries: loading jobs, and the recorder's transaction (the outcomes, and
-- for stored destinations their failing_since, their automatic disabling and paused deliveries).

-- name: load_jobs --
-- What a delivery worker needs for each job of a fetched batch, in one round trip. A delivery
-- to a stored destination holds only {"type", "destination_id"}: the destination the sender
-- gets is the stored one as it is now (its config, type and secret, plus the previous secret
-- while the rotation's overlap lasts). destination_gone: it was deleted since. The query is the
-- function's of migration 0011 (planned without sequential scans).
SELECT * FROM notifi_load_jobs($1::uuid[], $2::smallint[]);

-- name: lock_destinations --
-- The recorder's first step when a batch changes stored destinations: their rows, locked in id
-- order (two recorders never wait on each other in a cycle), with whether each is enabled. The
-- lock also orders a pause against an enable (which updates the row first, then resumes the
-- paused deliveries in a later statement): whichever comes second sees the other's work.
SELECT id, enabled
  FROM destinations
 WHERE id = ANY ($1::uuid[])
 ORDER BY id
   FOR NO KEY UPDATE;

-- name: track_failing --
-- failing_since of stored destinations ($1) after their latest attempt in the batch ($2 when,
-- $3 delivered): cleared by a success, set by a failure when not set yet; unchanged rows are
-- not written.
WITH latest AS (
    SELECT DISTINCT ON (id) id, started_at, delivered
      FROM unnest($1::uuid[], $2::timestamptz[], $3::bool[]) AS k(id, started_at, delivered)
     ORDER BY id, started_at DESC
)
UPDATE destinations s
   SET failing_since = CASE WHEN l.delivered THEN NULL ELSE l.started_at END
  FROM latest l
 WHERE s.id = l.id
   AND CASE WHEN l.delivered THEN s.failing_since IS NOT NULL ELSE s.failing_since IS NULL END;

-- name: disable_destinations --
-- Stored destinations ($1) an attempt disabled, each with its reason ($2): only those still
-- enabled, so each is disabled, and announced, once. Returns the ones disabled here.
UPDATE destinations s
   SET enabled = false, disabled_reason = k.reason, disabled_at = now(), updated_at = now()
  FROM unnest($1::uuid[], $2::text[]) AS k(id, reason)
 WHERE s.id = k.id AND s.enabled
RETURNING s.id, s.client_id, s.name, s.kind, s.disabled_reason, s.disabled_at;

-- name: record_outcomes --
-- A batch of finished attempts and the status refresh they cause, in one call (migration 0010:
-- what a delivered, retried, failed or paused outcome writes).
SELECT notifi_record_outcomes($1::uuid[], $2::smallint[], $3::int[], $4::timestamptz[],
                              $5::real[], $6::text[], $7::int[], $8::text[], $9::text[],
                              $10::timestamptz[], $11::uuid[]);

-- name: destination_states_of --
-- What delivery workers re-read of stored destinations when jobs come due (one query for
-- many): whether each still exists and is enabled, and when it last changed (a job loaded before
-- a change is loaded again). A deleted one has no row: gone.
SELECT id, enabled, updated_at FROM destinations WHERE id = ANY ($1::uuid[]);

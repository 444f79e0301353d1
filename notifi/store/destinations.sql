-- The stored destinations resource (issue 12): its rows, and the deliveries it cancels (delete),
-- resumes (enable) and re-drives (recover). Named blocks, loaded with queries.sql.

-- name: insert_destination --
-- Nothing when the client already has $12 destinations (counted on its (client_id, id) index;
-- two creates racing may pass the bound by one each, which it is set well below the limit for).
INSERT INTO destinations (id, client_id, name, description, kind, config, secret, topics,
                          rate_limit, enabled, disabled_reason, disabled_at)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
       CASE WHEN $10 THEN NULL ELSE $11 END, CASE WHEN $10 THEN NULL ELSE now() END
 WHERE (SELECT count(*) FROM destinations WHERE client_id = $2) < $12
RETURNING *;

-- name: get_destination --
SELECT * FROM destinations WHERE id = $1 AND ($2::text IS NULL OR client_id = $2);

-- name: lock_destination --
-- A PATCH takes the destination's row lock before it touches any delivery (a resume follows
-- in the same transaction): the order the delivery side keeps when it pauses a delivery.
SELECT * FROM destinations WHERE id = $1 AND ($2::text IS NULL OR client_id = $2) FOR UPDATE;

-- name: list_destinations --
-- One client's, newest first on (client_id, id DESC); ids are UUIDv7, so this is creation
-- order and the keyset cursor ($2) is an id. A topic matches its subscribers and "*".
SELECT * FROM destinations
 WHERE client_id = $1
   AND id < $2
   AND ($3::text IS NULL OR topics && ARRAY[$3::text, '*'])
   AND ($4::bool IS NULL OR enabled = $4)
 ORDER BY id DESC
 LIMIT $5 OFFSET $6;

-- name: list_all_destinations --
-- Every client's (an admin), newest first on the primary key.
SELECT * FROM destinations
 WHERE id < $1
   AND ($2::text IS NULL OR topics && ARRAY[$2::text, '*'])
   AND ($3::bool IS NULL OR enabled = $3)
 ORDER BY id DESC
 LIMIT $4 OFFSET $5;

-- name: destination_stats --
-- Per destination: successes and failures of the last 24 h, and the newest success and failure
-- at any age, each from its own partial index (delivery_attempts_destination_ok / _failed):
-- counts are ranges of them, the newest is their first entry backwards.
SELECT d.id,
       ok24.n + bad24.n AS attempts_24h,
       ok24.n AS successes_24h,
       ok.started_at AS last_success_at,
       bad.started_at AS last_failure_at
  FROM unnest($1::uuid[]) AS d (id)
 CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM delivery_attempts a
         WHERE a.destination_id = d.id AND a.outcome = 'delivered'
           AND a.started_at >= now() - interval '24 hours'
       ) ok24
 CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM delivery_attempts a
         WHERE a.destination_id = d.id AND a.outcome <> 'delivered'
           AND a.started_at >= now() - interval '24 hours'
       ) bad24
  LEFT JOIN LATERAL (
        SELECT a.started_at FROM delivery_attempts a
         WHERE a.destination_id = d.id AND a.outcome = 'delivered'
         ORDER BY a.started_at DESC LIMIT 1
       ) ok ON true
  LEFT JOIN LATERAL (
        SELECT a.started_at FROM delivery_attempts a
         WHERE a.destination_id = d.id AND a.outcome <> 'delivered'
         ORDER BY a.started_at DESC LIMIT 1
       ) bad ON true;

-- name: update_destination --
-- A PATCH, merged and checked by the API. Disabling keeps the reason and time of a destination
-- already disabled (by 410 or by time); enabling clears them and the failure clock.
UPDATE destinations
   SET name = $2,
       description = $3,
       config = $4,
       topics = $5,
       rate_limit = $6,
       enabled = $7,
       disabled_reason = CASE WHEN $7 THEN NULL WHEN enabled THEN $8 ELSE disabled_reason END,
       disabled_at = CASE WHEN $7 THEN NULL WHEN enabled THEN now() ELSE disabled_at END,
       failing_since = CASE WHEN $7 AND NOT enabled THEN NULL ELSE failing_since END,
       updated_at = now()
 WHERE id = $1
RETURNING *;

-- name: lock_paused_notifications --
-- Before a resume touches a delivery: the notifications of the destination's paused deliveries,
-- locked in id order (on deliveries_paused). A notification's delete locks it before its
-- deliveries; a resume that locked the deliveries first and then refreshed the notifications
-- made a cycle with it, which Postgres broke by aborting one side (a 500).
SELECT n.id
  FROM notifications n
 WHERE n.id IN (SELECT d.notification_id FROM deliveries d
                 WHERE d.destination_id = $1 AND d.status = 'paused')
 ORDER BY n.id
   FOR NO KEY UPDATE OF n;

-- name: resume_destination --
-- Its paused deliveries go back to work through the outbox, oldest first: due times a
-- microsecond apart in notification (creation) order, so the poller takes them in that order,
-- and never before the notification's schedule (one paused at accept may be enabled before
-- its time). A paused delivery of a deleted notification is cancelled instead, never sent.
WITH paused AS (
    SELECT d.notification_id, d.position, d.attempts, n.partition_key,
           n.deleted_at IS NOT NULL AS deleted,
           greatest(now(), coalesce(n.scheduled_at, now())) AS due_at
      FROM deliveries d
      JOIN notifications n ON n.id = d.notification_id
     WHERE d.destination_id = $1 AND d.status = 'paused'
), changed AS (
    UPDATE deliveries d
       SET status = CASE WHEN p.deleted THEN 'cancelled'
                         WHEN d.attempts > 0 THEN 'delivering'
                         WHEN p.due_at > now() THEN 'scheduled'
                         ELSE 'pending' END,
           next_attempt_at = p.due_at, claimed_until = NULL, updated_at = now()
      FROM paused p
     WHERE d.notification_id = p.notification_id AND d.position = p.position
       AND d.status = 'paused'
 RETURNING d.notification_id, d.position, d.attempts, p.partition_key, p.due_at, d.status
), queued AS (
    INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
    SELECT notification_id, position, attempts + 1,
           due_at + row_number() OVER (ORDER BY notification_id, position)
                    * interval '1 microsecond',
           partition_key
      FROM changed
     WHERE status <> 'cancelled'
)
SELECT count(*) FILTER (WHERE status <> 'cancelled') AS resumed,
       coalesce(array_agg(DISTINCT notification_id), '{}') AS touched
  FROM changed;

-- name: delete_destination --
-- The destination goes; what is still undelivered to it is cancelled and leaves the outbox.
-- Deliveries before notifications, as the recorder (whose in-flight deliveries these are)
-- locks them, not as a notification's delete does: that cycle is rare and tried again.
WITH gone AS (
    DELETE FROM destinations
     WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)
 RETURNING id
), cancelled AS (
    UPDATE deliveries d
       SET status = 'cancelled', claimed_until = NULL, updated_at = now()
      FROM gone
     WHERE d.destination_id = gone.id
       AND d.status IN ('pending', 'scheduled', 'delivering', 'paused')
 RETURNING d.notification_id, d.position
), unqueued AS (
    DELETE FROM outbox o
     USING cancelled c
     WHERE o.notification_id = c.notification_id AND o.position = c.position
)
SELECT (SELECT count(*) FROM gone) AS found,
       coalesce((SELECT array_agg(DISTINCT notification_id) FROM cancelled), '{}') AS touched;

-- name: rotate_destination_secret --
-- The new secret signs from now; the one it replaces still signs (second signature) until
-- $4 seconds from now. A second rotation within that time drops the oldest.
UPDATE destinations
   SET previous_secret = secret,
       previous_secret_until = CASE WHEN secret IS NULL THEN NULL
                                    ELSE now() + make_interval(secs => $4) END,
       secret = $3,
       updated_at = now()
 WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)
RETURNING previous_secret_until;

-- name: hold_destination --
-- Recover's hold on the destination: a key-share lock, so a concurrent DELETE waits for it (or
-- it for the DELETE) while the delivery side's own updates of the row go on.
SELECT id FROM destinations
 WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)
   FOR KEY SHARE;

-- name: count_recoverable --
-- What recover would re-drive: deliveries to the destination that ended failed in [$2, $3)
-- (on deliveries_destination), of notifications neither deleted nor expired.
SELECT count(*)
  FROM deliveries d
  JOIN notifications n ON n.id = d.notification_id
 WHERE d.destination_id = $1
   AND d.updated_at >= $2 AND d.updated_at < $3
   AND d.status = 'failed'
   AND n.deleted_at IS NULL
   AND (n.expires_at IS NULL OR n.expires_at > now());

-- name: lock_recoverable_notifications --
-- Before a recover touches a delivery: the notifications of what it would re-drive, locked in
-- id order, for the reason lock_paused_notifications gives.
SELECT n.id
  FROM notifications n
 WHERE n.id IN (SELECT d.notification_id FROM deliveries d
                 WHERE d.destination_id = $1
                   AND d.updated_at >= $2 AND d.updated_at < $3
                   AND d.status = 'failed')
   AND n.deleted_at IS NULL
   AND (n.expires_at IS NULL OR n.expires_at > now())
 ORDER BY n.id
   FOR NO KEY UPDATE OF n;

-- name: recover_destination --
-- One more attempt each for what count_recoverable counts: pending, through the outbox (so the
-- rate limit and the breaker apply), due now in creation order (a microsecond apart).
WITH reopened AS (
    UPDATE deliveries d
       SET status = 'pending', next_attempt_at = now(), claimed_until = NULL, updated_at = now()
      FROM notifications n
     WHERE n.id = d.notification_id
       AND d.destination_id = $1
       AND d.updated_at >= $2 AND d.updated_at < $3
       AND d.status = 'failed'
       AND n.deleted_at IS NULL
       AND (n.expires_at IS NULL OR n.expires_at > now())
 RETURNING d.notification_id, d.position, d.attempts, n.partition_key
), queued AS (
    INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
    SELECT notification_id, position, attempts + 1,
           now() + row_number() OVER (ORDER BY notification_id, position)
                   * interval '1 microsecond',
           partition_key
      FROM reopened
)
SELECT count(*) AS reopened, coalesce(array_agg(DISTINCT notification_id), '{}') AS touched
  FROM reopened;

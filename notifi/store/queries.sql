-- Every query Notifi runs, as named blocks ("-- name: x --"), loaded once by notifi.store.sql.

-- name: insert_notifications --
-- One statement for a whole accepted batch; idempotency-key replays insert nothing.
INSERT INTO notifications (id, client_id, idempotency_key, request_hash, title, body, data,
                           scheduled_at, partition_key, status, created_at, updated_at,
                           expires_at, topic)
SELECT t.id, t.client_id, t.idempotency_key, t.request_hash, t.title, t.body, t.data::jsonb,
       t.scheduled_at, t.partition_key, t.status, t.created_at, t.created_at, t.expires_at,
       t.topic
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[],
              $7::text[], $8::timestamptz[], $9::int[], $10::text[], $11::timestamptz[],
              $12::timestamptz[], $13::text[])
       AS t(id, client_id, idempotency_key, request_hash, title, body, data, scheduled_at,
            partition_key, status, created_at, expires_at, topic)
ON CONFLICT (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: accept_plain --
-- A whole batch with no idempotency key and no reference to a stored destination or a topic
-- (the common case): the notifications and their deliveries in one statement, so one round
-- trip and no BEGIN/COMMIT of their own (a single statement is its own transaction). The
-- parameters are insert_notifications' then insert_deliveries'; ids are new UUIDv7s and no
-- key can conflict; the deliveries' foreign keys are checked at the end of
-- the statement, when the notifications are there.
WITH inserted AS (
    INSERT INTO notifications (id, client_id, idempotency_key, request_hash, title, body, data,
                               scheduled_at, partition_key, status, created_at, updated_at,
                               expires_at, topic)
    SELECT t.id, t.client_id, t.idempotency_key, t.request_hash, t.title, t.body, t.data::jsonb,
           t.scheduled_at, t.partition_key, t.status, t.created_at, t.created_at, t.expires_at,
           t.topic
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[],
                  $7::text[], $8::timestamptz[], $9::int[], $10::text[], $11::timestamptz[],
                  $12::timestamptz[], $13::text[])
           AS t(id, client_id, idempotency_key, request_hash, title, body, data, scheduled_at,
                partition_key, status, created_at, expires_at, topic)
    RETURNING id
), listed AS (
    INSERT INTO deliveries (notification_id, position, kind, destination, status,
                            next_attempt_at)
    SELECT d.notification_id, d.position, d.kind, d.destination::jsonb, d.status,
           d.next_attempt_at
      FROM unnest($14::uuid[], $15::smallint[], $16::text[], $17::text[], $18::text[],
                  $19::timestamptz[])
           AS d(notification_id, position, kind, destination, status, next_attempt_at)
)
SELECT id FROM inserted;

-- name: insert_deliveries --
-- A batch in which nothing refers to a stored destination or a topic: written as requested
-- (references.sql's insert_deliveries_expanded writes the others).
INSERT INTO deliveries (notification_id, position, kind, destination, status, next_attempt_at)
SELECT t.notification_id, t.position, t.kind, t.destination::jsonb, t.status, t.next_attempt_at
  FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
       AS t(notification_id, position, kind, destination, status, next_attempt_at);

-- name: find_idempotent --
SELECT n.client_id, n.idempotency_key, n.id, n.request_hash
  FROM notifications n
  JOIN unnest($1::text[], $2::text[]) AS k(client_id, idempotency_key)
    ON n.client_id = k.client_id AND n.idempotency_key = k.idempotency_key;

-- name: get_notification --
SELECT * FROM notifications WHERE id = $1 AND ($2::text IS NULL OR client_id = $2);

-- name: list_notifications --
-- One client's, newest first. Ids are UUIDv7, so id order is creation order and a time range
-- is an id range: (client_id, id DESC) serves filters, offsets and the keyset cursor ($6).
SELECT * FROM notifications
 WHERE client_id = $1
   AND id < $6 AND id >= $7
   AND ($2::bool OR deleted_at IS NULL)
   AND ($3::text IS NULL OR status = $3)
 ORDER BY id DESC
 LIMIT $4 OFFSET $5;

-- name: list_all_notifications --
-- Every client's (an admin), newest first, on the primary key.
SELECT * FROM notifications
 WHERE id < $5 AND id >= $6
   AND ($1::bool OR deleted_at IS NULL)
   AND ($2::text IS NULL OR status = $2)
 ORDER BY id DESC
 LIMIT $3 OFFSET $4;

-- name: list_notifications_of_type --
-- As list_notifications, keeping only notifications with a delivery of kind $8: candidates
-- come newest first from (client_id, id DESC) and each is checked on deliveries' primary key
-- (notification_id first), so a page stops as soon as it is full. Like the status filter, a
-- rare kind walks further back; the time range ($6, $7) bounds that walk. The check is a
-- LATERAL with LIMIT 1, not EXISTS: EXISTS may become a semi-join, and for a kind the
-- statistics call rare the planner then reads every delivery of that kind and sorts.
SELECT n.* FROM notifications n
 CROSS JOIN LATERAL (SELECT 1 FROM deliveries d
                      WHERE d.notification_id = n.id AND d.kind = $8 LIMIT 1) k
 WHERE n.client_id = $1
   AND n.id < $6 AND n.id >= $7
   AND ($2::bool OR n.deleted_at IS NULL)
   AND ($3::text IS NULL OR n.status = $3)
 ORDER BY n.id DESC
 LIMIT $4 OFFSET $5;

-- name: list_all_notifications_of_type --
-- Every client's (an admin) with a delivery of kind $7, newest first, on the primary keys.
SELECT n.* FROM notifications n
 CROSS JOIN LATERAL (SELECT 1 FROM deliveries d
                      WHERE d.notification_id = n.id AND d.kind = $7 LIMIT 1) k
 WHERE n.id < $5 AND n.id >= $6
   AND ($1::bool OR n.deleted_at IS NULL)
   AND ($2::text IS NULL OR n.status = $2)
 ORDER BY n.id DESC
 LIMIT $3 OFFSET $4;

-- name: deliveries_of --
SELECT notification_id, position, kind, destination, status, attempts, last_error,
       last_status_code, next_attempt_at, delivered_at, updated_at
  FROM deliveries
 WHERE notification_id = ANY ($1::uuid[])
 ORDER BY notification_id, position;

-- name: delete_notification --
-- Marks the notification deleted (once), cancels what is undelivered (paused deliveries
-- too), drops its outbox rows.
WITH marked AS (
    UPDATE notifications
       SET deleted_at = coalesce(deleted_at, now()), updated_at = now()
     WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)
 RETURNING id
), cancelled AS (
    UPDATE deliveries d
       SET status = 'cancelled', updated_at = now()
      FROM marked
     WHERE d.notification_id = marked.id
       AND d.status IN ('pending', 'scheduled', 'delivering', 'paused')
), unscheduled AS (
    DELETE FROM outbox WHERE notification_id IN (SELECT id FROM marked)
)
SELECT id FROM marked;

-- name: refresh_status --
SELECT notifi_refresh_status($1::uuid[]);

-- name: route --
-- Claims accepted notifications for routing (once: a redelivered event finds routed_at set),
-- writes outbox rows for what is due later and returns the jobs that are due now. Paused
-- deliveries get no job: enabling their destination queues them. A function that reaches the
-- batch through the primary keys only (migration 0013).
SELECT * FROM notifi_route($1::uuid[], $2::double precision);

-- name: claim_due --
-- The poller's step: due rows of one partition range, taken and removed in one statement.
-- SKIP LOCKED keeps overlapping ranges (during a rescale) safe.
WITH due AS (
    SELECT id
      FROM outbox
     WHERE due_at <= now() + make_interval(secs => $3)
       AND partition_key BETWEEN $1 AND $2
     ORDER BY due_at
     LIMIT $4
       FOR UPDATE SKIP LOCKED
)
DELETE FROM outbox o
 USING due
 WHERE o.id = due.id
RETURNING o.notification_id, o.position, o.attempt, o.due_at;

-- name: oldest_due --
SELECT min(due_at) FROM outbox
 WHERE due_at <= now() AND partition_key BETWEEN $1 AND $2;

-- name: backstop_unrouted --
-- Accepted notifications nobody routed within the grace period (a publish that failed after
-- the commit): routed here by the router's own function (migration 0013), with a horizon in
-- the past, so that every open delivery goes through the outbox; how many were queued.
SELECT count(*)
  FROM notifi_route(ARRAY(SELECT id FROM notifications
                           WHERE routed_at IS NULL AND deleted_at IS NULL
                             AND created_at < now() - make_interval(secs => $3)
                             AND partition_key BETWEEN $1 AND $2
                           LIMIT $4
                             FOR UPDATE SKIP LOCKED), -1);

-- name: backstop_stuck --
-- Open deliveries past due by the grace period with no outbox row and no live lease: their
-- job was lost with a bus or a process. Queued again now; delivery's claim stops a double send.
WITH stuck AS (
    SELECT d.notification_id, d.position, d.attempts + 1 AS attempt, n.partition_key
      FROM deliveries d
      JOIN notifications n ON n.id = d.notification_id
     WHERE d.status IN ('pending', 'scheduled', 'delivering')
       AND d.next_attempt_at < now() - make_interval(secs => $3)
       AND (d.claimed_until IS NULL OR d.claimed_until < now())
       AND n.routed_at IS NOT NULL AND n.deleted_at IS NULL
       AND n.partition_key BETWEEN $1 AND $2
       AND NOT EXISTS (SELECT 1 FROM outbox o
                        WHERE o.notification_id = d.notification_id AND o.position = d.position)
     LIMIT $4
       FOR UPDATE OF d SKIP LOCKED
), bumped AS (
    UPDATE deliveries d
       SET next_attempt_at = now()
      FROM stuck s
     WHERE d.notification_id = s.notification_id AND d.position = s.position
), queued AS (
    INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
    SELECT notification_id, position, attempt, now(), partition_key FROM stuck
 RETURNING 1
)
SELECT count(*) FROM queued;

-- name: states_of --
-- What delivery workers re-read when jobs come due (one query for many): deleted, and the
-- schedule now (a PATCH may have moved it). A removed notification has no row: gone.
SELECT id, deleted_at IS NOT NULL AS deleted, scheduled_at
  FROM notifications
 WHERE id = ANY ($1::uuid[]);

-- name: claim_in_postgres --
-- The claim when Redis is down: a lease on the delivery row itself, held by a job token ($3;
-- NULL: none). Taken when free, expired, already this token's, or left by a dead predecessor
-- of the same instance: same `{instance_id}/` and another incarnation (notifi.claims). At most
-- one token per key in a call.
UPDATE deliveries d
   SET claimed_until = now() + make_interval(secs => $4),
       claimed_by = k.token
  FROM unnest($1::uuid[], $2::smallint[], $3::text[]) AS k(notification_id, position, token)
 WHERE d.notification_id = k.notification_id AND d.position = k.position
   AND d.status IN ('pending', 'scheduled', 'delivering')
   AND (d.claimed_until IS NULL OR d.claimed_until < now()
        OR d.claimed_by = k.token
        OR (substring(d.claimed_by FROM '^(.*)/[^/]*:[^:]*:[^:]*:[^:]*$')
              = substring(k.token FROM '^(.*)/[^/]*:[^:]*:[^:]*:[^:]*$')
            AND substring(d.claimed_by FROM '^(.*):[^:]*:[^:]*:[^:]*$')
              <> substring(k.token FROM '^(.*):[^:]*:[^:]*:[^:]*$')))
RETURNING d.notification_id, d.position;

-- name: delivered_in_postgres --
SELECT notification_id, position
  FROM unnest($1::uuid[], $2::smallint[]) AS k(notification_id, position)
  JOIN deliveries d USING (notification_id, position)
 WHERE d.status = 'delivered';

-- name: mark_delivered_in_postgres --
-- The delivered mark when Redis is down, written before the worker moves on: the row says
-- delivered at once (the recorder adds the attempt and its details later). Returns the
-- notifications whose status must follow.
UPDATE deliveries d
   SET status = 'delivered',
       delivered_at = now(),
       claimed_until = NULL,
       claimed_by = NULL,
       updated_at = now()
  FROM unnest($1::uuid[], $2::smallint[]) AS k(notification_id, position)
 WHERE d.notification_id = k.notification_id AND d.position = k.position
   AND d.status <> 'delivered'
RETURNING d.notification_id;

-- name: requeue --
-- Jobs that could not run now (their claim is held elsewhere): back through the outbox.
INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
SELECT k.notification_id, k.position, k.attempt, k.due_at, n.partition_key
  FROM unnest($1::uuid[], $2::smallint[], $3::int[], $4::timestamptz[])
       AS k(notification_id, position, attempt, due_at)
  JOIN notifications n ON n.id = k.notification_id
 WHERE n.deleted_at IS NULL;

-- name: reschedule_deliveries --
-- A PATCH's first step: the notification's deliveries, locked (in the order the recorder locks:
-- deliveries before their notification), with what tells whether any has started: an attempt
-- row, or a live Postgres lease. No rows: no such notification (for this client).
SELECT d.position, d.status, d.attempts, d.next_attempt_at,
       d.claimed_until IS NOT NULL AND d.claimed_until > now() AS leased,
       EXISTS (SELECT 1 FROM delivery_attempts a
                WHERE a.notification_id = d.notification_id AND a.position = d.position) AS tried
  FROM deliveries d
  JOIN notifications n ON n.id = d.notification_id
 WHERE d.notification_id = $1 AND ($2::text IS NULL OR n.client_id = $2)
 ORDER BY d.position
   FOR UPDATE OF d;

-- name: reschedule_notification --
SELECT id, deleted_at, expires_at, scheduled_at, routed_at
  FROM notifications
 WHERE id = $1
   FOR UPDATE;

-- name: reschedule --
-- Moves a notification none of whose deliveries has started to $2 (NULL: now), due at $3, in
-- one statement: the notification's schedule, its outbox rows (due_at only: the partition key
-- stays, so the same poller takes them), its deliveries (scheduled when $3 is ahead, else
-- pending). A routed delivery with no outbox row has its job on the bus already (a poller
-- published it within its horizon, or the router at once): moved earlier than that job's time,
-- it gets an outbox row at the new time too (the delivery claim stops a second send); moved
-- later, the worker that holds the job sends it back for the new time when it comes due.
WITH n AS (
    UPDATE notifications
       SET scheduled_at = $2::timestamptz, updated_at = now()
     WHERE id = $1
 RETURNING id, partition_key, routed_at
), moved AS (
    UPDATE outbox
       SET due_at = $3::timestamptz
     WHERE notification_id = $1
 RETURNING position
), d AS (
    UPDATE deliveries d
       SET next_attempt_at = $3,
           status = CASE WHEN $3 > now() THEN 'scheduled' ELSE 'pending' END,
           updated_at = now()
      FROM deliveries was
     WHERE d.notification_id = $1
       AND was.notification_id = d.notification_id AND was.position = d.position
       AND d.status IN ('scheduled', 'pending')
 RETURNING d.position, d.attempts, was.next_attempt_at AS was_due
), queued AS (
    INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
    SELECT $1, d.position, d.attempts + 1, $3, n.partition_key
      FROM d CROSS JOIN n
     WHERE n.routed_at IS NOT NULL
       AND $3 < d.was_due
       AND d.position NOT IN (SELECT position FROM moved)
 RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM queued) AS queued;

-- name: attempts_of --
SELECT a.position, a.attempt, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error,
       d.destination
  FROM delivery_attempts a
  JOIN deliveries d USING (notification_id, position)
 WHERE a.notification_id = $1
 ORDER BY a.started_at, a.id;

-- name: replay --
-- Failed and cancelled deliveries get one more attempt, due now; a deleted notification is
-- restored (its delete cancelled them). Delivered ones are left alone, and so are deliveries
-- to a stored destination that no longer exists (deleting it cancelled them for good).
WITH n AS (
    UPDATE notifications
       SET deleted_at = NULL, updated_at = now()
     WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)
 RETURNING id, partition_key
), reopened AS (
    UPDATE deliveries d
       SET status = 'pending', next_attempt_at = now(), claimed_until = NULL, updated_at = now()
      FROM n
     WHERE d.notification_id = n.id AND d.status IN ('failed', 'cancelled')
       AND (d.destination_id IS NULL
            OR EXISTS (SELECT 1 FROM destinations s WHERE s.id = d.destination_id))
 RETURNING d.notification_id, d.position, d.attempts, n.partition_key
), queued AS (
    INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
    SELECT notification_id, position, attempts + 1, now(), partition_key FROM reopened
)
SELECT (SELECT count(*) FROM n) AS found, (SELECT count(*) FROM reopened) AS reopened;

-- name: expire_idempotency_keys --
-- Keys older than the retention window stop protecting against replays (Stripe-style).
UPDATE notifications
   SET idempotency_key = NULL
 WHERE id IN (SELECT id FROM notifications
               WHERE idempotency_key IS NOT NULL
                 AND created_at < now() - make_interval(secs => $3)
                 AND partition_key BETWEEN $1 AND $2
               LIMIT $4
                 FOR UPDATE SKIP LOCKED);

-- name: retention_sweep --
-- One bounded step of the retention sweep (notifi.store.retention). It examines the next $5
-- notifications of partition range [$3, $4] after id $1 and before id $2: ids are UUIDv7, so
-- this is a range scan of the primary key, oldest first, and $2 leaves out everything made
-- too recently to have ended long enough ago. Of those, a notification goes, with its
-- deliveries, attempts and outbox rows, when every delivery ended (delivered, failed,
-- cancelled, expired) and it ended longer ago than its window: $7 seconds when any delivery
-- failed, else $6; 0 keeps it forever. It ended at the latest of its own updated_at (stamped
-- when its derived status last changed) and its deliveries' updated_at (stamped when each
-- reached its final status). Rows another transaction holds are skipped, never waited on.
-- Idempotency keys are columns of notifications, so they go with their rows. Every table is
-- read over the same id range (each is indexed by notification id first), so the step is a
-- few range scans and hash joins, never a probe per row nor a scan of a whole table.
WITH scanned AS (
    SELECT id
      FROM notifications
     WHERE id > $1 AND id < $2 AND partition_key BETWEEN $3 AND $4
     ORDER BY id
     LIMIT $5
), edge AS (
    SELECT id AS last_id FROM scanned ORDER BY id DESC LIMIT 1
), ends AS (
    SELECT d.notification_id AS id,
           bool_and(d.status IN ('delivered', 'failed', 'cancelled', 'expired')) AS ended,
           bool_or(d.status = 'failed') AS any_failed,
           max(d.updated_at) AS last_end
      FROM deliveries d
     WHERE d.notification_id > $1 AND d.notification_id <= (SELECT last_id FROM edge)
     GROUP BY d.notification_id
), doomed AS (
    SELECT n.id
      FROM notifications n
      JOIN scanned s ON s.id = n.id
      LEFT JOIN ends e ON e.id = n.id
     CROSS JOIN LATERAL (
        SELECT CASE WHEN e.any_failed THEN $7::float8 ELSE $6::float8 END AS keep_s
     ) k
     WHERE n.id > $1 AND n.id <= (SELECT last_id FROM edge)
       AND coalesce(e.ended, true)
       AND k.keep_s > 0
       AND greatest(n.updated_at, e.last_end) < now() - make_interval(secs => k.keep_s)
       FOR UPDATE OF n SKIP LOCKED
), outbox_gone AS (
    DELETE FROM outbox
     WHERE notification_id > $1 AND notification_id <= (SELECT last_id FROM edge)
       AND notification_id IN (SELECT id FROM doomed)
    RETURNING 1
), attempts_gone AS (
    DELETE FROM delivery_attempts
     WHERE notification_id > $1 AND notification_id <= (SELECT last_id FROM edge)
       AND notification_id IN (SELECT id FROM doomed)
    RETURNING 1
), deliveries_gone AS (
    DELETE FROM deliveries
     WHERE notification_id > $1 AND notification_id <= (SELECT last_id FROM edge)
       AND notification_id IN (SELECT id FROM doomed)
    RETURNING 1
), notifications_gone AS (
    DELETE FROM notifications
     WHERE id > $1 AND id <= (SELECT last_id FROM edge)
       AND id IN (SELECT id FROM doomed)
    RETURNING 1
)
SELECT (SELECT last_id FROM edge) AS last_id,
       (SELECT count(*) FROM scanned) AS scanned,
       (SELECT count(*) FROM notifications_gone) AS notifications,
       (SELECT count(*) FROM deliveries_gone) AS deliveries,
       (SELECT count(*) FROM attempts_gone) AS delivery_attempts,
       (SELECT count(*) FROM outbox_gone) AS outbox;

-- name: stats_counts --
-- One client's notifications created since id $2 (ids are UUIDv7: a time range is an id
-- range), by status: a range of (client_id, id DESC).
SELECT status, count(*) AS count
  FROM notifications
 WHERE client_id = $1 AND id >= $2
 GROUP BY status;

-- name: stats_counts_all --
-- Every client's (an admin) notifications created since id $1, by status: a primary-key range.
SELECT status, count(*) AS count
  FROM notifications
 WHERE id >= $1
 GROUP BY status;

-- name: stats_due_soon --
-- Notifications with a delivery still scheduled and due within $1 seconds (overdue included),
-- of client $2 (NULL: every client's). A deleted notification has no scheduled delivery (the
-- delete cancels them in its transaction), so only a client's count looks at deleted_at, in
-- the lookup it makes anyway; an admin's needs no lookup at all. Bounded: at most $3 such deliveries (a
-- range of the deliveries_open index, unsorted); `truncated` says the bound was reached. For a
-- client each one's notification is looked up by its primary key (a correlated subquery, so
-- the planner cannot trade the lookups for a scan of the whole notifications table).
WITH due AS (
    SELECT d.notification_id
      FROM deliveries d
     WHERE d.status IN ('pending', 'scheduled', 'delivering')  -- deliveries_open's predicate
       AND d.status = 'scheduled'
       AND d.next_attempt_at <= now() + make_interval(secs => $1)
     LIMIT $3
)
SELECT count(DISTINCT due.notification_id)
           FILTER (WHERE $2::text IS NULL
                      OR (SELECT n.client_id = $2 AND n.deleted_at IS NULL
                            FROM notifications n WHERE n.id = due.notification_id)) AS due_soon,
       count(*) = $3 AS truncated
  FROM due;

-- name: stats_slowest_hosts --
-- The $4 destination servers with the slowest attempts (by p95 duration) among attempts
-- started since $1, of client $2 (NULL: every client's). Bounded: only the newest $3 attempts
-- are read (the identity key, backwards), then filtered by time and client; `truncated` says
-- the bound cut the window short. A server is the url's host:port (the scheme's port when
-- none is given); a destination without a url (email) counts under its channel's name. The
-- delivery and the client are looked up per attempt on primary keys (a LATERAL with LIMIT 1
-- and a correlated subquery: never a scan of a whole table, whatever the estimates).
WITH recent AS (
    SELECT notification_id, position, started_at, duration_ms, outcome
      FROM delivery_attempts
     ORDER BY id DESC
     LIMIT $3
), scoped AS (
    SELECT r.started_at, r.duration_ms, r.outcome,
           CASE WHEN u.parts IS NULL THEN d.kind
                WHEN u.parts[2] ~ ':[0-9]+$' THEN lower(u.parts[2])
                WHEN lower(u.parts[1]) = 'https' THEN lower(u.parts[2]) || ':443'
                ELSE lower(u.parts[2]) || ':80'
           END AS host
      FROM (SELECT * FROM recent WHERE started_at >= $1) r
     CROSS JOIN LATERAL (SELECT d.kind, d.destination ->> 'url' AS url
                           FROM deliveries d
                          WHERE d.notification_id = r.notification_id
                            AND d.position = r.position
                          LIMIT 1) d
     CROSS JOIN LATERAL regexp_match(d.url,
                                     '^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^@/?#]*@)?([^/?#]+)')
           AS u(parts)
     WHERE $2::text IS NULL
        OR (SELECT n.client_id FROM notifications n WHERE n.id = r.notification_id) = $2
), edge AS (
    SELECT count(*) = $3 AND min(started_at) >= $1 AS truncated FROM recent
)
SELECT s.host,
       count(*) AS attempts,
       count(*) FILTER (WHERE s.outcome <> 'delivered') AS failures,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms) AS p95_ms,
       max(s.started_at) FILTER (WHERE s.outcome <> 'delivered') AS last_failure_at,
       (SELECT truncated FROM edge) AS truncated
  FROM scoped s
 GROUP BY s.host
 ORDER BY p95_ms DESC, s.host
 LIMIT $4;

-- name: stats_attempts_truncated --
-- Whether the newest $2 attempts all started at or after $1 (the bound cut the window short).
SELECT count(*) = $2 AND min(started_at) >= $1
  FROM (SELECT started_at FROM delivery_attempts ORDER BY id DESC LIMIT $2) r;

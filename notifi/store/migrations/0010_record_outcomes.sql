-- Both functions in PL/pgSQL, which keeps each statement's plan for the session: a LANGUAGE sql
-- function that is not inlined is parsed and planned again at every call, which made the status
-- refresh (the same rule as migration 0008, unchanged) about 0.8 ms of Postgres CPU per call, the
-- largest cost of a delivered webhook's record; now about 0.1 ms.
CREATE OR REPLACE FUNCTION notifi_refresh_status(ids uuid[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
        UPDATE notifications n
           SET status = s.status,
               delivered_at = CASE WHEN s.status = 'delivered' THEN s.last_delivered END,
               updated_at = now()
          FROM (
            SELECT d.notification_id,
                   max(d.delivered_at) AS last_delivered,
                   CASE
                     WHEN bool_and(d.status = 'cancelled') THEN 'cancelled'
                     WHEN bool_or(d.status = 'cancelled')
                          AND EXISTS (SELECT FROM notifications m
                                       WHERE m.id = d.notification_id AND m.deleted_at IS NOT NULL)
                          THEN 'cancelled'
                     -- From here on the cancelled deliveries do not count (at least one other is
                     -- left): each rule looks only at the rest, as FILTER says where it matters.
                     WHEN bool_and(d.status = 'delivered') FILTER (WHERE d.status <> 'cancelled')
                          THEN 'delivered'
                     WHEN bool_and(d.status = 'expired') FILTER (WHERE d.status <> 'cancelled')
                          THEN 'expired'
                     WHEN bool_and(d.status IN ('failed', 'expired'))
                              FILTER (WHERE d.status <> 'cancelled')
                          THEN 'failed'
                     WHEN bool_and(d.status IN ('delivered', 'failed', 'expired'))
                              FILTER (WHERE d.status <> 'cancelled')
                          THEN 'partially_failed'
                     WHEN bool_or(d.status = 'paused')
                          AND NOT bool_or(d.status IN ('pending', 'scheduled', 'delivering'))
                          THEN 'paused'
                     WHEN bool_or(d.status = 'delivering' OR d.attempts > 0
                                  OR d.status IN ('delivered', 'failed', 'expired'))
                              FILTER (WHERE d.status <> 'cancelled')
                          THEN 'delivering'
                     WHEN bool_and(d.status = 'scheduled') FILTER (WHERE d.status <> 'cancelled')
                          THEN 'scheduled'
                     ELSE 'pending'
                   END AS status
              FROM deliveries d
             WHERE d.notification_id = ANY (ids)
             GROUP BY d.notification_id
          ) s
         WHERE n.id = s.notification_id AND n.status IS DISTINCT FROM s.status;
END
$fn$;

-- The delivery recorder's batch of finished attempts in one call, status refresh included: the
-- attempt log, the delivery rows and the outbox rows of retries (one statement, as the named
-- query record_outcomes was), then the notifications' derived status, which must see those
-- updates (a data-modifying CTE's changes are invisible to its own statement, so it was a second
-- statement). Called on its own, the call is its own transaction: one round trip where BEGIN,
-- two statements and COMMIT were four, a batch of one at low rates being the common case.
-- A delivered row is never downgraded (a delivered outcome still adds its details to a row the
-- Redis-down fallback marked delivered first); a cancelled, failed or expired one only upgraded
-- to delivered (the attempt began before the delete or the expiry). An outcome without an
-- attempt (no outcome text: a job found already delivered, expired before it was tried, or
-- paused because its destination is disabled) counts no attempt unless it says delivered. A
-- paused delivery gets no outbox row: enabling its destination resumes it.
CREATE OR REPLACE FUNCTION notifi_record_outcomes(
    uuid[], smallint[], int[], timestamptz[], real[], text[], int[], text[], text[],
    timestamptz[], uuid[]
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    touched uuid[];
BEGIN
    WITH o AS (
        SELECT *
          FROM unnest($1::uuid[], $2::smallint[], $3::int[], $4::timestamptz[], $5::real[],
                      $6::text[], $7::int[], $8::text[], $9::text[], $10::timestamptz[],
                      $11::uuid[])
               AS t(notification_id, position, attempt, started_at, duration_ms, outcome,
                    status_code, error, new_status, next_attempt_at, destination_id)
    ), logged AS (
        INSERT INTO delivery_attempts (notification_id, position, attempt, started_at, duration_ms,
                                       outcome, status_code, error, destination_id)
        SELECT notification_id, position, attempt, started_at, duration_ms, outcome, status_code,
               error, destination_id
          FROM o
         WHERE outcome IS NOT NULL
    ), updated AS (
        UPDATE deliveries d
           SET status = o.new_status,
               attempts = CASE WHEN o.outcome IS NULL AND o.new_status <> 'delivered'
                               THEN d.attempts ELSE greatest(d.attempts, o.attempt) END,
               last_error = CASE WHEN o.outcome IS NULL THEN d.last_error ELSE o.error END,
               last_status_code = coalesce(o.status_code, d.last_status_code),
               next_attempt_at = coalesce(o.next_attempt_at, d.next_attempt_at),
               delivered_at = CASE WHEN o.new_status <> 'delivered' THEN NULL
                                   WHEN d.status = 'delivered' THEN d.delivered_at
                                   ELSE now() END,
               claimed_until = NULL,
               claimed_by = NULL,
               updated_at = now()
          FROM o
         WHERE d.notification_id = o.notification_id AND d.position = o.position
           AND (d.status <> 'delivered' OR o.new_status = 'delivered')
           AND (o.new_status = 'delivered' OR d.status NOT IN ('cancelled', 'failed', 'expired'))
     RETURNING d.notification_id, d.position, d.status, d.next_attempt_at, o.attempt
    ), retries AS (
        INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)
        SELECT u.notification_id, u.position, u.attempt + 1, u.next_attempt_at, n.partition_key
          FROM updated u
          JOIN notifications n ON n.id = u.notification_id
         WHERE u.status = 'delivering'
    )
    SELECT array_agg(DISTINCT notification_id) INTO touched FROM updated;
    IF touched IS NOT NULL THEN
        PERFORM notifi_refresh_status(touched);
    END IF;
END
$fn$;

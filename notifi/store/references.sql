-- Stored destinations as notifications refer to them (notifi.store.references).

-- name: find_stored_destinations --
-- One request's (or one bulk's) references at once: the client's own stored destinations
-- among ids $2 and names $3 (the primary key and destinations_client_name).
SELECT id, kind, name
  FROM destinations
 WHERE client_id = $1
   AND (id = ANY ($2::uuid[]) OR name = ANY ($3::text[]));

-- name: settle_accepted --
-- New notifications whose deliveries made their status other than the schedule's: unmatched
-- (a topic nobody subscribes to: no deliveries at all) or paused (only disabled destinations).
UPDATE notifications n
   SET status = t.status
  FROM unnest($1::uuid[], $2::text[]) AS t(id, status)
 WHERE n.id = t.id;

-- name: insert_deliveries_expanded --
-- The deliveries of a batch in which something refers to a stored destination or a topic, in
-- one statement. First the listed ones ($1-$8), in request order ($2); one naming a stored
-- destination ($7) is written as that destination is now: paused when it is disabled, left
-- out when it was deleted since the request's lookup (or is not the client's). Then each topic
-- ($9-$13) adds every stored destination of the client subscribed to it or to "*" that is not
-- listed already, in id order, paused when it is disabled (disabled means paused, never
-- dropped). A topic is looked up once per client in the batch (however many notifications
-- carry it), on that client's destinations only, through destinations_client_id_desc, each
-- checked with `= ANY (topics)`; OFFSET 0 keeps the LATERAL a probe per (client, topic), which
-- a flattened join may trade for a scan of every client's destinations. Not `&&` on the gin
-- index either: it reads every client's "*" subscribers for each probe.
-- Every destination the batch may use is locked FOR KEY SHARE, in id order, before anything
-- reads its state (`locked`, the only source of it below): an enable (lock_destination's FOR
-- UPDATE) or a DELETE waits for this transaction to commit, and one that committed first is
-- what the lock returns (the row as it is now, or none when deleted). Without it a paused row
-- written while an enable or a delete commits is seen by neither and stays paused for ever.
-- The recorder's FOR NO KEY UPDATE does not conflict. A subscriber is found on the snapshot and
-- its topics checked again on the locked row (a PATCH that unsubscribed it since wins). The
-- candidates are handed to the lock as one array, so it probes the primary key for each: a
-- semi-join may be planned as a hash join over every client's destinations.
-- Positions count from 0 per notification in that order, so a destination left out leaves no
-- gap. The rows written come back for the answer to show.
WITH given AS (
    SELECT *
      FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                  $6::timestamptz[], $7::uuid[], $8::text[])
           AS t(notification_id, ord, kind, destination, status, next_attempt_at,
                destination_id, client_id)
), topical AS (
    SELECT *
      FROM unnest($9::uuid[], $10::text[], $11::text[], $12::text[], $13::timestamptz[])
           AS t(notification_id, client_id, topic, status, next_attempt_at)
), wanted AS (
    SELECT DISTINCT client_id, topic FROM topical
), candidates AS (
    SELECT destination_id AS id FROM given WHERE destination_id IS NOT NULL
    UNION
    SELECT s.id
      FROM wanted w
     CROSS JOIN LATERAL (SELECT s.id
                           FROM destinations s
                          WHERE s.client_id = w.client_id
                            AND (w.topic = ANY (s.topics) OR '*' = ANY (s.topics))
                         OFFSET 0) s
), locked AS MATERIALIZED (
    SELECT s.id, s.client_id, s.kind, s.enabled, s.topics
      FROM destinations s
     WHERE s.id = ANY (ARRAY(SELECT id FROM candidates))
     ORDER BY s.id
       FOR KEY SHARE OF s
), listed AS (
    SELECT t.notification_id, t.ord, t.kind, t.destination::jsonb AS destination,
           t.destination_id, t.next_attempt_at,
           CASE WHEN NOT s.enabled THEN 'paused' ELSE t.status END AS status
      FROM given t
      LEFT JOIN locked s ON s.id = t.destination_id AND s.client_id = t.client_id
     WHERE t.destination_id IS NULL OR s.id IS NOT NULL
), matched AS (
    SELECT w.client_id, w.topic, s.id, s.kind, s.enabled
      FROM wanted w
      JOIN locked s ON s.client_id = w.client_id
                   AND (w.topic = ANY (s.topics) OR '*' = ANY (s.topics))
), subscribed AS (
    SELECT t.notification_id, m.kind,
           jsonb_build_object('type', m.kind, 'destination_id', m.id) AS destination,
           m.id AS destination_id, t.next_attempt_at,
           CASE WHEN NOT m.enabled THEN 'paused' ELSE t.status END AS status
      FROM topical t
      JOIN matched m ON m.client_id = t.client_id AND m.topic = t.topic
     WHERE NOT EXISTS (SELECT 1 FROM listed l
                        WHERE l.notification_id = t.notification_id
                          AND l.destination_id = m.id)
), every AS (
    SELECT notification_id, 0 AS part, ord, NULL::uuid AS by_id, kind, destination,
           destination_id, status, next_attempt_at
      FROM listed
    UNION ALL
    SELECT notification_id, 1, 0, destination_id, kind, destination, destination_id, status,
           next_attempt_at
      FROM subscribed
)
INSERT INTO deliveries (notification_id, position, kind, destination, status, next_attempt_at,
                        destination_id)
SELECT notification_id,
       (row_number() OVER (PARTITION BY notification_id ORDER BY part, ord, by_id) - 1)::smallint,
       kind, destination, status, next_attempt_at, destination_id
  FROM every
RETURNING notification_id, position, kind, destination, status, next_attempt_at;

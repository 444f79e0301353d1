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

-- Stored destinations (issue 12): endpoints a client manages through the API, subscribed to
-- topics, with a signing secret that can be rotated, a shared rate limit, and a pause
-- (disabled) that holds their deliveries instead of dropping them.
CREATE TABLE destinations (
    id                     uuid PRIMARY KEY,          -- UUIDv7, made by the API
    client_id              text NOT NULL,
    name                   text,                      -- unique per client when given
    description            text NOT NULL DEFAULT '',
    kind                   text NOT NULL,             -- webhook, email, slack, discord, teams
    config                 jsonb NOT NULL,            -- the type's fields (url, headers, to, ...), no secret
    secret                 text,                      -- webhook signing secret (never returned after create/rotate)
    previous_secret        text,                      -- the secret before the last rotation ...
    previous_secret_until  timestamptz,               -- ... still signed with until then
    topics                 text[] NOT NULL DEFAULT '{}',
    rate_limit             real,                      -- deliveries per second, all processes (null: none)
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text,
    disabled_at            timestamptz,
    failing_since          timestamptz,               -- first failure since the last success
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX destinations_client_name ON destinations (client_id, name) WHERE name IS NOT NULL;
CREATE INDEX destinations_client_id_desc ON destinations (client_id, id DESC);
-- Topic expansion at accept: a client's enabled destinations subscribed to a topic (or "*").
CREATE INDEX destinations_topics ON destinations USING gin (topics) WHERE enabled;

-- A delivery to a stored destination names it; its `destination` column then holds only
-- {"type", "destination_id"} and the worker reads the destination's fields as they are when
-- it sends (a PATCH or a rotation applies to what has not gone out yet).
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS destination_id uuid;
-- Recover (failed in a window), delete (cancel what is undelivered), enable (resume paused).
CREATE INDEX deliveries_destination
    ON deliveries (destination_id, updated_at) WHERE destination_id IS NOT NULL;
CREATE INDEX deliveries_paused
    ON deliveries (destination_id, notification_id, position) WHERE status = 'paused';

-- The attempt log names the stored destination too: its 24 h stats read a narrow index range.
ALTER TABLE delivery_attempts ADD COLUMN IF NOT EXISTS destination_id uuid;
CREATE INDEX delivery_attempts_destination
    ON delivery_attempts (destination_id, started_at) WHERE destination_id IS NOT NULL;

-- The derived status learns 'paused': nothing is open any more but some delivery waits for
-- its destination to be enabled again. A notification whose topic matched no destination
-- has no deliveries at all: the accept writes 'unmatched' and this function never touches it.
CREATE OR REPLACE FUNCTION notifi_refresh_status(ids uuid[]) RETURNS void LANGUAGE sql AS $$
    UPDATE notifications n
       SET status = s.status,
           delivered_at = CASE WHEN s.status = 'delivered' THEN s.last_delivered END,
           updated_at = now()
      FROM (
        SELECT d.notification_id,
               max(d.delivered_at) AS last_delivered,
               CASE
                 WHEN bool_or(d.status = 'cancelled') THEN 'cancelled'
                 WHEN bool_and(d.status = 'delivered') THEN 'delivered'
                 WHEN bool_and(d.status = 'expired') THEN 'expired'
                 WHEN bool_and(d.status IN ('failed', 'expired')) THEN 'failed'
                 WHEN bool_and(d.status IN ('delivered', 'failed', 'expired'))
                      THEN 'partially_failed'
                 WHEN bool_or(d.status = 'paused')
                      AND NOT bool_or(d.status IN ('pending', 'scheduled', 'delivering'))
                      THEN 'paused'
                 WHEN bool_or(d.status = 'delivering' OR d.attempts > 0
                              OR d.status IN ('delivered', 'failed', 'expired'))
                      THEN 'delivering'
                 WHEN bool_and(d.status = 'scheduled') THEN 'scheduled'
                 ELSE 'pending'
               END AS status
          FROM deliveries d
         WHERE d.notification_id = ANY (ids)
         GROUP BY d.notification_id
      ) s
     WHERE n.id = s.notification_id AND n.status IS DISTINCT FROM s.status;
$$;

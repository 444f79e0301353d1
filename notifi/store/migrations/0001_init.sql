-- Notifi's tables: notifications, one delivery per destination, the attempt log, and the
-- outbox of work that is due later (scheduled deliveries and retries).

CREATE TABLE notifications (
    id              uuid PRIMARY KEY,              -- UUIDv7, made by the API: time-ordered
    client_id       text NOT NULL,
    idempotency_key text,
    request_hash    bytea,                         -- to tell a replay from a different body
    title           text NOT NULL DEFAULT '',
    body            text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}',
    scheduled_at    timestamptz,                   -- null: now
    partition_key   integer NOT NULL,
    status          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    delivered_at    timestamptz,
    routed_at       timestamptz
);

CREATE UNIQUE INDEX notifications_idempotency
    ON notifications (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Newest-first listing per client (ids are time-ordered, so id order is creation order).
CREATE INDEX notifications_client_id_desc ON notifications (client_id, id DESC);
-- The back-stop's search for accepted notifications nobody routed.
CREATE INDEX notifications_unrouted
    ON notifications (created_at) WHERE routed_at IS NULL AND deleted_at IS NULL;

CREATE TABLE deliveries (
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    position         smallint NOT NULL,            -- index in the request's destinations
    kind             text NOT NULL,                -- webhook, email, ...
    destination      jsonb NOT NULL,               -- as given, secrets included: never returned
    status           text NOT NULL,                -- pending scheduled delivering delivered failed cancelled
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    last_status_code integer,
    next_attempt_at  timestamptz NOT NULL,
    claimed_until    timestamptz,                  -- the Postgres lease, used when Redis is down
    delivered_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, position)
);

-- The back-stop's search for deliveries whose job was lost (bus or process gone).
CREATE INDEX deliveries_open
    ON deliveries (next_attempt_at) WHERE status IN ('pending', 'scheduled', 'delivering');

CREATE TABLE delivery_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id uuid NOT NULL,
    position        smallint NOT NULL,
    attempt         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     real NOT NULL,
    outcome         text NOT NULL,                 -- delivered retry permanent
    status_code     integer,                       -- HTTP status or SMTP reply code
    error           text,                          -- bounded length, never a secret
    FOREIGN KEY (notification_id, position) REFERENCES deliveries ON DELETE CASCADE
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (notification_id, position);

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id uuid NOT NULL,
    position        smallint NOT NULL,
    attempt         integer NOT NULL,              -- which attempt this job is for
    due_at          timestamptz NOT NULL,
    partition_key   integer NOT NULL
);
-- The poller scans due_at in order and filters its partition range inside the index.
CREATE INDEX outbox_due ON outbox (due_at, partition_key);
CREATE INDEX outbox_notification ON outbox (notification_id);

-- A notification's status, derived from its deliveries; the one place that knows the rule.
CREATE FUNCTION notifi_refresh_status(ids uuid[]) RETURNS void LANGUAGE sql AS $$
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
                 WHEN bool_and(d.status = 'failed') THEN 'failed'
                 WHEN bool_and(d.status IN ('delivered', 'failed')) THEN 'partially_failed'
                 WHEN bool_or(d.status = 'delivering' OR d.attempts > 0
                              OR d.status IN ('delivered', 'failed')) THEN 'delivering'
                 WHEN bool_and(d.status = 'scheduled') THEN 'scheduled'
                 ELSE 'pending'
               END AS status
          FROM deliveries d
         WHERE d.notification_id = ANY (ids)
         GROUP BY d.notification_id
      ) s
     WHERE n.id = s.notification_id AND n.status IS DISTINCT FROM s.status;
$$;

-- Expiry (DESIGN §3): a notification may carry an expiry, after which no attempt starts; what
-- is still open then ends 'expired', a delivery status of its own. The column is absolute
-- (a request's ttl is turned into it at submit) and never changes afterwards, so it needs no
-- index: the delivery worker reads it with the job it loads anyway.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS expires_at timestamptz;

-- The derived status learns 'expired': every delivery expired. Expired counts as ended
-- undelivered: with failed ones (and nothing delivered) the notification failed; beside
-- delivered ones it partially failed. (Statuses are plain text, no CHECK constraint to widen.)
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

-- A notification is 'cancelled' when it was deleted and something of it was cancelled (its
-- delete cancels what is undelivered), or when every delivery was cancelled. Since stored
-- destinations, deleting one cancels what is undelivered to it, in notifications that go
-- elsewhere too: unless one of those two holds, cancelled deliveries are left out and the
-- others derive the status by the rules before (three destinations, one deleted, the other two
-- delivered: 'delivered', not 'cancelled').
-- Still one UPDATE over the deliveries of `ids`, as cheap as before: the notification's row is
-- read (by its primary key) only when one of its deliveries is cancelled, which the recorder's
-- batches, the hot caller, almost never hold.
CREATE OR REPLACE FUNCTION notifi_refresh_status(ids uuid[]) RETURNS void LANGUAGE sql AS $$
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
$$;

-- Idempotency keys are honoured for api.idempotency_retention seconds; the back-stop then
-- clears them. This index finds the keys to clear without scanning every notification.
CREATE INDEX notifications_idempotency_age
    ON notifications (created_at) WHERE idempotency_key IS NOT NULL;

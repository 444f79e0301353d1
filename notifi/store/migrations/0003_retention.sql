-- Retention (notifi.store.retention) removes finished notifications together with their
-- deliveries, attempts and outbox rows, explicitly, in one statement per bounded step.
-- The foreign keys from deliveries and delivery_attempts go: their per-row cascade triggers
-- cost a quarter to 40% of that removal (bench.retention at a million rows: ~54k
-- notifications removed per backend CPU-second with them, ~73k without), and their check on
-- every insert of a delivery or an attempt looks up and key-share-locks the parent row on the
-- hot paths. Nothing else deletes these rows (a DELETE through the API only marks the
-- notification), and the sweep removes a notification and its rows in the same statement.
-- No index is added: every table is already indexed by notification id first, which is all
-- the sweep's range scans need.
ALTER TABLE delivery_attempts
    DROP CONSTRAINT IF EXISTS delivery_attempts_notification_id_position_fkey;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_notification_id_fkey;

-- Who holds a delivery's Postgres lease (the claim used while Redis is away): the job token
-- `{instance_id}/{incarnation}:{topic}:{partition}:{offset}` of notifi.claims. A restarted
-- process takes over the leases of its own dead predecessor (same instance id, another
-- incarnation) at once instead of waiting for `claimed_until`.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS claimed_by text;

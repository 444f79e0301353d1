-- A notification's topic (issue 12): expanded at accept to the stored destinations subscribed
-- to it, and kept to be shown. Nullable without a default: adding it rewrites nothing.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS topic text;

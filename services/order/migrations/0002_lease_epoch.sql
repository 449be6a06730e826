-- Fencing and fair resumption (see src/lease.rs).
-- Every claim of an order's saga bumps lease_epoch, and every saga write is
-- fenced by the epoch its run claimed: a run that lost its lease (to another
-- replica, or to a later run in the same process) can no longer write.
ALTER TABLE orders ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
-- Consecutive runs that paused without finishing: the next one is due after a
-- backoff that grows with it, so orders that keep failing do not hide the rest.
ALTER TABLE orders ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
-- The sweeper takes unfinished orders in the order they become due.
CREATE INDEX orders_due ON orders (lease_until) WHERE step <> 'done';

-- Payments, refunds and idempotency keys. Portable SQL: the same file runs on
-- SQLite and PostgreSQL. Money is BIGINT minor units plus a currency code; times
-- are microseconds since the Unix epoch; ids are UUID text.

-- One charge attempt that reached a decision.
CREATE TABLE payments (
    id              TEXT   PRIMARY KEY,
    order_id        TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    currency        TEXT   NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    -- Changed only by a conditional UPDATE (never read-modify-write), which is
    -- what keeps refunds from adding up to more than the charge.
    amount_refunded BIGINT NOT NULL CHECK (amount_refunded >= 0 AND amount_refunded <= amount),
    -- Refunds applied so far. Each refund stores its number (seq), so a payment
    -- row and its refunds read at different moments can be matched exactly.
    refund_count    BIGINT NOT NULL CHECK (refund_count >= 0),
    status          TEXT   NOT NULL
        CHECK (status IN ('CAPTURED', 'DECLINED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    decline_reason  TEXT
        CHECK (decline_reason IN ('CARD_DECLINED', 'INSUFFICIENT_FUNDS')),
    payment_method  TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CHECK ((status = 'DECLINED') = (decline_reason IS NOT NULL)),
    CHECK (status <> 'DECLINED' OR amount_refunded = 0)
);

-- At most one successful charge per order, held by the database itself: a
-- declined attempt does not count, a refunded one still does.
CREATE UNIQUE INDEX payments_one_success_per_order ON payments (order_id)
    WHERE status <> 'DECLINED';

-- ListPayments pages newest first in (created_at, id) order, optionally by user
-- or by order.
CREATE INDEX payments_created_at_id ON payments (created_at, id);
CREATE INDEX payments_user_created_at_id ON payments (user_id, created_at, id);
CREATE INDEX payments_order_created_at_id ON payments (order_id, created_at, id);

-- Money given back; the currency is the payment's.
CREATE TABLE refunds (
    id         TEXT   PRIMARY KEY,
    payment_id TEXT   NOT NULL REFERENCES payments (id),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    reason     TEXT   NOT NULL,
    seq        BIGINT NOT NULL CHECK (seq > 0),
    created_at BIGINT NOT NULL,
    UNIQUE (payment_id, seq)
);

-- The first outcome of every Charge and Refund key. A charge claims its key
-- here before it calls the processor (result_id NULL = still running) and sets
-- result_id when the decision is recorded; a refund inserts its key with the
-- result in the same transaction as the refund.
CREATE TABLE idempotency_keys (
    operation       TEXT   NOT NULL CHECK (operation IN ('charge', 'refund')),
    idempotency_key TEXT   NOT NULL,
    -- The canonical request: the same key with another request is refused.
    fingerprint     TEXT   NOT NULL,
    -- Charges only: the order being paid.
    order_id        TEXT,
    -- The payment (charge) or refund the key produced; NULL while running.
    result_id       TEXT,
    -- Who holds a running claim; finishing or releasing checks it, so a holder
    -- whose lease was taken over cannot record anything.
    claim_token     TEXT   NOT NULL,
    claimed_at      BIGINT NOT NULL,
    PRIMARY KEY (operation, idempotency_key)
);

-- One running charge per order: the processor is never asked twice at once for
-- the same order, whatever the keys.
CREATE UNIQUE INDEX idempotency_keys_one_running_charge_per_order
    ON idempotency_keys (order_id) WHERE result_id IS NULL;

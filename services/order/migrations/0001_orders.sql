-- Orders and the saga's progress. Portable SQL (SQLite and PostgreSQL).
-- Times are microseconds since the Unix epoch; money is BIGINT minor units.
CREATE TABLE orders (
    id              TEXT   PRIMARY KEY,
    user_id         TEXT   NOT NULL,
    idempotency_key TEXT   NOT NULL,
    -- Canonical text of the request, to tell a replay from a reused key.
    fingerprint     TEXT   NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    -- The next saga step to run (see saga.rs); DONE when nothing is left.
    step            TEXT   NOT NULL,
    payment_method  TEXT   NOT NULL,
    payment_id      TEXT,
    currency        TEXT,
    total           BIGINT,
    -- 1 while a Charge was sent whose outcome is not known yet.
    charge_unknown  BIGINT NOT NULL DEFAULT 0 CHECK (charge_unknown IN (0, 1)),
    cancel_reason   TEXT,
    cancel_detail   TEXT,
    -- Bumped on every change: watchers skip what they have already sent.
    version         BIGINT NOT NULL,
    -- Which process drives the saga, and until when (several replicas, crashes).
    lease_owner     TEXT,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (user_id, idempotency_key)
);

CREATE INDEX orders_user_created ON orders (user_id, created_at, id);
CREATE INDEX orders_created ON orders (created_at, id);
CREATE INDEX orders_step_lease ON orders (step, lease_until);

CREATE TABLE order_items (
    order_id   TEXT   NOT NULL REFERENCES orders (id),
    line_no    BIGINT NOT NULL,
    sku        TEXT   NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    -- Filled from the inventory's reservation: the authoritative prices.
    product_id TEXT,
    name       TEXT,
    unit_price BIGINT,
    PRIMARY KEY (order_id, line_no)
);

-- Products, stock, reservations and the idempotency records of stock changes.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are
-- microseconds since the Unix epoch; ids are UUID text; money is BIGINT minor
-- units. The CHECK constraints are a backstop: the service never relies on them,
-- but a bug that would oversell or unbalance the ledger fails instead of committing.
CREATE TABLE products (
    id          TEXT    PRIMARY KEY,
    sku         TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    unit_price  BIGINT  NOT NULL CHECK (unit_price > 0),
    currency    TEXT    NOT NULL,
    -- Units in stock, reserved ones included; reserved <= on_hand means
    -- nothing is ever promised twice.
    on_hand     BIGINT  NOT NULL CHECK (on_hand >= 0),
    reserved    BIGINT  NOT NULL CHECK (reserved >= 0),
    -- Net units ever received (adjustments and imports) and units sold (committed,
    -- not returned): every unit received is either on hand or sold.
    received    BIGINT  NOT NULL,
    sold        BIGINT  NOT NULL CHECK (sold >= 0),
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    CHECK (reserved <= on_hand),
    CHECK (received = on_hand + sold)
);

-- One reservation per order; the order id is the idempotency key of ReserveStock.
CREATE TABLE reservations (
    order_id   TEXT    PRIMARY KEY,
    status     TEXT    NOT NULL CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED')),
    total      BIGINT  NOT NULL CHECK (total >= 0),
    currency   TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- Lines keep the SKU, name and price at reservation time: later catalogue
-- changes never reprice an order.
CREATE TABLE reservation_lines (
    order_id   TEXT    NOT NULL REFERENCES reservations (order_id),
    line_no    BIGINT  NOT NULL,
    product_id TEXT    NOT NULL REFERENCES products (id),
    sku        TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    quantity   BIGINT  NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price BIGINT  NOT NULL CHECK (unit_price > 0),
    PRIMARY KEY (order_id, line_no)
);

-- The stock ledger of AdjustStock, keyed by the client's idempotency key, with
-- the stock right after the adjustment so a replay returns the first result.
CREATE TABLE stock_adjustments (
    idempotency_key TEXT    PRIMARY KEY,
    product_id      TEXT    NOT NULL REFERENCES products (id),
    delta           BIGINT  NOT NULL,
    reason          TEXT    NOT NULL,
    on_hand_after   BIGINT  NOT NULL,
    reserved_after  BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL
);

CREATE INDEX stock_adjustments_product ON stock_adjustments (product_id, created_at);

-- Finished ImportStock calls: a fingerprint of the rows as sent (to tell a replay
-- from a different import under the same key) and the summary as JSON.
CREATE TABLE stock_imports (
    idempotency_key TEXT    PRIMARY KEY,
    fingerprint     TEXT    NOT NULL,
    summary         TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);

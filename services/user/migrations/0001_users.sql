-- Users. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Times are microseconds since the Unix epoch; ids are UUID text.
CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    -- The email as the user typed it, and its lowercase form, which is what
    -- uniqueness and sign-in compare (emails are case-insensitive in practice).
    email         TEXT    NOT NULL,
    email_key     TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    -- Comma-separated role names, e.g. 'customer' or 'admin,customer'.
    roles         TEXT    NOT NULL,
    -- 1 or 0: the sqlx Any driver cannot decode SQLite booleans.
    active        BIGINT  NOT NULL CHECK (active IN (0, 1)),
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- ListUsers pages in (created_at, id) order.
CREATE INDEX users_created_at_id ON users (created_at, id);

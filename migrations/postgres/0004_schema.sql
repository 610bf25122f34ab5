-- The PostgreSQL schema, equal to SQLite's after migrations 0001–0004 (the
-- version numbers of both backends name the same logical schema). Integers
-- are BIGINT (`deleted` is 0/1 like SQLite's), blobs BYTEA.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    hash          BYTEA NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT,
    expires_at    BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

-- One row: this database's identity, part of every cursor.
CREATE TABLE sync_state (
    id     BIGINT PRIMARY KEY CHECK (id = 1),
    epoch  TEXT NOT NULL
);
INSERT INTO sync_state (id, epoch) VALUES (1, substr(md5(random()::text || clock_timestamp()::text), 1, 16));

-- Per user: the change sequence (locked with the user's advisory lock in
-- every write, so sequence numbers are allocated in commit order per user)
-- and the usage counted for quotas.
CREATE TABLE user_state (
    user_id         TEXT PRIMARY KEY,
    last_seq        BIGINT NOT NULL,
    records         BIGINT NOT NULL,
    bytes           BIGINT NOT NULL,
    open_conflicts  BIGINT NOT NULL
);

CREATE TABLE records (
    user_id     TEXT NOT NULL,
    entity      TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     BIGINT NOT NULL,
    deleted     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (user_id, entity, id)
);
CREATE UNIQUE INDEX records_by_seq ON records (user_id, seq);

CREATE TABLE record_history (
    user_id     TEXT NOT NULL,
    entity      TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     BIGINT NOT NULL,
    deleted     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, entity, id, version)
);

CREATE TABLE conflicts (
    n               BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL,
    entity          TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    incoming        TEXT NOT NULL,
    server_version  BIGINT,
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    created_at      BIGINT NOT NULL,
    resolved_at     BIGINT
);
CREATE INDEX conflicts_by_user ON conflicts (user_id, status, n);
CREATE INDEX conflicts_by_record ON conflicts (user_id, entity, record_id, server_version);

CREATE TABLE push_log (
    user_id       TEXT NOT NULL,
    push_id       TEXT NOT NULL,
    body_hash     BYTEA NOT NULL,
    response      TEXT NOT NULL,
    packed        BYTEA,
    splices       TEXT,
    stored_bytes  BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, push_id)
);
CREATE INDEX push_log_by_age ON push_log (created_at);

-- Sync state: one row. `last_seq` is the database-wide change sequence;
-- `epoch` identifies this database so a cursor from another one (a restore,
-- a reset) is recognised and answered with 410 instead of silently skipping.
CREATE TABLE sync_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq  INTEGER NOT NULL,
    epoch     TEXT NOT NULL
) STRICT;
INSERT INTO sync_state (id, last_seq, epoch) VALUES (1, 0, lower(hex(randomblob(8))));

-- The current version of every record. `data` is the client's JSON object text,
-- spliced into pull responses unparsed. `seq` is the change sequence of the
-- last write; pull is "rows of mine with seq > cursor, in seq order".
CREATE TABLE records (
    user_id     TEXT NOT NULL,
    entity      TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    deleted     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    seq         INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX records_key ON records (user_id, entity, id);
CREATE UNIQUE INDEX records_by_seq ON records (user_id, seq);

-- Earlier versions of each record (bounded per entity type), so a three-way
-- merge can find the base a client started from.
CREATE TABLE record_history (
    user_id     TEXT NOT NULL,
    entity      TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    deleted     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, entity, id, version)
) STRICT, WITHOUT ROWID;

-- Incoming records that lost to the server's record; never dropped.
CREATE TABLE conflicts (
    n            INTEGER PRIMARY KEY,       -- paging order
    id           TEXT NOT NULL UNIQUE,      -- public id
    user_id      TEXT NOT NULL,
    entity       TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    incoming     TEXT NOT NULL,             -- the incoming record, wire JSON
    server       TEXT,                      -- the server's record at the time, wire JSON
    reason       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    created_at   INTEGER NOT NULL,
    resolved_at  INTEGER
) STRICT;
CREATE INDEX conflicts_by_user ON conflicts (user_id, status, n);

-- Idempotency: the response of each push, by (user, pushId), for retries.
CREATE TABLE push_log (
    user_id     TEXT NOT NULL,
    push_id     TEXT NOT NULL,
    body_hash   BLOB NOT NULL,
    response    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, push_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX push_log_by_age ON push_log (created_at);

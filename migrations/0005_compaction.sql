-- Tombstone compaction: the highest change sequence of a tombstone purged
-- for the user. A cursor below it may have missed a delete: it gets 410.
ALTER TABLE user_state ADD COLUMN purged_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX records_tombstones ON records (updated_at) WHERE deleted = 1;

-- Conflicts remember the pushing client (`clientId`), and may end
-- `superseded`: a later accepted version of the same record from the same
-- client makes the stale edit moot. SQLite cannot change a CHECK in place,
-- so the table is rebuilt with the same rows.
CREATE TABLE conflicts_new (
    n               INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL,
    entity          TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    incoming        TEXT NOT NULL,
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'resolved', 'superseded')),
    created_at      INTEGER NOT NULL,
    resolved_at     INTEGER,
    server_version  INTEGER,
    client_id       TEXT
) STRICT;
INSERT INTO conflicts_new (n, id, user_id, entity, record_id, incoming, reason, status, created_at, resolved_at, server_version)
SELECT n, id, user_id, entity, record_id, incoming, reason, status, created_at, resolved_at, server_version FROM conflicts;
DROP TABLE conflicts;
ALTER TABLE conflicts_new RENAME TO conflicts;
CREATE INDEX conflicts_by_user ON conflicts (user_id, status, n);
CREATE INDEX conflicts_by_record ON conflicts (user_id, entity, record_id, server_version);

-- Tombstone compaction: the highest change sequence of a tombstone purged
-- for the user. A cursor below it may have missed a delete: it gets 410.
ALTER TABLE user_state ADD COLUMN purged_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX records_tombstones ON records (updated_at) WHERE deleted = 1;

-- Conflicts remember the pushing client (`clientId`), and may end
-- `superseded`: a later accepted version of the same record from the same
-- client makes the stale edit moot.
ALTER TABLE conflicts ADD COLUMN client_id TEXT;
ALTER TABLE conflicts DROP CONSTRAINT conflicts_status_check;
ALTER TABLE conflicts ADD CONSTRAINT conflicts_status_check CHECK (status IN ('open', 'resolved', 'superseded'));

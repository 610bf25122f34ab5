-- Tombstone compaction: the highest change sequence of a tombstone purged
-- for the user. A cursor below it may have missed a delete: it gets 410.
ALTER TABLE user_state ADD COLUMN purged_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX records_tombstones ON records (updated_at) WHERE deleted = 1;

-- Per-user change sequences, usage counters for quotas, conflicts that point
-- at the server version they met instead of copying it, and compressed
-- pushId responses.

-- One row per user with data. `last_seq` is this user's change sequence
-- (a cursor reveals nothing about other users' writes). The counters back
-- the per-user quotas: `records` counts current records (tombstones
-- included), `bytes` the JSON text of current records, open conflicts'
-- incoming records and stored pushId responses.
CREATE TABLE user_state (
    user_id         TEXT PRIMARY KEY NOT NULL,
    last_seq        INTEGER NOT NULL,
    records         INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    open_conflicts  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Existing sequence numbers are unique per user already and keep their order.
INSERT INTO user_state (user_id, last_seq, records, bytes, open_conflicts)
SELECT u,
       coalesce((SELECT max(seq) FROM records WHERE user_id = u), 0),
       (SELECT count(*) FROM records WHERE user_id = u),
       coalesce((SELECT sum(length(CAST(data AS BLOB))) FROM records WHERE user_id = u), 0)
         + coalesce((SELECT sum(length(CAST(incoming AS BLOB))) FROM conflicts
                     WHERE user_id = u AND status = 'open'), 0)
         + coalesce((SELECT sum(length(CAST(response AS BLOB))) FROM push_log WHERE user_id = u), 0),
       (SELECT count(*) FROM conflicts WHERE user_id = u AND status = 'open')
FROM (SELECT user_id AS u FROM records
      UNION SELECT user_id FROM conflicts
      UNION SELECT user_id FROM push_log);

-- The database-wide sequence is gone; a new epoch answers every cursor
-- issued before this migration with 410, so clients pull again.
ALTER TABLE sync_state DROP COLUMN last_seq;
UPDATE sync_state SET epoch = lower(hex(randomblob(8))) WHERE id = 1;

-- A conflict names the server version it met (kept in history while the
-- conflict is open) instead of holding a copy of it.
ALTER TABLE conflicts ADD COLUMN server_version INTEGER;
UPDATE conflicts SET server_version = json_extract(server, '$.version') WHERE server IS NOT NULL;
INSERT OR IGNORE INTO record_history (user_id, entity, id, version, deleted, data, updated_at)
SELECT c.user_id, c.entity, c.record_id, json_extract(c.server, '$.version'),
       json_extract(c.server, '$.deleted'), json_extract(c.server, '$.data'), json_extract(c.server, '$.updatedAt')
FROM conflicts c
WHERE c.server IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM records r WHERE r.user_id = c.user_id AND r.entity = c.entity
                  AND r.id = c.record_id AND r.version = json_extract(c.server, '$.version'));
ALTER TABLE conflicts DROP COLUMN server;
CREATE INDEX conflicts_by_record ON conflicts (user_id, entity, record_id, server_version);

-- pushId responses: new rows keep the response deflate-compressed in
-- `packed`, with the conflicts' server records cut out (`splices` says where
-- they go back); `response` stays for rows written before this migration.
-- `stored_bytes` is what the row counts against its user's `bytes`.
ALTER TABLE push_log ADD COLUMN packed BLOB;
ALTER TABLE push_log ADD COLUMN splices TEXT;
ALTER TABLE push_log ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE push_log SET stored_bytes = length(CAST(response AS BLOB));

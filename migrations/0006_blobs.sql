-- Attachments (blobs), content-addressed by SHA-256. A user has a blob once
-- they uploaded it; its bytes live in the object store under `object_key`
-- (unique per upload, so collecting one user's copy never races another
-- upload of the same content). `touched_at` is the last upload, reference
-- or dereference: the garbage-collection grace period counts from it.
CREATE TABLE blobs (
    user_id     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    object_key  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    touched_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, sha256)
) STRICT;
CREATE INDEX blobs_touched ON blobs (touched_at);

-- Which of a user's live records name which of their blobs (declared blob fields).
CREATE TABLE blob_refs (
    user_id    TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    entity     TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, sha256, entity, record_id)
) STRICT;
CREATE INDEX blob_refs_by_record ON blob_refs (user_id, entity, record_id);

-- Object keys to delete from the object store once `since` is older than the
-- grace period: uploads in progress (removed when the upload commits) and
-- collected blobs. Deleting the rows and the objects in two steps survives a
-- crash between them.
CREATE TABLE blob_garbage (
    object_key  TEXT PRIMARY KEY,
    since       INTEGER NOT NULL
) STRICT;

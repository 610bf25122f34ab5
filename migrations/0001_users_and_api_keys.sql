-- Users exist as soon as something refers to them (a key, a push); the id comes
-- from the identity provider or from `accord keys create --user`.
CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL            -- unix ms
) STRICT;

-- API keys: only the SHA-256 of the raw key is stored. Revocation is a soft
-- delete (revoked_at set) so the row stays for audit.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,            -- first characters of the key, for recognition
    hash          BLOB NOT NULL UNIQUE,     -- SHA-256 of the raw key; UNIQUE gives the lookup index
    scopes        TEXT NOT NULL,            -- space-separated
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
) STRICT;

CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

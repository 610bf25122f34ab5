-- Optional API key expiry (unix ms). A key past it is refused like a revoked
-- one; NULL means the key does not expire.
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;

-- Which policy decided (issue 9, audit): the name and the SHA-256 of the
-- component, on every version a policy merged (NULL for versions stored as
-- sent or as resolved) and on every conflict.
ALTER TABLE records ADD COLUMN policy TEXT;
ALTER TABLE records ADD COLUMN policy_sha256 TEXT;
ALTER TABLE record_history ADD COLUMN policy TEXT;
ALTER TABLE record_history ADD COLUMN policy_sha256 TEXT;
ALTER TABLE conflicts ADD COLUMN policy TEXT;
ALTER TABLE conflicts ADD COLUMN policy_sha256 TEXT;

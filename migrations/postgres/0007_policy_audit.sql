-- Which policy decided (issue 9, audit): the name and the SHA-256 of the
-- component, on every version a policy merged (NULL for versions stored as
-- sent or as resolved) and on every conflict; and each conflict's base.
ALTER TABLE records ADD COLUMN policy TEXT;
ALTER TABLE records ADD COLUMN policy_sha256 TEXT;
ALTER TABLE record_history ADD COLUMN policy TEXT;
ALTER TABLE record_history ADD COLUMN policy_sha256 TEXT;
ALTER TABLE conflicts ADD COLUMN policy TEXT;
ALTER TABLE conflicts ADD COLUMN policy_sha256 TEXT;
-- The base record the policy saw (wire JSON; NULL when it saw none), so a
-- candidate policy can be replayed on the conflict as it was (`policy replay`).
ALTER TABLE conflicts ADD COLUMN base TEXT;

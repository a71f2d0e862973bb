-- A hash chain over the audit table: each row carries the SHA-256 of its
-- canonical form and of the row before it (`crate::audit::chain`), so a row
-- removed or edited by someone with database access breaks the chain that
-- `issueops audit verify` recomputes. Rows written before this migration
-- carry no hashes; the chain starts at the first row after it.
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN row_hash TEXT;

-- The chain's head: one row, updated with every append in the same
-- transaction. Its row lock is what serialises concurrent appends; its
-- `head` also records where the chain ends, so rows cut from the end are
-- noticed.
CREATE TABLE audit_chain (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    head    TEXT,
    head_id BIGINT,
    rows    BIGINT NOT NULL DEFAULT 0
);
INSERT INTO audit_chain (id, head, head_id, rows) VALUES (1, NULL, NULL, 0);

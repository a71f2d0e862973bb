-- Review before apply: a run's intent (or a rollback) committed to the
-- branch `proposals/<id>` instead of the applied branch, waiting for a
-- reviewer. Approving merges it into the applied branch (a commit issueops
-- signs); denying or expiring leaves the applied branch as it was.
CREATE TABLE proposals (
    id           TEXT   PRIMARY KEY,
    -- `run` or `rollback`.
    kind         TEXT   NOT NULL,
    run_id       TEXT,
    delivery_id  TEXT,
    repo         TEXT,
    issue_number BIGINT,
    branch       TEXT   NOT NULL,
    commit_sha   TEXT   NOT NULL,
    proposed_by  TEXT   NOT NULL,
    summary      TEXT   NOT NULL,
    -- pending, approved, denied, expired.
    state        TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    decided_at   BIGINT,
    decided_by   TEXT,
    reason       TEXT,
    merge_sha    TEXT
);
CREATE INDEX proposals_state ON proposals (state, expires_at);

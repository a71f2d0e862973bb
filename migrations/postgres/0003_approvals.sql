-- Approval requests: a trigger from someone who may not start runs waits here
-- until an approver approves or denies it, or it expires.
CREATE TABLE approvals (
    id           TEXT   PRIMARY KEY,
    delivery_id  TEXT   NOT NULL UNIQUE,
    repo         TEXT   NOT NULL,
    issue_number BIGINT NOT NULL,
    mode         TEXT   NOT NULL,
    requester    TEXT   NOT NULL,
    state        TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    decided_by   TEXT,
    decided_at   BIGINT,
    reason       TEXT
);
CREATE INDEX approvals_issue ON approvals (repo, issue_number, state);

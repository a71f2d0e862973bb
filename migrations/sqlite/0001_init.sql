-- Inbox: every verified delivery, stored before the gateway answers.
CREATE TABLE inbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  TEXT    NOT NULL UNIQUE,
    event        TEXT    NOT NULL,
    action       TEXT,
    repo         TEXT,
    sender       TEXT,
    payload      TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL,
    processed_at BIGINT,
    outcome      TEXT
);
CREATE INDEX inbox_pending ON inbox (processed_at, seq);

-- Runs: one row per accepted trigger; run_id is derived from the delivery.
CREATE TABLE runs (
    run_id       TEXT    PRIMARY KEY,
    delivery_id  TEXT    NOT NULL,
    repo         TEXT    NOT NULL,
    issue_number BIGINT  NOT NULL,
    namespace    TEXT    NOT NULL,
    mode         TEXT    NOT NULL,
    branch       TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    commit_sha   TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX runs_issue ON runs (repo, issue_number);

-- Audit: append-only, enforced below.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    delivery_id TEXT,
    run_id      TEXT,
    commit_sha  TEXT,
    actor       TEXT,
    object      TEXT,
    outcome     TEXT    NOT NULL,
    detail      TEXT    NOT NULL
);
CREATE INDEX audit_run ON audit_events (run_id);
CREATE INDEX audit_delivery ON audit_events (delivery_id);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END;

-- Reconciler bookkeeping: the last commit fully applied to the cluster.
CREATE TABLE reconciler_state (
    name        TEXT   PRIMARY KEY,
    commit_sha  TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL
);

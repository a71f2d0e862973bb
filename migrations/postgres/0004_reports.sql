-- Status comments on issues: one per trigger (subject = delivery id), edited
-- in place. `body` is what the comment should say; `posted_body` what GitHub
-- last accepted. The reporter posts while they differ.
CREATE TABLE reports (
    subject      TEXT   PRIMARY KEY,
    repo         TEXT   NOT NULL,
    issue_number BIGINT NOT NULL,
    body         TEXT   NOT NULL,
    posted_body  TEXT,
    comment_id   BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX reports_unposted ON reports (updated_at);

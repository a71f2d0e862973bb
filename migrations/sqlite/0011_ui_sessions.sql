-- Staff UI sessions live on the server: the cookie names one by a random id
-- (stored here only as its SHA-256), so signing out, `issueops sessions
-- revoke`, or a role taken away in the config ends it at the next request.
-- Rows are written only by a successful sign-in.
CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,
    login      TEXT NOT NULL,
    role       TEXT NOT NULL,
    how        TEXT NOT NULL,
    -- What the sign-in learnt about the person (orgs, teams), JSON, so the
    -- role can be weighed again against the config on every request.
    identity   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX ui_sessions_login ON ui_sessions (login);

-- Bearer tokens for the staff JSON API (/api/v1): only the token's SHA-256 is
-- stored; the token itself is shown once, by `issueops api-tokens create`.
CREATE TABLE api_tokens (
    id         TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL UNIQUE,
    token_hash TEXT   NOT NULL UNIQUE,
    -- viewer or approver, as the staff UI's roles.
    role       TEXT   NOT NULL,
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

-- What the agent said (the run's pod logs), kept when its Job ends so the run
-- can be reviewed after the pod is gone: the last bytes only, secrets
-- redacted, deflate-compressed. Dropped after lifecycle.transcript_retention_days.
CREATE TABLE run_transcripts (
    run_id      TEXT   PRIMARY KEY,
    recorded_at BIGINT NOT NULL,
    -- Bytes of text before compression, and whether older output was cut.
    size        BIGINT NOT NULL,
    truncated   BIGINT NOT NULL,
    body        BLOB  NOT NULL
);
CREATE INDEX run_transcripts_recorded ON run_transcripts (recorded_at);

-- The GitHub token Secrets the reconciler wrote into run namespaces (never the
-- token itself): what to refresh before expiry and what to delete.
CREATE TABLE agent_secrets (
    namespace  TEXT   PRIMARY KEY,
    run_id     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

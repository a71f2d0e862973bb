-- Why a delivery could not be processed yet, and how often it was tried: the
-- staff UI's deliveries page shows what is stuck and why.
ALTER TABLE inbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN last_error TEXT;
-- The reconciler's last cycle, per state key: when, against which head, and
-- how it ended (converged, incomplete, blocked, idle). One row, overwritten.
CREATE TABLE reconciler_cycles (
    name       TEXT   PRIMARY KEY,
    at         BIGINT NOT NULL,
    head       TEXT,
    outcome    TEXT   NOT NULL,
    detail     TEXT   NOT NULL
);
-- The UI lists runs newest first and looks up the newest audit rows of a kind.
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX audit_kind ON audit_events (kind, id);

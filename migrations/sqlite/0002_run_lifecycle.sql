-- Run lifecycle: when and why a run finished, and the issue's open/closed state.
ALTER TABLE runs ADD COLUMN finished_at BIGINT;
ALTER TABLE runs ADD COLUMN reason TEXT;
CREATE INDEX runs_state ON runs (state, finished_at);

-- When a run left the queue (or started without one): the fair queue across
-- repositories starts next the repository whose last run started longest
-- ago, and that must survive a restart. Also the daily count per repository.
ALTER TABLE runs ADD COLUMN started_at BIGINT;
CREATE INDEX runs_repo_created ON runs (repo, created_at);

-- What the agent runner reported when its Job ended (the container's
-- termination message): the outcome, the pull request and the head commit.
CREATE TABLE run_results (
    run_id          TEXT    PRIMARY KEY,
    outcome         TEXT    NOT NULL,
    pr_number       BIGINT,
    pr_url          TEXT,
    head_commit     TEXT,
    reason          TEXT,
    resumed_session BIGINT  NOT NULL,
    recorded_at     BIGINT  NOT NULL
);
-- Issues held by the debug label: their namespace is kept after their runs end.
CREATE TABLE issue_holds (
    repo         TEXT   NOT NULL,
    issue_number BIGINT NOT NULL,
    label        TEXT   NOT NULL,
    since        BIGINT NOT NULL,
    PRIMARY KEY (repo, issue_number, label)
);
-- Runs whose trigger label was removed from the issue after they ended.
ALTER TABLE runs ADD COLUMN label_removed_at BIGINT;
-- Runs that ended before this release are not revisited (no burst of label
-- removals for history on upgrade).
UPDATE runs SET label_removed_at = 0
 WHERE state IN ('succeeded', 'failed', 'cancelled', 'pruned');

//! The runs table: one row per accepted trigger, moved through its states.
//!
//! Invariant: a run's state only moves forward (see [`RunState`]); an update
//! that would move it back is ignored, so observers racing each other, or a
//! replay after a crash, cannot resurrect a finished run.

use super::{sql, Store, StoreError};
use crate::now_ms;
use serde::Serialize;

/// Where a run is in its life (see DESIGN.md, "Run lifecycle"), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for the issue's active run to finish.
    Queued,
    Accepted,
    /// Committed to a proposal branch, waiting for a reviewer (`review`).
    Proposed,
    Committed,
    Applied,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Pruned,
}

const ALL: [RunState; 10] = [
    RunState::Queued,
    RunState::Accepted,
    RunState::Proposed,
    RunState::Committed,
    RunState::Applied,
    RunState::Running,
    RunState::Succeeded,
    RunState::Failed,
    RunState::Cancelled,
    RunState::Pruned,
];

impl RunState {
    /// Every state, in order.
    pub fn all() -> &'static [RunState] {
        &ALL
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Accepted => "accepted",
            RunState::Proposed => "proposed",
            RunState::Committed => "committed",
            RunState::Applied => "applied",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Pruned => "pruned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The run holds (or is about to hold) the issue: at most one per issue.
    pub fn is_active(self) -> bool {
        self >= RunState::Accepted && self < RunState::Succeeded
    }

    /// The run has ended: its Job must never be created again.
    pub fn is_finished(self) -> bool {
        self >= RunState::Succeeded
    }

    /// States a run may move to `self` from. The three end states are
    /// alternatives, not steps: a succeeded run cannot become failed.
    fn predecessors(self) -> Vec<&'static str> {
        let before_end = |s: &RunState| *s < RunState::Succeeded;
        ALL.iter()
            .filter(|s| match self {
                RunState::Pruned => **s != RunState::Pruned,
                _ if self.is_finished() => before_end(s),
                _ => **s < self,
            })
            .map(|s| s.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub run_id: String,
    pub delivery_id: String,
    pub repo: String,
    pub issue_number: i64,
    pub namespace: String,
    pub mode: String,
    pub branch: String,
    pub actor: String,
    pub state: String,
    pub commit_sha: Option<String>,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
    /// The pull request a revision run continues.
    pub pull_request: Option<i64>,
}

/// Whether a run's reason says it ended on the in-process stand-in (the
/// reconciler writes `simulated: …` there), where no agent runs.
pub fn simulated(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.starts_with("simulated"))
}

impl Run {
    pub fn run_state(&self) -> Option<RunState> {
        RunState::parse(&self.state)
    }

    /// Ended on the in-process stand-in, where no agent runs.
    pub fn is_simulated(&self) -> bool {
        simulated(self.reason.as_deref())
    }
}

type Row = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

impl From<Row> for Run {
    fn from(r: Row) -> Self {
        Self {
            run_id: r.0,
            delivery_id: r.1,
            repo: r.2,
            issue_number: r.3,
            namespace: r.4,
            mode: r.5,
            branch: r.6,
            actor: r.7,
            state: r.8,
            commit_sha: r.9,
            finished_at: r.10,
            reason: r.11,
            pull_request: r.12,
        }
    }
}

const COLUMNS: &str = "run_id, delivery_id, repo, issue_number, namespace, mode, branch, actor, \
                       state, commit_sha, finished_at, reason, pull_request";

fn in_list(states: &[&str]) -> String {
    states
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Records a run; a run id that already exists is left as it is (replays of
    /// the same delivery are idempotent). Returns whether a row was inserted.
    pub async fn insert_run(&self, run: &Run) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO runs (run_id, delivery_id, repo, issue_number, namespace, mode, branch,
                               actor, state, commit_sha, created_at, updated_at, pull_request)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(&run.run_id)
        .bind(&run.delivery_id)
        .bind(&run.repo)
        .bind(run.issue_number)
        .bind(&run.namespace)
        .bind(&run.mode)
        .bind(&run.branch)
        .bind(&run.actor)
        .bind(&run.state)
        .bind(&run.commit_sha)
        .bind(now)
        .bind(now)
        .bind(run.pull_request)
        .execute(self.pool())
        .await
        .map_err(sql("recording a run"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a run forward to `state` (never back). Returns whether it moved.
    /// Entering an end state records when, and `reason` if given.
    pub async fn set_run_state(
        &self,
        run_id: &str,
        state: RunState,
        commit_sha: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.advance_run(run_id, state, commit_sha, None).await
    }

    pub async fn advance_run(
        &self,
        run_id: &str,
        state: RunState,
        commit_sha: Option<&str>,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let finished = (state.is_finished() && state != RunState::Pruned).then_some(now);
        let done = sqlx::query(&format!(
            "UPDATE runs SET state = $1, commit_sha = COALESCE($2, commit_sha), updated_at = $3,
                    finished_at = COALESCE(finished_at, $4), reason = COALESCE($5, reason)
             WHERE run_id = $6 AND state IN ({})",
            in_list(&state.predecessors())
        ))
        .bind(state.as_str())
        .bind(commit_sha)
        .bind(now)
        .bind(finished)
        .bind(reason)
        .bind(run_id)
        .execute(self.pool())
        .await
        .map_err(sql("updating a run's state"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Option<Run>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM runs WHERE run_id = $1"))
                .bind(run_id)
                .fetch_optional(self.pool())
                .await
                .map_err(sql("reading a run"))?;
        Ok(row.map(Run::from))
    }

    pub async fn list_runs(&self) -> Result<Vec<Run>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM runs ORDER BY created_at, run_id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing runs"))?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    /// Runs of one issue, oldest first.
    pub async fn runs_for_issue(&self, repo: &str, issue: i64) -> Result<Vec<Run>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM runs WHERE LOWER(repo) = LOWER($1) AND issue_number = $2
             ORDER BY created_at, run_id"
        ))
        .bind(repo)
        .bind(issue)
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing an issue's runs"))?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    /// The oldest queued run of each issue that has no active run: the runs
    /// that may start now, first in, first out.
    pub async fn startable_queued_runs(&self) -> Result<Vec<Run>, StoreError> {
        // Inbox order is arrival order: FIFO even within one millisecond.
        let qualified = COLUMNS
            .split(',')
            .map(|c| format!("q.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {qualified} FROM runs q JOIN inbox i ON i.delivery_id = q.delivery_id
             WHERE q.state = 'queued'
               AND NOT EXISTS (SELECT 1 FROM runs a WHERE a.repo = q.repo AND a.issue_number = q.issue_number
                               AND a.state IN ('accepted', 'proposed', 'committed', 'applied', 'running'))
               AND NOT EXISTS (SELECT 1 FROM runs e JOIN inbox ie ON ie.delivery_id = e.delivery_id
                               WHERE e.repo = q.repo AND e.issue_number = q.issue_number
                                 AND e.state = 'queued' AND ie.seq < i.seq)
             ORDER BY i.seq"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing startable queued runs"))?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    /// Every queued run, in arrival (inbox) order, with when it was queued.
    pub async fn queued_runs(&self) -> Result<Vec<(Run, i64)>, StoreError> {
        let qualified = COLUMNS
            .split(',')
            .map(|c| format!("q.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT q.run_id, q.created_at FROM runs q JOIN inbox i ON i.delivery_id = q.delivery_id
             WHERE q.state = 'queued' ORDER BY i.seq",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing queued runs"))?;
        // Every pass asks; most find nothing waiting.
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {qualified} FROM runs q WHERE q.state = 'queued'"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing queued runs"))?;
        let mut by_id: std::collections::HashMap<String, Run> = full
            .into_iter()
            .map(Run::from)
            .map(|r| (r.run_id.clone(), r))
            .collect();
        Ok(rows
            .into_iter()
            .filter_map(|(id, at)| by_id.remove(&id).map(|r| (r, at)))
            .collect())
    }

    /// Per repository: runs active now, and when its last run started.
    pub async fn repo_loads(&self) -> Result<Vec<(String, i64, Option<i64>)>, StoreError> {
        sqlx::query_as(
            "SELECT repo,
                    SUM(CASE WHEN state IN ('accepted', 'proposed', 'committed', 'applied', 'running') THEN 1 ELSE 0 END),
                    MAX(started_at)
               FROM runs GROUP BY repo",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql("counting active runs per repository"))
    }

    /// Runs of `repo` created at or after `since_ms` (queued ones too).
    pub async fn runs_created_since(&self, repo: &str, since_ms: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM runs WHERE repo = $1 AND created_at >= $2")
                .bind(repo)
                .bind(since_ms)
                .fetch_one(self.pool())
                .await
                .map_err(sql("counting a repository's runs of the day"))?;
        Ok(n)
    }

    /// Records that `run_id` started (left the queue, or never waited).
    pub async fn mark_started(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET started_at = $1 WHERE run_id = $2 AND started_at IS NULL")
            .bind(now_ms())
            .bind(run_id)
            .execute(self.pool())
            .await
            .map_err(sql("recording when a run started"))?;
        Ok(())
    }

    /// Namespaces of issues with no active or queued run whose newest run
    /// ended at or before `before_ms`.
    pub async fn idle_issue_namespaces(
        &self,
        before_ms: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT namespace, MIN(repo), MIN(issue_number) FROM runs GROUP BY namespace
             HAVING SUM(CASE WHEN state IN ('queued', 'accepted', 'proposed', 'committed', 'applied', 'running')
                             THEN 1 ELSE 0 END) = 0
                AND MAX(finished_at) <= $1",
        )
        .bind(before_ms)
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing idle issues"))
    }

    /// Runs still committed or applied (their Job never started) since
    /// before `before_ms`.
    pub async fn runs_stuck(&self, before_ms: i64) -> Result<Vec<Run>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM runs
             WHERE state IN ('committed', 'applied') AND updated_at <= $1
             ORDER BY updated_at, run_id"
        ))
        .bind(before_ms)
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing stuck runs"))?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    /// Finished, not yet pruned runs that finished at or before `before_ms`.
    pub async fn runs_due_for_prune(&self, before_ms: i64) -> Result<Vec<Run>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM runs
             WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at <= $1
             ORDER BY finished_at, run_id"
        ))
        .bind(before_ms)
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing runs due for prune"))?;
        Ok(rows.into_iter().map(Run::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::RunState::*;

    #[test]
    fn states_only_move_forward() {
        assert_eq!(
            Running.predecessors(),
            ["queued", "accepted", "proposed", "committed", "applied"]
        );
        assert!(!Succeeded.predecessors().contains(&"failed"));
        assert!(Succeeded.predecessors().contains(&"running"));
        assert!(Pruned.predecessors().contains(&"succeeded"));
        assert!(!Pruned.predecessors().contains(&"pruned"));
    }

    #[test]
    fn end_states_are_finished() {
        assert!(
            Succeeded.is_finished()
                && Failed.is_finished()
                && Cancelled.is_finished()
                && Pruned.is_finished()
        );
        assert!(!Running.is_finished());
    }
}

//! What the agent runner reported for a run (`run_results`), which issues
//! the debug label holds (`issue_holds`), and whose trigger label was removed
//! after the run (`runs.label_removed_at`).

use super::{sql, Store, StoreError};
use crate::now_ms;
use serde::Serialize;

/// The runner's result for one run, as recorded from its termination message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunResult {
    pub run_id: String,
    /// `pr-opened`, `pr-updated`, `no-changes` or `failed`.
    pub outcome: String,
    pub pr_number: Option<i64>,
    pub pr_url: Option<String>,
    pub head_commit: Option<String>,
    pub reason: Option<String>,
    pub resumed_session: bool,
}

type Row = (
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

impl From<Row> for RunResult {
    fn from(r: Row) -> Self {
        Self {
            run_id: r.0,
            outcome: r.1,
            pr_number: r.2,
            pr_url: r.3,
            head_commit: r.4,
            reason: r.5,
            resumed_session: r.6 != 0,
        }
    }
}

const COLUMNS: &str = "run_id, outcome, pr_number, pr_url, head_commit, reason, resumed_session";

impl Store {
    /// Records a run's result once; a second report of the same run (a
    /// replayed observation) keeps the first. Returns whether it was new.
    pub async fn record_run_result(&self, r: &RunResult) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO run_results (run_id, outcome, pr_number, pr_url, head_commit, reason,
                                      resumed_session, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(&r.run_id)
        .bind(&r.outcome)
        .bind(r.pr_number)
        .bind(&r.pr_url)
        .bind(&r.head_commit)
        .bind(&r.reason)
        .bind(i64::from(r.resumed_session))
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(sql("recording a run's result"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn run_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM run_results WHERE run_id = $1"
        ))
        .bind(run_id)
        .fetch_optional(self.pool())
        .await
        .map_err(sql("reading a run's result"))?;
        Ok(row.map(RunResult::from))
    }

    /// Every recorded result, by run id.
    pub async fn run_results(
        &self,
    ) -> Result<std::collections::HashMap<String, RunResult>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM run_results"))
            .fetch_all(self.pool())
            .await
            .map_err(sql("listing run results"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.0.clone(), RunResult::from(r)))
            .collect())
    }

    /// Holds the issue's namespace under `label`. Idempotent: keeps the
    /// first `since`; returns whether the hold is new.
    pub async fn hold_issue(
        &self,
        repo: &str,
        issue: i64,
        label: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO issue_holds (repo, issue_number, label, since) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo, issue_number, label) DO NOTHING",
        )
        .bind(repo.to_ascii_lowercase())
        .bind(issue)
        .bind(label)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(sql("holding an issue"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release_issue(
        &self,
        repo: &str,
        issue: i64,
        label: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM issue_holds WHERE repo = $1 AND issue_number = $2 AND label = $3",
        )
        .bind(repo.to_ascii_lowercase())
        .bind(issue)
        .bind(label)
        .execute(self.pool())
        .await
        .map_err(sql("releasing an issue"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Held issues: `(repo lower-cased, issue, since ms)`.
    pub async fn issue_holds(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        sqlx::query_as("SELECT repo, issue_number, since FROM issue_holds")
            .fetch_all(self.pool())
            .await
            .map_err(sql("listing issue holds"))
    }

    /// Finished runs whose trigger label has not been removed yet.
    pub async fn runs_awaiting_label_removal(
        &self,
    ) -> Result<Vec<(String, String, i64, String)>, StoreError> {
        sqlx::query_as(
            "SELECT run_id, repo, issue_number, mode FROM runs
             WHERE label_removed_at IS NULL AND state IN ('succeeded', 'failed', 'cancelled', 'pruned')
             ORDER BY finished_at, run_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing runs awaiting label removal"))
    }

    pub async fn mark_label_removed(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET label_removed_at = $1 WHERE run_id = $2")
            .bind(now_ms())
            .bind(run_id)
            .execute(self.pool())
            .await
            .map_err(sql("marking a run's label removed"))?;
        Ok(())
    }
}

//! The runs table: one row per accepted trigger, moved through its states.

use super::{sql, Store, StoreError};
use crate::now_ms;
use serde::Serialize;

/// Where a run is in its life (see DESIGN.md, "Run lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Accepted,
    Committed,
    Applied,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Accepted => "accepted",
            RunState::Committed => "committed",
            RunState::Applied => "applied",
        }
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
        }
    }
}

const COLUMNS: &str =
    "run_id, delivery_id, repo, issue_number, namespace, mode, branch, actor, state, commit_sha";

impl Store {
    /// Records a run; a run id that already exists is left as it is (replays of
    /// the same delivery are idempotent). Returns whether a row was inserted.
    pub async fn insert_run(&self, run: &Run) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO runs (run_id, delivery_id, repo, issue_number, namespace, mode, branch,
                               actor, state, commit_sha, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
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
        .execute(self.pool())
        .await
        .map_err(sql("recording a run"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_run_state(
        &self,
        run_id: &str,
        state: RunState,
        commit_sha: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET state = $1, commit_sha = COALESCE($2, commit_sha), updated_at = $3
             WHERE run_id = $4",
        )
        .bind(state.as_str())
        .bind(commit_sha)
        .bind(now_ms())
        .bind(run_id)
        .execute(self.pool())
        .await
        .map_err(sql("updating a run's state"))?;
        Ok(())
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
}

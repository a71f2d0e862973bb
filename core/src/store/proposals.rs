//! Proposals waiting for review (`review` in the config): one row per
//! proposal branch, from `pending` to `approved`, `denied`, `expired` or
//! `withdrawn` (its run cancelled, its issue closed).
//!
//! Invariant: a proposal is decided once; the decision only moves it out of
//! `pending`, so two reviewers acting at once cannot both win.

use super::{sql, Store, StoreError};
use crate::now_ms;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Proposal {
    pub id: String,
    /// `run` or `rollback`.
    pub kind: String,
    pub run_id: Option<String>,
    pub delivery_id: Option<String>,
    pub repo: Option<String>,
    pub issue_number: Option<i64>,
    pub branch: String,
    pub commit_sha: String,
    pub proposed_by: String,
    pub summary: String,
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub merge_sha: Option<String>,
}

const COLUMNS: &str = "id, kind, run_id, delivery_id, repo, issue_number, branch, commit_sha, \
     proposed_by, summary, state, created_at, expires_at, decided_at, decided_by, reason, merge_sha";

impl Store {
    /// Records a new pending proposal; `false` when it exists (a replay).
    pub async fn insert_proposal(&self, p: &Proposal) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO proposals (id, kind, run_id, delivery_id, repo, issue_number, branch,
                                    commit_sha, proposed_by, summary, state, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.kind)
        .bind(&p.run_id)
        .bind(&p.delivery_id)
        .bind(&p.repo)
        .bind(p.issue_number)
        .bind(&p.branch)
        .bind(&p.commit_sha)
        .bind(&p.proposed_by)
        .bind(&p.summary)
        .bind(p.created_at)
        .bind(p.expires_at)
        .execute(self.pool())
        .await
        .map_err(sql("recording a proposal"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn proposals_where(
        &self,
        clause: &str,
        bind: Option<&str>,
    ) -> Result<Vec<Proposal>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM proposals {clause} ORDER BY created_at, id");
        let mut q = sqlx::query_as::<_, Proposal>(&query);
        if let Some(b) = bind {
            q = q.bind(b);
        }
        q.fetch_all(self.pool())
            .await
            .map_err(sql("reading proposals"))
    }

    pub async fn get_proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        Ok(self.proposals_where("WHERE id = $1", Some(id)).await?.pop())
    }

    /// Proposals, oldest first: only the pending ones, or all.
    pub async fn list_proposals(&self, pending_only: bool) -> Result<Vec<Proposal>, StoreError> {
        if pending_only {
            self.proposals_where("WHERE state = $1", Some("pending"))
                .await
        } else {
            self.proposals_where("", None).await
        }
    }

    /// Moves a pending proposal to `state` (`approved`, `denied`, `expired`);
    /// `false` when it was not pending (decided meanwhile).
    pub async fn decide_proposal(
        &self,
        id: &str,
        state: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE proposals SET state = $1, decided_at = $2, decided_by = $3, reason = $4
             WHERE id = $5 AND state = 'pending'",
        )
        .bind(state)
        .bind(now_ms())
        .bind(by)
        .bind(reason)
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(sql("deciding a proposal"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the commit that merged an approved proposal.
    pub async fn set_proposal_merge(&self, id: &str, sha: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE proposals SET merge_sha = $1 WHERE id = $2")
            .bind(sha)
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(sql("recording a proposal's merge"))?;
        Ok(())
    }
}

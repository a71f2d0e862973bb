//! The approvals table: triggers waiting for an approver.
//!
//! Invariant: a request is decided once. Every decision is a compare-and-set
//! on `state = 'pending'`, so two approvers racing, or an approval racing the
//! expiry, leave exactly one outcome.

use super::{sql, Store, StoreError};
use crate::now_ms;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Approval {
    pub id: String,
    pub delivery_id: String,
    pub repo: String,
    pub issue_number: i64,
    pub mode: String,
    pub requester: String,
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<i64>,
}

type Row = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
);

impl From<Row> for Approval {
    fn from(r: Row) -> Self {
        Self {
            id: r.0,
            delivery_id: r.1,
            repo: r.2,
            issue_number: r.3,
            mode: r.4,
            requester: r.5,
            state: r.6,
            created_at: r.7,
            expires_at: r.8,
            decided_by: r.9,
            reason: r.10,
            decided_at: r.11,
        }
    }
}

const COLUMNS: &str =
    "id, delivery_id, repo, issue_number, mode, requester, state, created_at, expires_at, decided_by, reason, decided_at";

impl Store {
    /// Records a pending request; a replay of the same delivery changes nothing.
    /// Returns whether a row was inserted.
    pub async fn insert_approval(&self, a: &Approval) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO approvals (id, delivery_id, repo, issue_number, mode, requester, state, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(&a.id)
        .bind(&a.delivery_id)
        .bind(&a.repo)
        .bind(a.issue_number)
        .bind(&a.mode)
        .bind(&a.requester)
        .bind(a.created_at)
        .bind(a.expires_at)
        .execute(self.pool())
        .await
        .map_err(sql("recording an approval request"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.pool())
                .await
                .map_err(sql("reading an approval request"))?;
        Ok(row.map(Approval::from))
    }

    /// Pending requests of one issue, oldest first.
    pub async fn pending_approvals_for_issue(
        &self,
        repo: &str,
        issue: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM approvals
             WHERE LOWER(repo) = LOWER($1) AND issue_number = $2 AND state = 'pending'
             ORDER BY created_at, id"
        ))
        .bind(repo)
        .bind(issue)
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing an issue's approval requests"))?;
        Ok(rows.into_iter().map(Approval::from).collect())
    }

    pub async fn list_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM approvals ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing approval requests"))?;
        Ok(rows.into_iter().map(Approval::from).collect())
    }

    /// Decides a pending, unexpired request. Returns false when it was not
    /// pending any more (decided or expired meanwhile).
    pub async fn decide_approval(
        &self,
        id: &str,
        state: &str,
        by: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE approvals SET state = $1, decided_by = $2, decided_at = $3, reason = $4
             WHERE id = $5 AND state = 'pending' AND expires_at > $3",
        )
        .bind(state)
        .bind(by)
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(sql("deciding an approval request"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks pending requests past their expiry as expired; returns them.
    pub async fn expire_approvals(&self, now: i64) -> Result<Vec<Approval>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "UPDATE approvals SET state = 'expired', decided_at = $1
             WHERE state = 'pending' AND expires_at <= $1 RETURNING {COLUMNS}"
        ))
        .bind(now)
        .fetch_all(self.pool())
        .await
        .map_err(sql("expiring approval requests"))?;
        Ok(rows.into_iter().map(Approval::from).collect())
    }
}

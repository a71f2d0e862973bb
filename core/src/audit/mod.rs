//! The append-only audit table: one row for every step a delivery, run or
//! object goes through, linked by delivery id, run id, commit sha and actor.
//!
//! Invariant: rows are only ever inserted. The database refuses UPDATE and
//! DELETE (triggers in `migrations/`), so this module offers neither; every
//! row is chained to the one before it ([`chain`]), so a row removed or
//! edited around the triggers is found by [`verify`].
//! Never put a secret in `detail`.

pub mod chain;
pub mod verify;

use crate::store::{sql, Store, StoreError};
use serde::Serialize;

/// What happened, as a stable dotted name operators can filter on.
pub mod kind {
    pub const DELIVERY_RECEIVED: &str = "delivery.received";
    pub const DELIVERY_REJECTED: &str = "delivery.rejected";
    pub const DELIVERY_DUPLICATE: &str = "delivery.duplicate";
    /// A delivery parked after a permanent error or too many attempts.
    pub const DELIVERY_DEAD: &str = "delivery.dead";
    /// A dead letter put back in line by a person.
    pub const DELIVERY_RETRY: &str = "delivery.retry";
    pub const DECISION: &str = "decision";
    pub const COMMIT: &str = "commit";
    pub const APPLY: &str = "apply";
    pub const DELETE: &str = "delete";
    pub const RECONCILE: &str = "reconcile";
    pub const JOB_STATUS: &str = "job.status";
    pub const PRUNE: &str = "prune";
    pub const ROLLBACK: &str = "rollback";
    /// A proposal for review: `proposed`, `approved` (its merge),
    /// `denied`, `expired`.
    pub const PROPOSAL: &str = "proposal";
    pub const APPROVAL: &str = "approval";
    pub const CREDENTIALS: &str = "credentials";
    /// What the agent runner reported: outcome, pull request, head commit.
    pub const AGENT_RESULT: &str = "agent.result";
    /// Labels issueops changed on GitHub (trigger removed, catalogue synced).
    pub const LABELS: &str = "labels";
    /// Someone signed in to the staff UI.
    pub const UI_SIGNIN: &str = "ui.signin";
    /// Staff UI sessions ended by an operator (`issueops sessions revoke`).
    pub const UI_SESSION_REVOKED: &str = "ui.session.revoked";
}

/// One audit row to append. Build with [`AuditEvent::new`] and the `with_*` methods.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditEvent {
    pub kind: String,
    pub outcome: String,
    pub delivery_id: Option<String>,
    pub run_id: Option<String>,
    pub commit_sha: Option<String>,
    pub actor: Option<String>,
    pub object: Option<String>,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(kind: &str, outcome: &str) -> Self {
        Self {
            kind: kind.into(),
            outcome: outcome.into(),
            detail: serde_json::Value::Object(Default::default()),
            ..Default::default()
        }
    }
    pub fn delivery(mut self, id: impl Into<String>) -> Self {
        self.delivery_id = Some(id.into());
        self
    }
    pub fn run(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }
    pub fn commit(mut self, sha: impl Into<String>) -> Self {
        self.commit_sha = Some(sha.into());
        self
    }
    pub fn actor(mut self, login: impl Into<String>) -> Self {
        self.actor = Some(login.into());
        self
    }
    pub fn object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// An audit row as stored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub delivery_id: Option<String>,
    pub run_id: Option<String>,
    pub commit_sha: Option<String>,
    pub actor: Option<String>,
    pub object: Option<String>,
    pub detail: String,
}

pub(crate) type Row = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

impl From<Row> for AuditRow {
    fn from(r: Row) -> Self {
        Self {
            id: r.0,
            at: r.1,
            kind: r.2,
            outcome: r.3,
            delivery_id: r.4,
            run_id: r.5,
            commit_sha: r.6,
            actor: r.7,
            object: r.8,
            detail: r.9,
        }
    }
}

/// Appends `rows` through `conn` (inside a transaction), chained.
pub(crate) async fn insert_audits(
    conn: &mut sqlx::AnyConnection,
    rows: &[AuditEvent],
) -> Result<(), StoreError> {
    chain::append(conn, rows).await
}

pub(crate) const COLUMNS: &str =
    "id, at, kind, outcome, delivery_id, run_id, commit_sha, actor, object, detail";

impl Store {
    pub async fn append_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        self.append_audits(std::slice::from_ref(e)).await
    }

    /// Appends `rows` in one transaction (one commit for a reconciler's
    /// group of applies instead of one each).
    pub async fn append_audits(&self, rows: &[AuditEvent]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(sql("starting to append audit rows"))?;
        // Bounded statements: SQLite allows a few thousand bound values.
        for chunk in rows.chunks(100) {
            insert_audits(&mut tx, chunk).await?;
        }
        tx.commit().await.map_err(sql("committing audit rows"))
    }

    /// Whether a row of `kind` exists for `run_id`: lets a replay after a crash
    /// write a missing row without doubling one that was written.
    pub async fn has_audit(&self, run_id: &str, kind: &str) -> Result<bool, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM audit_events WHERE run_id = $1 AND kind = $2 LIMIT 1")
                .bind(run_id)
                .bind(kind)
                .fetch_optional(self.pool())
                .await
                .map_err(sql("looking up an audit row"))?;
        Ok(row.is_some())
    }

    /// Every audit row, oldest first.
    pub async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let rows: Vec<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM audit_events ORDER BY id"))
                .fetch_all(self.pool())
                .await
                .map_err(sql("reading the audit table"))?;
        Ok(rows.into_iter().map(AuditRow::from).collect())
    }

    /// Audit rows that belong to one run: its own rows and those of the
    /// delivery that started it.
    pub async fn audit_rows_for_run(&self, run_id: &str) -> Result<Vec<AuditRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_events
             WHERE run_id = $1
                OR delivery_id IN (SELECT delivery_id FROM runs WHERE run_id = $1)
             ORDER BY id"
        ))
        .bind(run_id)
        .fetch_all(self.pool())
        .await
        .map_err(sql("reading a run's audit rows"))?;
        Ok(rows.into_iter().map(AuditRow::from).collect())
    }
}

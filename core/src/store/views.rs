//! Read models for people (the staff UI): runs with what they produced,
//! paged and filtered; the inbox with what is stuck; audit search; the
//! reconciler's last cycle. Also the two writes that feed them: a delivery's
//! failed attempt and the reconciler's cycle record.
//!
//! Filters bind the empty string for "any", which reads the same on SQLite
//! and PostgreSQL (an untyped NULL parameter does not).

use super::{sql, Store, StoreError};
use crate::audit::{AuditRow, Row as AuditTuple, COLUMNS as AUDIT_COLUMNS};
use crate::now_ms;
use serde::Serialize;

/// Rows per page everywhere in the UI.
pub const PAGE: i64 = 20;

/// A run as listed: the run row, when it started and ended, the event that
/// started it and what the agent produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub run_id: String,
    pub delivery_id: String,
    pub repo: String,
    pub issue_number: i64,
    pub namespace: String,
    pub mode: String,
    pub actor: String,
    pub state: String,
    pub reason: Option<String>,
    pub commit_sha: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// `issues` (a label) or `pull_request_review` (a review asked for changes).
    pub event: Option<String>,
    pub pr_number: Option<i64>,
    pub pr_url: Option<String>,
    pub outcome: Option<String>,
    /// The pull request a revision continues (known before the agent reports).
    pub pull_request: Option<i64>,
    /// The issue's title when the delivery was received (as GitHub sent it:
    /// any text, shown escaped).
    pub title: Option<String>,
}

const RUN_VIEW_SELECT: &str =
    "SELECT r.run_id, r.delivery_id, r.repo, r.issue_number, r.namespace, r.mode, r.actor, r.state,
        r.reason, r.commit_sha, r.created_at, r.updated_at, r.finished_at,
        i.event, x.pr_number, x.pr_url, x.outcome, r.pull_request, i.payload
   FROM runs r
   LEFT JOIN inbox i ON i.delivery_id = r.delivery_id
   LEFT JOIN run_results x ON x.run_id = r.run_id";

fn run_view(row: sqlx::any::AnyRow) -> Result<RunView, sqlx::Error> {
    use sqlx::Row;
    Ok(RunView {
        run_id: row.try_get(0)?,
        delivery_id: row.try_get(1)?,
        repo: row.try_get(2)?,
        issue_number: row.try_get(3)?,
        namespace: row.try_get(4)?,
        mode: row.try_get(5)?,
        actor: row.try_get(6)?,
        state: row.try_get(7)?,
        reason: row.try_get(8)?,
        commit_sha: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        finished_at: row.try_get(12)?,
        event: row.try_get(13)?,
        pr_number: row.try_get(14)?,
        pr_url: row.try_get(15)?,
        outcome: row.try_get(16)?,
        pull_request: row.try_get(17)?,
        title: row
            .try_get::<Option<String>, _>(18)?
            .and_then(|payload| issue_title(&payload)),
    })
}

/// `issue.title` of a delivery's payload, without keeping the payload.
fn issue_title(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Payload {
        issue: Option<Issue>,
    }
    #[derive(serde::Deserialize)]
    struct Issue {
        title: Option<String>,
    }
    serde_json::from_str::<Payload>(payload).ok()?.issue?.title
}

/// What to list runs by; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub repo: String,
    pub state: String,
    pub mode: String,
    /// `issues` or `pull_request_review`; empty for both.
    pub event: String,
    pub issue_number: Option<i64>,
}

/// A delivery as listed, without its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub seq: i64,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repo: Option<String>,
    pub sender: Option<String>,
    pub received_at: i64,
    pub processed_at: Option<i64>,
    pub outcome: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// Set for a dead letter: not retried until `issueops deliveries retry`.
    pub dead_at: Option<i64>,
}

/// What to search the audit table by; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub delivery_id: String,
    pub run_id: String,
    /// A full sha or its prefix.
    pub commit: String,
    pub actor: String,
    pub kind: String,
}

/// The reconciler's last cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CycleRecord {
    pub at: i64,
    pub head: Option<String>,
    pub outcome: String,
    pub detail: String,
}

impl Store {
    /// One page of runs matching `filter`, newest first, and how many match.
    pub async fn runs_page(
        &self,
        filter: &RunFilter,
        page: i64,
    ) -> Result<(Vec<RunView>, i64), StoreError> {
        const WHERE: &str = " WHERE ($1 = '' OR LOWER(r.repo) = LOWER($1))
              AND ($2 = '' OR r.state = $2)
              AND ($3 = '' OR r.mode = $3)
              AND ($4 = '' OR i.event = $4)
              AND ($5 < 0 OR r.issue_number = $5)";
        let issue = filter.issue_number.unwrap_or(-1);
        let rows = sqlx::query(&format!(
            "{RUN_VIEW_SELECT}{WHERE} ORDER BY r.created_at DESC, r.run_id LIMIT $6 OFFSET $7"
        ))
        .bind(&filter.repo)
        .bind(&filter.state)
        .bind(&filter.mode)
        .bind(&filter.event)
        .bind(issue)
        .bind(PAGE)
        .bind(page.max(0).saturating_mul(PAGE))
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing runs for the UI"))?;
        let runs = rows
            .into_iter()
            .map(run_view)
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("reading a run row"))?;
        // The inbox is joined for the count only when the event is filtered.
        let from = if filter.event.is_empty() {
            "runs r"
        } else {
            "runs r LEFT JOIN inbox i ON i.delivery_id = r.delivery_id"
        };
        let where_ = if filter.event.is_empty() {
            WHERE.replace("($4 = '' OR i.event = $4)", "$4 = ''")
        } else {
            WHERE.to_string()
        };
        let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {from}{where_}"))
            .bind(&filter.repo)
            .bind(&filter.state)
            .bind(&filter.mode)
            .bind(&filter.event)
            .bind(issue)
            .fetch_one(self.pool())
            .await
            .map_err(sql("counting runs for the UI"))?;
        Ok((runs, total))
    }

    /// One run as the UI shows it.
    pub async fn run_view(&self, run_id: &str) -> Result<Option<RunView>, StoreError> {
        let row = sqlx::query(&format!("{RUN_VIEW_SELECT} WHERE r.run_id = $1"))
            .bind(run_id)
            .fetch_optional(self.pool())
            .await
            .map_err(sql("reading a run for the UI"))?;
        row.map(run_view)
            .transpose()
            .map_err(sql("reading a run row"))
    }

    /// One page of the inbox, newest first; `stuck_only` keeps the
    /// deliveries not processed yet.
    pub async fn deliveries_page(
        &self,
        stuck_only: bool,
        page: i64,
    ) -> Result<(Vec<DeliveryView>, i64), StoreError> {
        let filter = if stuck_only {
            " WHERE processed_at IS NULL"
        } else {
            ""
        };
        let rows: Vec<sqlx::any::AnyRow> = sqlx::query(&format!(
            "SELECT seq, delivery_id, event, action, repo, sender, received_at, processed_at,
                    outcome, attempts, last_error, dead_at
               FROM inbox{filter} ORDER BY seq DESC LIMIT $1 OFFSET $2"
        ))
        .bind(PAGE)
        .bind(page.max(0).saturating_mul(PAGE))
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing the inbox"))?;
        let deliveries = rows
            .into_iter()
            .map(|row| {
                use sqlx::Row;
                Ok(DeliveryView {
                    seq: row.try_get(0)?,
                    delivery_id: row.try_get(1)?,
                    event: row.try_get(2)?,
                    action: row.try_get(3)?,
                    repo: row.try_get(4)?,
                    sender: row.try_get(5)?,
                    received_at: row.try_get(6)?,
                    processed_at: row.try_get(7)?,
                    outcome: row.try_get(8)?,
                    attempts: row.try_get(9)?,
                    last_error: row.try_get(10)?,
                    dead_at: row.try_get(11)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(sql("reading an inbox row"))?;
        let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM inbox{filter}"))
            .fetch_one(self.pool())
            .await
            .map_err(sql("counting the inbox"))?;
        Ok((deliveries, total))
    }

    /// How many runs are in each state.
    pub async fn count_runs_by_state(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM runs GROUP BY state")
                .fetch_all(self.pool())
                .await
                .map_err(sql("counting runs by state"))?;
        Ok(rows.into_iter().collect())
    }

    /// Audit rows matching `filter`, newest first; at most `limit`.
    pub async fn search_audit(
        &self,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows: Vec<AuditTuple> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events
              WHERE ($1 = '' OR delivery_id = $1)
                AND ($2 = '' OR run_id = $2)
                AND ($3 = '' OR commit_sha LIKE $3 || '%')
                AND ($4 = '' OR LOWER(actor) = LOWER($4))
                AND ($5 = '' OR kind = $5)
              ORDER BY id DESC LIMIT $6"
        ))
        .bind(&filter.delivery_id)
        .bind(&filter.run_id)
        .bind(&filter.commit)
        .bind(&filter.actor)
        .bind(&filter.kind)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(sql("searching the audit table"))?;
        Ok(rows.into_iter().map(AuditRow::from).collect())
    }

    /// The newest audit row of `kind` with `outcome`, if any (one indexed
    /// lookup: the health page asks three of these per view).
    pub async fn last_audit(
        &self,
        kind: &str,
        outcome: &str,
    ) -> Result<Option<AuditRow>, StoreError> {
        let row: Option<AuditTuple> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events
              WHERE kind = $1 AND outcome = $2 ORDER BY id DESC LIMIT 1"
        ))
        .bind(kind)
        .bind(outcome)
        .fetch_optional(self.pool())
        .await
        .map_err(sql("looking up the newest audit row of a kind"))?;
        Ok(row.map(AuditRow::from))
    }

    /// The newest audit row of `kind`, whatever its outcome.
    pub async fn last_audit_of_kind(&self, kind: &str) -> Result<Option<AuditRow>, StoreError> {
        let row: Option<AuditTuple> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE kind = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(kind)
        .fetch_optional(self.pool())
        .await
        .map_err(sql("looking up the newest audit row of a kind"))?;
        Ok(row.map(AuditRow::from))
    }

    /// The largest audit row id: changes whenever anything happens, which is
    /// what the UI's live updates wait for.
    pub async fn audit_high_water(&self) -> Result<i64, StoreError> {
        let (n,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM audit_events")
            .fetch_one(self.pool())
            .await
            .map_err(sql("reading the audit high-water mark"))?;
        Ok(n.unwrap_or(0))
    }

    /// Records the reconciler's cycle under `name` (its state key).
    pub async fn record_cycle(
        &self,
        name: &str,
        head: Option<&str>,
        outcome: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reconciler_cycles (name, at, head, outcome, detail) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET at = $2, head = $3, outcome = $4, detail = $5",
        )
        .bind(name)
        .bind(now_ms())
        .bind(head)
        .bind(outcome)
        .bind(detail.to_string())
        .execute(self.pool())
        .await
        .map_err(sql("recording the reconciler's cycle"))?;
        Ok(())
    }

    /// The reconciler's last cycle under `name`.
    pub async fn last_cycle(&self, name: &str) -> Result<Option<CycleRecord>, StoreError> {
        let row: Option<(i64, Option<String>, String, String)> = sqlx::query_as(
            "SELECT at, head, outcome, detail FROM reconciler_cycles WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .map_err(sql("reading the reconciler's cycle"))?;
        Ok(row.map(|(at, head, outcome, detail)| CycleRecord {
            at,
            head,
            outcome,
            detail,
        }))
    }
}

/// When a run was triggered, started (left the queue) and ended, and how:
/// what the dashboard's charts are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTiming {
    pub repo: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub state: String,
    /// The runner's outcome (`pr-opened`, `no-changes`, `failed`…), when it reported.
    pub outcome: Option<String>,
    pub reason: Option<String>,
}

type TimingRow = (
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
);

impl Store {
    /// The timings of every run triggered since `since` (ms), and of every
    /// run still queued however old, oldest first.
    pub async fn run_timings(&self, since: i64) -> Result<Vec<RunTiming>, StoreError> {
        let rows: Vec<TimingRow> = sqlx::query_as(
            "SELECT r.repo, r.created_at, r.started_at, r.finished_at, r.state, x.outcome, r.reason
                   FROM runs r LEFT JOIN run_results x ON x.run_id = r.run_id
                  WHERE r.created_at >= $1 OR r.state = 'queued' ORDER BY r.created_at",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await
        .map_err(super::sql("reading run timings"))?;
        Ok(rows
            .into_iter()
            .map(|r| RunTiming {
                repo: r.0,
                created_at: r.1,
                started_at: r.2,
                finished_at: r.3,
                state: r.4,
                outcome: r.5,
                reason: r.6,
            })
            .collect())
    }
}

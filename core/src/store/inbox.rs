//! The inbox table: verified deliveries, stored before the gateway answers and
//! consumed in order by the control plane.
//!
//! Invariant: one row per `X-GitHub-Delivery`; a second insert of the same id is
//! reported as a duplicate and changes nothing.

use super::{sql, Backend, Store, StoreError};
use crate::now_ms;

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repo: Option<String>,
    pub sender: Option<String>,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Stored { seq: i64 },
    Duplicate,
}

/// A delivery that will not be tried again until someone says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repo: Option<String>,
    pub attempts: i64,
    pub reason: String,
    pub dead_at: i64,
}

#[derive(Debug, Clone)]
pub struct InboxRow {
    pub seq: i64,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repo: Option<String>,
    pub sender: Option<String>,
    pub payload: String,
    pub outcome: Option<String>,
}

/// delivery id, event, action, repo, attempts, last error, dead at.
type DeadRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    i64,
);

type Row = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

impl From<Row> for InboxRow {
    fn from(r: Row) -> Self {
        Self {
            seq: r.0,
            delivery_id: r.1,
            event: r.2,
            action: r.3,
            repo: r.4,
            sender: r.5,
            payload: r.6,
            outcome: r.7,
        }
    }
}

const COLUMNS: &str = "seq, delivery_id, event, action, repo, sender, payload, outcome";

impl Store {
    /// Stores a delivery durably, or reports that its id is already stored.
    pub async fn insert_delivery(&self, d: &NewDelivery) -> Result<Inserted, StoreError> {
        let seq: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO inbox (delivery_id, event, action, repo, sender, payload, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (delivery_id) DO NOTHING RETURNING seq",
        )
        .bind(&d.delivery_id)
        .bind(&d.event)
        .bind(&d.action)
        .bind(&d.repo)
        .bind(&d.sender)
        .bind(&d.payload)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await
        .map_err(sql("storing a delivery in the inbox"))?;
        Ok(match seq {
            Some((seq,)) => Inserted::Stored { seq },
            None => Inserted::Duplicate,
        })
    }

    /// Stores `deliveries` in one transaction, each stored one with the audit
    /// row `audit` makes for it (given its inbox sequence number); duplicates
    /// get none. One commit for a group of concurrent requests: the gateway's
    /// group commit, which is what makes SQLite (one writer) keep up.
    pub async fn insert_deliveries(
        &self,
        deliveries: &[NewDelivery],
        audit: impl Fn(&NewDelivery, i64) -> crate::AuditEvent,
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(sql("starting to store deliveries"))?;
        // One statement per table for the whole group: the round trips, not
        // the rows, are what a commit waits for.
        let received_at = now_ms();
        let mut query = String::from(
            "INSERT INTO inbox (delivery_id, event, action, repo, sender, payload, received_at) VALUES ",
        );
        query.push_str(&placeholders(deliveries.len(), 7));
        query.push_str(" ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id, seq");
        let mut insert = sqlx::query_as::<_, (String, i64)>(&query);
        for d in deliveries {
            insert = insert
                .bind(&d.delivery_id)
                .bind(&d.event)
                .bind(&d.action)
                .bind(&d.repo)
                .bind(&d.sender)
                .bind(&d.payload)
                .bind(received_at);
        }
        let mut stored: std::collections::HashMap<String, i64> = insert
            .fetch_all(&mut *tx)
            .await
            .map_err(sql("storing deliveries in the inbox"))?
            .into_iter()
            .collect();
        // A delivery id twice in one group: the first is stored, the rest are
        // duplicates (as they would be one after the other).
        let out: Vec<Inserted> = deliveries
            .iter()
            .map(|d| match stored.remove(&d.delivery_id) {
                Some(seq) => Inserted::Stored { seq },
                None => Inserted::Duplicate,
            })
            .collect();
        let rows: Vec<crate::AuditEvent> = deliveries
            .iter()
            .zip(&out)
            .filter_map(|(d, i)| match i {
                Inserted::Stored { seq } => Some(audit(d, *seq)),
                Inserted::Duplicate => None,
            })
            .collect();
        crate::audit::insert_audits(&mut tx, &rows).await?;
        tx.commit()
            .await
            .map_err(sql("committing stored deliveries"))?;
        Ok(out)
    }

    /// Unprocessed deliveries that are not dead letters, oldest first
    /// (whether claimed or waiting for a retry).
    pub async fn pending_deliveries(&self, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM inbox WHERE processed_at IS NULL AND dead_at IS NULL ORDER BY seq LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(sql("reading pending deliveries"))?;
        Ok(rows.into_iter().map(InboxRow::from).collect())
    }

    /// Claims up to `limit` deliveries that are due, oldest first, for
    /// `lease_ms`: on PostgreSQL nobody else claims them until the lease runs
    /// out (a consumer that dies gives them back that way); on SQLite the
    /// leader's lock file already keeps other consumers out. A delivery waiting for a
    /// retry holds back the later deliveries of its repo, so one repo's events
    /// stay in order while other repos flow.
    pub async fn claim_deliveries(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        const DUE: &str = "d.processed_at IS NULL AND d.dead_at IS NULL
                    AND d.next_attempt_at <= $2 AND d.claimed_until <= $2
                    AND NOT EXISTS (
                        SELECT 1 FROM inbox w
                         WHERE w.processed_at IS NULL AND w.dead_at IS NULL AND w.attempts > 0
                           AND w.seq < d.seq AND COALESCE(w.repo, '') = COALESCE(d.repo, ''))";
        let now = now_ms();
        let query = match self.backend() {
            // Concurrent consumers skip each other's rows instead of waiting,
            // and a claim outlives a crash only by its lease.
            Backend::Postgres => format!(
                "UPDATE inbox SET claimed_until = $1 WHERE seq IN (
                     SELECT seq FROM inbox d WHERE {DUE}
                      ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING {COLUMNS}"
            ),
            // One process at a time writes a SQLite database (the leader's
            // lock file): reading is claiming, and saves a write per pass.
            Backend::Sqlite => format!(
                "SELECT {COLUMNS} FROM inbox d WHERE $1 = $1 AND {DUE} ORDER BY seq LIMIT $3"
            ),
        };
        let mut rows: Vec<Row> = sqlx::query_as(&query)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .map_err(sql("claiming deliveries"))?;
        rows.sort_by_key(|r| r.0);
        Ok(rows.into_iter().map(InboxRow::from).collect())
    }

    /// Gives a claimed delivery back without counting an attempt.
    pub async fn release_delivery(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET claimed_until = 0 WHERE seq = $1")
            .bind(seq)
            .execute(self.pool())
            .await
            .map_err(sql("releasing a delivery"))?;
        Ok(())
    }

    pub async fn mark_processed(&self, seq: i64, outcome: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inbox SET processed_at = $1, outcome = $2, claimed_until = 0 WHERE seq = $3",
        )
        .bind(now_ms())
        .bind(outcome)
        .bind(seq)
        .execute(self.pool())
        .await
        .map_err(sql("marking a delivery processed"))?;
        Ok(())
    }

    /// Records a failed attempt at delivery `seq`: with `retry_at` it is tried
    /// again from then, without it becomes a dead letter. Returns the attempts
    /// made so far.
    pub async fn fail_delivery(
        &self,
        seq: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<i64, StoreError> {
        let (attempts,): (i64,) = sqlx::query_as(
            "UPDATE inbox SET attempts = attempts + 1, last_error = $1, claimed_until = 0,
                    next_attempt_at = COALESCE($2, next_attempt_at),
                    dead_at = CASE WHEN $2 IS NULL THEN $3 ELSE NULL END
              WHERE seq = $4 RETURNING attempts",
        )
        .bind(error)
        .bind(retry_at)
        .bind(now_ms())
        .bind(seq)
        .fetch_one(self.pool())
        .await
        .map_err(sql("recording a delivery's failed attempt"))?;
        Ok(attempts)
    }

    /// Attempts counted so far for delivery `seq`.
    pub async fn delivery_attempts(&self, seq: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT attempts FROM inbox WHERE seq = $1")
            .bind(seq)
            .fetch_one(self.pool())
            .await
            .map_err(sql("reading a delivery's attempts"))?;
        Ok(n)
    }

    /// Keeps why a delivery could not be handled, without counting an attempt
    /// (the store or the state repo failed, not the delivery), and gives its
    /// claim back.
    pub async fn note_delivery_error(&self, seq: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET last_error = $1, claimed_until = 0 WHERE seq = $2")
            .bind(error)
            .bind(seq)
            .execute(self.pool())
            .await
            .map_err(sql("recording why a delivery failed"))?;
        Ok(())
    }

    /// Dead letters, oldest first.
    pub async fn dead_deliveries(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows: Vec<DeadRow> = sqlx::query_as(
            "SELECT delivery_id, event, action, repo, attempts, last_error, dead_at
                   FROM inbox WHERE dead_at IS NOT NULL ORDER BY seq",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing dead deliveries"))?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                delivery_id: r.0,
                event: r.1,
                action: r.2,
                repo: r.3,
                attempts: r.4,
                reason: r.5.unwrap_or_default(),
                dead_at: r.6,
            })
            .collect())
    }

    /// Puts a dead letter back in line with a fresh count of attempts.
    /// `false` when no dead letter has that id.
    pub async fn retry_dead_delivery(&self, delivery_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE inbox SET dead_at = NULL, attempts = 0, next_attempt_at = 0, claimed_until = 0
              WHERE delivery_id = $1 AND dead_at IS NOT NULL",
        )
        .bind(delivery_id)
        .execute(self.pool())
        .await
        .map_err(sql("retrying a dead delivery"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The event name and payload of a stored delivery.
    pub async fn delivery(
        &self,
        delivery_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        sqlx::query_as("SELECT event, payload FROM inbox WHERE delivery_id = $1")
            .bind(delivery_id)
            .fetch_optional(self.pool())
            .await
            .map_err(sql("reading a delivery"))
    }

    /// Whether any delivery was stored for issue `issue` of `repo` with this
    /// action and label (by the fields GitHub sends; payload is JSON text).
    pub async fn has_issue_trigger(
        &self,
        repo: &str,
        issue: i64,
        label: &str,
    ) -> Result<bool, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT payload FROM inbox WHERE event = 'issues' AND action = 'labeled' AND LOWER(repo) = LOWER($1)",
        )
        .bind(repo)
        .fetch_all(self.pool())
        .await
        .map_err(sql("looking for an issue's triggers"))?;
        Ok(rows.iter().any(|(payload,)| {
            serde_json::from_str::<crate::event::IssuesEvent>(payload).is_ok_and(|e| {
                e.issue.number as i64 == issue && e.label.is_some_and(|l| l.name == label)
            })
        }))
    }

    pub async fn count_deliveries(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM inbox")
            .fetch_one(self.pool())
            .await
            .map_err(sql("counting deliveries"))?;
        Ok(n)
    }
}

/// `($1, …, $width), ($width+1, …)` for `rows` rows.
pub(crate) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

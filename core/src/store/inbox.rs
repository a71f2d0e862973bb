//! The inbox table: verified deliveries, stored before the gateway answers and
//! consumed in order by the control plane.
//!
//! Invariant: one row per `X-GitHub-Delivery`; a second insert of the same id is
//! reported as a duplicate and changes nothing.

use super::{sql, Store, StoreError};
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

    /// Unprocessed deliveries, oldest first.
    pub async fn pending_deliveries(&self, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM inbox WHERE processed_at IS NULL ORDER BY seq LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(sql("reading pending deliveries"))?;
        Ok(rows.into_iter().map(InboxRow::from).collect())
    }

    pub async fn mark_processed(&self, seq: i64, outcome: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET processed_at = $1, outcome = $2 WHERE seq = $3")
            .bind(now_ms())
            .bind(outcome)
            .bind(seq)
            .execute(self.pool())
            .await
            .map_err(sql("marking a delivery processed"))?;
        Ok(())
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

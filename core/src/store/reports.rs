//! The reports table: the status comment each trigger should have on its
//! issue, and what GitHub last accepted. An outbox: writers set the wanted
//! body; the reporter posts until the two agree, so a GitHub outage delays a
//! report but never loses it.

use super::{sql, Store, StoreError};
use crate::now_ms;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub subject: String,
    pub repo: String,
    pub issue_number: i64,
    pub body: String,
    pub comment_id: Option<i64>,
}

impl Store {
    /// Sets the wanted body of `subject`'s comment (no-op when unchanged).
    pub async fn set_report(
        &self,
        subject: &str,
        repo: &str,
        issue: i64,
        body: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reports (subject, repo, issue_number, body, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (subject) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at
             WHERE reports.body <> excluded.body",
        )
        .bind(subject)
        .bind(repo)
        .bind(issue)
        .bind(body)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(sql("setting a report"))?;
        Ok(())
    }

    /// The wanted body of every report, by subject.
    pub async fn report_bodies(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT subject, body FROM reports")
            .fetch_all(self.pool())
            .await
            .map_err(sql("reading reports"))?;
        Ok(rows.into_iter().collect())
    }

    /// Reports whose wanted body GitHub has not accepted yet, oldest first.
    pub async fn unposted_reports(&self, limit: i64) -> Result<Vec<Report>, StoreError> {
        let rows: Vec<(String, String, i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT subject, repo, issue_number, body, comment_id FROM reports
             WHERE posted_body IS NULL OR posted_body <> body ORDER BY updated_at, subject LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing unposted reports"))?;
        Ok(rows
            .into_iter()
            .map(|r| Report {
                subject: r.0,
                repo: r.1,
                issue_number: r.2,
                body: r.3,
                comment_id: r.4,
            })
            .collect())
    }

    /// Records the comment GitHub holds for `subject` and the body it accepted.
    pub async fn mark_reported(
        &self,
        subject: &str,
        comment_id: i64,
        body: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE reports SET comment_id = $1, posted_body = $2 WHERE subject = $3")
            .bind(comment_id)
            .bind(body)
            .bind(subject)
            .execute(self.pool())
            .await
            .map_err(sql("recording a posted report"))?;
        Ok(())
    }
}

//! The reconciler's bookkeeping: the last state-repo commit it fully applied.

use super::{sql, Store, StoreError};
use crate::now_ms;

impl Store {
    pub async fn last_applied_commit(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT commit_sha FROM reconciler_state WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await
                .map_err(sql("reading the last applied commit"))?;
        Ok(row.map(|r| r.0))
    }

    pub async fn set_last_applied_commit(&self, name: &str, sha: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reconciler_state (name, commit_sha, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET commit_sha = excluded.commit_sha,
                                              updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(sha)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(sql("recording the last applied commit"))?;
        Ok(())
    }
}

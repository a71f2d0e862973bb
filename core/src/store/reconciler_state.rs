//! The reconciler's bookkeeping: the last state-repo commit it fully applied,
//! and the agent token Secrets it wrote (namespace, run, expiry; no token).

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

impl Store {
    /// `(namespace, run id, expires_at epoch seconds)` of every agent Secret.
    pub async fn agent_secrets(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        sqlx::query_as("SELECT namespace, run_id, expires_at FROM agent_secrets ORDER BY namespace")
            .fetch_all(self.pool())
            .await
            .map_err(sql("listing agent secrets"))
    }

    pub async fn record_agent_secret(
        &self,
        namespace: &str,
        run_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_secrets (namespace, run_id, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (namespace) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at",
        )
        .bind(namespace)
        .bind(run_id)
        .bind(expires_at)
        .execute(self.pool())
        .await
        .map_err(sql("recording an agent secret"))?;
        Ok(())
    }

    pub async fn forget_agent_secret(&self, namespace: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM agent_secrets WHERE namespace = $1")
            .bind(namespace)
            .execute(self.pool())
            .await
            .map_err(sql("forgetting an agent secret"))?;
        Ok(())
    }
}

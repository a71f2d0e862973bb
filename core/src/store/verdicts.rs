//! The full resync's verdicts, kept across restarts (`inventory_verdicts`):
//! which live objects, by reference and field fingerprint, own every field
//! their state-repo file sets. See `issueops_reconciler::inventory`.

use super::inbox::placeholders;
use super::{sql, Store, StoreError};
use std::collections::HashMap;

/// Rows per statement: at most 3,001 parameters, far below either database's limit.
const CHUNK: usize = 1_000;

impl Store {
    /// Every verdict kept for `instance`: reference → fingerprint.
    pub async fn verdicts(&self, instance: &str) -> Result<HashMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT reference, fingerprint FROM inventory_verdicts WHERE instance = $1",
        )
        .bind(instance)
        .fetch_all(self.pool())
        .await
        .map_err(sql("reading the inventory's verdicts"))?;
        Ok(rows
            .into_iter()
            .map(|(reference, fingerprint)| (reference, fingerprint as u64))
            .collect())
    }

    /// Keeps `verdicts` (reference, fingerprint), replacing what was kept
    /// for the same references, and drops those of `gone`; one transaction.
    pub async fn save_verdicts(
        &self,
        instance: &str,
        verdicts: &[(String, u64)],
        gone: &[String],
    ) -> Result<(), StoreError> {
        if verdicts.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(sql("starting to keep verdicts"))?;
        // Drops first: an object deleted and made again since the last call
        // keeps its new verdict (a kept verdict is sound either way).
        for chunk in gone.chunks(CHUNK) {
            let list: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let query = format!(
                "DELETE FROM inventory_verdicts WHERE instance = $1 AND reference IN ({})",
                list.join(", ")
            );
            let mut delete = sqlx::query(&query).bind(instance);
            for reference in chunk {
                delete = delete.bind(reference);
            }
            delete
                .execute(&mut *tx)
                .await
                .map_err(sql("dropping verdicts"))?;
        }
        for chunk in verdicts.chunks(CHUNK) {
            let query = format!(
                "INSERT INTO inventory_verdicts (instance, reference, fingerprint) VALUES {} \
                 ON CONFLICT (instance, reference) DO UPDATE SET fingerprint = excluded.fingerprint",
                placeholders(chunk.len(), 3)
            );
            let mut insert = sqlx::query(&query);
            for (reference, fingerprint) in chunk {
                insert = insert
                    .bind(instance)
                    .bind(reference)
                    .bind(*fingerprint as i64);
            }
            insert
                .execute(&mut *tx)
                .await
                .map_err(sql("keeping verdicts"))?;
        }
        tx.commit().await.map_err(sql("committing verdicts"))
    }
}

//! The audit table's hash chain: every row carries the SHA-256 of its
//! canonical form and of the row before it, computed at insert while the
//! chain's head row is locked, so concurrent appends line up one after the
//! other and each names the one before.
//!
//! Invariant: a row's `row_hash` is [`row_hash`] of its `prev_hash` and its
//! stored columns, and its `prev_hash` is the `row_hash` of the chained row
//! before it (or [`GENESIS`]); `audit_chain.head` is the last row's hash.

use super::AuditEvent;
use crate::store::{sql, StoreError};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first chained row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The columns a row's hash covers, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical<'a> {
    pub at: i64,
    pub kind: &'a str,
    pub outcome: &'a str,
    pub delivery_id: Option<&'a str>,
    pub run_id: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub object: Option<&'a str>,
    /// The stored text of `detail`, hashed as stored (not re-serialised).
    pub detail: &'a str,
}

/// `hex(sha256("issueops-audit-v1\n" + prev + "\n" + json))`, where `json` is
/// the JSON array of the row's columns in [`Canonical`]'s order: one string
/// per row whatever the database, and no column can bleed into another.
pub fn row_hash(prev: &str, row: &Canonical<'_>) -> String {
    let columns = serde_json::json!([
        row.at,
        row.kind,
        row.outcome,
        row.delivery_id,
        row.run_id,
        row.commit_sha,
        row.actor,
        row.object,
        row.detail,
    ]);
    let mut hasher = Sha256::new();
    hasher.update(b"issueops-audit-v1\n");
    hasher.update(prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(columns.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// Appends `rows` through `conn`, which must be inside a transaction: the
/// head's lock is held until that transaction ends, so the next append
/// (from any process) reads the head this one wrote.
pub(crate) async fn append(
    conn: &mut sqlx::AnyConnection,
    rows: &[AuditEvent],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    // An UPDATE first: on PostgreSQL it takes the head row's lock, on SQLite
    // the database's write lock (a read first could see a head that another
    // writer moves before this transaction may write).
    let (head,): (Option<String>,) =
        sqlx::query_as("UPDATE audit_chain SET rows = rows + $1 WHERE id = 1 RETURNING head")
            .bind(rows.len() as i64)
            .fetch_one(&mut *conn)
            .await
            .map_err(sql("locking the audit chain"))?;
    let at = crate::now_ms();
    let details: Vec<String> = rows.iter().map(|e| e.detail.to_string()).collect();
    let mut prev = head.unwrap_or_else(|| GENESIS.to_string());
    let mut links = Vec::with_capacity(rows.len());
    for (e, detail) in rows.iter().zip(&details) {
        let hash = row_hash(
            &prev,
            &Canonical {
                at,
                kind: &e.kind,
                outcome: &e.outcome,
                delivery_id: e.delivery_id.as_deref(),
                run_id: e.run_id.as_deref(),
                commit_sha: e.commit_sha.as_deref(),
                actor: e.actor.as_deref(),
                object: e.object.as_deref(),
                detail,
            },
        );
        links.push((std::mem::replace(&mut prev, hash.clone()), hash));
    }
    let query = format!(
        "INSERT INTO audit_events
             (at, kind, outcome, delivery_id, run_id, commit_sha, actor, object, detail, prev_hash, row_hash)
         VALUES {} RETURNING id",
        crate::store::inbox::placeholders(rows.len(), 11)
    );
    let mut insert = sqlx::query_as::<_, (i64,)>(&query);
    for ((e, detail), (prev_hash, hash)) in rows.iter().zip(&details).zip(&links) {
        insert = insert
            .bind(at)
            .bind(&e.kind)
            .bind(&e.outcome)
            .bind(&e.delivery_id)
            .bind(&e.run_id)
            .bind(&e.commit_sha)
            .bind(&e.actor)
            .bind(&e.object)
            .bind(detail)
            .bind(prev_hash)
            .bind(hash);
    }
    let ids = insert
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("appending audit rows"))?;
    let last_id = ids.iter().map(|(id,)| *id).max().unwrap_or_default();
    sqlx::query("UPDATE audit_chain SET head = $1, head_id = $2 WHERE id = 1")
        .bind(&prev)
        .bind(last_id)
        .execute(&mut *conn)
        .await
        .map_err(sql("moving the audit chain's head"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(detail: &'a str) -> Canonical<'a> {
        Canonical {
            at: 1,
            kind: "decision",
            outcome: "accepted",
            delivery_id: Some("d1"),
            run_id: None,
            commit_sha: None,
            actor: Some("octocat"),
            object: None,
            detail,
        }
    }

    #[test]
    fn the_hash_covers_every_column_and_the_previous_row() {
        let base = row_hash(GENESIS, &row("{}"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, row_hash(GENESIS, &row("{}")), "deterministic");
        assert_ne!(base, row_hash(&"1".repeat(64), &row("{}")), "prev");
        assert_ne!(base, row_hash(GENESIS, &row("{ }")), "detail as stored");
        let mut moved = row("{}");
        moved.actor = None;
        moved.object = Some("octocat");
        assert_ne!(
            base,
            row_hash(GENESIS, &moved),
            "a value moved to another column"
        );
        let mut at = row("{}");
        at.at = 2;
        assert_ne!(base, row_hash(GENESIS, &at), "time");
    }
}

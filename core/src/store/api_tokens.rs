//! Bearer tokens for the staff JSON API (`api_tokens`): scoped viewer or
//! approver like the UI's roles, stored only as the token's SHA-256, shown
//! once at creation, revoked by name.

use super::{sql, Store, StoreError};
use crate::now_ms;
use serde::Serialize;
use sha2::Digest;

/// What every token starts with, so a leaked one is recognisable (and
/// redacted from transcripts by [`crate::transcript::redact`]).
pub const PREFIX: &str = "issueops_";

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    /// `viewer` or `approver`.
    pub role: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

type Row = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

impl From<Row> for ApiToken {
    fn from(r: Row) -> Self {
        Self {
            id: r.0,
            name: r.1,
            role: r.2,
            created_by: r.3,
            created_at: r.4,
            expires_at: r.5,
            revoked_at: r.6,
        }
    }
}

const COLUMNS: &str = "id, name, role, created_by, created_at, expires_at, revoked_at";

/// The stored form of `token`: its hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Stores a new token by its hash. A name in use (live or revoked) is
    /// refused: names are how tokens are revoked and audited.
    pub async fn create_api_token(
        &self,
        token: &ApiToken,
        secret: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO api_tokens ({COLUMNS}, token_hash) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)
             ON CONFLICT (name) DO NOTHING"
        ))
        .bind(&token.id)
        .bind(&token.name)
        .bind(&token.role)
        .bind(&token.created_by)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token_hash(secret))
        .execute(self.pool())
        .await
        .map_err(sql("storing an API token"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The live token (not revoked, not expired) whose secret is `secret`.
    pub async fn live_api_token(&self, secret: &str) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)"
        ))
        .bind(token_hash(secret))
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await
        .map_err(sql("reading an API token"))?;
        Ok(row.map(ApiToken::from))
    }

    /// Every token, newest first.
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at DESC, name"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing API tokens"))?;
        Ok(rows.into_iter().map(ApiToken::from).collect())
    }

    /// Revokes the live token named `name`; returns whether one was.
    pub async fn revoke_api_token(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(name)
        .execute(self.pool())
        .await
        .map_err(sql("revoking an API token"))?;
        Ok(done.rows_affected() == 1)
    }
}

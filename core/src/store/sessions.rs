//! Staff UI sessions (`ui_sessions`): created by a sign-in, looked up on
//! every request by the SHA-256 of the cookie's session id, ended by a
//! sign-out or a revocation. Expired and revoked rows are dropped when a new
//! session is made; nothing is written for a request that is not signed in.

use super::{sql, Store, StoreError};
use crate::now_ms;
use serde::Serialize;

/// One session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UiSession {
    /// Hex SHA-256 of the cookie's session id (the id itself is never kept).
    pub id_hash: String,
    pub login: String,
    /// `viewer` or `approver`, as granted at sign-in.
    pub role: String,
    /// How they signed in (`github`, `loopback link`).
    pub how: String,
    /// JSON of what the sign-in learnt (orgs, teams).
    pub identity: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

impl From<Row> for UiSession {
    fn from(r: Row) -> Self {
        Self {
            id_hash: r.0,
            login: r.1,
            role: r.2,
            how: r.3,
            identity: r.4,
            created_at: r.5,
            expires_at: r.6,
            revoked_at: r.7,
        }
    }
}

const COLUMNS: &str = "id_hash, login, role, how, identity, created_at, expires_at, revoked_at";

/// Which sessions a revocation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoke<'a> {
    /// The session whose id hash starts with this (as `issueops sessions` shows it).
    Id(&'a str),
    /// Every session of a login.
    Login(&'a str),
    All,
}

impl Store {
    /// Stores a new session (and drops the ones that ended).
    pub async fn create_ui_session(&self, s: &UiSession) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at < $1 OR revoked_at IS NOT NULL")
            .bind(now)
            .execute(self.pool())
            .await
            .map_err(sql("dropping ended sessions"))?;
        sqlx::query(&format!(
            "INSERT INTO ui_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)"
        ))
        .bind(&s.id_hash)
        .bind(&s.login)
        .bind(&s.role)
        .bind(&s.how)
        .bind(&s.identity)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(self.pool())
        .await
        .map_err(sql("storing a session"))?;
        Ok(())
    }

    /// The live session with this id hash: not revoked, not expired.
    pub async fn live_ui_session(&self, id_hash: &str) -> Result<Option<UiSession>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM ui_sessions
             WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > $2"
        ))
        .bind(id_hash)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await
        .map_err(sql("reading a session"))?;
        Ok(row.map(UiSession::from))
    }

    /// Live sessions, newest first.
    pub async fn live_ui_sessions(&self) -> Result<Vec<UiSession>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM ui_sessions
             WHERE revoked_at IS NULL AND expires_at > $1 ORDER BY created_at DESC, id_hash"
        ))
        .bind(now_ms())
        .fetch_all(self.pool())
        .await
        .map_err(sql("listing sessions"))?;
        Ok(rows.into_iter().map(UiSession::from).collect())
    }

    /// Ends the sessions `which` names; returns the logins whose sessions ended.
    pub async fn revoke_ui_sessions(&self, which: Revoke<'_>) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let (filter, value) = match which {
            Revoke::Id(prefix) => {
                // A prefix of a hex hash: anything else matches nothing.
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(Vec::new());
                }
                (
                    "AND id_hash LIKE $3",
                    Some(format!("{}%", prefix.to_ascii_lowercase())),
                )
            }
            Revoke::Login(login) => ("AND login = $3", Some(login.to_string())),
            Revoke::All => ("", None),
        };
        let statement = format!(
            "UPDATE ui_sessions SET revoked_at = $1
             WHERE revoked_at IS NULL AND expires_at > $2 {filter} RETURNING login"
        );
        let mut query = sqlx::query_as::<_, (String,)>(&statement)
            .bind(now)
            .bind(now);
        if let Some(value) = value {
            query = query.bind(value);
        }
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(sql("revoking sessions"))?;
        Ok(rows.into_iter().map(|(l,)| l).collect())
    }
}

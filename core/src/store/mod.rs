//! The SQL store: one pool shared by every component, on SQLite (embedded
//! default) or PostgreSQL (production), chosen by the database URL.
//!
//! Queries live next to the table they own (`inbox`, `runs`, `reconciler_state`,
//! and `crate::audit`). All SQL is written once for both databases: `$n`
//! placeholders, BIGINT millisecond timestamps, `ON CONFLICT`, `RETURNING`.

pub mod api_tokens;
pub mod approvals;
pub mod inbox;
pub mod lock;
pub mod proposals;
pub mod reconciler_state;
pub mod reports;
pub mod results;
pub mod runs;
pub mod sessions;
pub mod transcripts;
pub mod verdicts;
pub mod views;

use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::AnyPool;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error while {context}: {source}")]
    Sql {
        context: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot connect to database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database URL {0:?} is not supported: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database has no issueops schema yet: run `issueops migrate` first")]
    NotMigrated,
    /// Another process holds a writer lock for longer than the caller waits.
    #[error("{0}")]
    Busy(String),
    #[error("writer lock: {0}")]
    Lock(String),
}

/// Shorthand used by every query to attach what it was doing.
pub(crate) fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How long the first connection to PostgreSQL may take before start-up
/// gives up saying so.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The database file, for the writer locks beside it (SQLite on disk).
    sqlite_path: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path`, `postgres://...`). A SQLite file is
    /// created when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let (backend, url, max) = if url.starts_with("sqlite:") {
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url, 4)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_string(), 8)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        if backend == Backend::Postgres {
            // One plain connection first: the pool retries a refused or
            // unresolvable server until its timeout and then says only
            // "pool timed out"; this says why, at once.
            use sqlx::Connection;
            match tokio::time::timeout(CONNECT_WAIT, sqlx::AnyConnection::connect(&url)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                }
                Ok(Err(source)) => {
                    return Err(StoreError::Connect {
                        url: redact_url(&url),
                        source,
                    })
                }
                Err(_) => {
                    return Err(StoreError::Connect {
                        url: redact_url(&url),
                        source: sqlx::Error::PoolTimedOut,
                    })
                }
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(&url),
                source,
            })?;
        if backend == Backend::Sqlite {
            // WAL lets the gateway insert while the control plane reads.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(sql("enabling WAL"))?;
        }
        let sqlite_path = (backend == Backend::Sqlite)
            .then(|| sqlite_file(&url))
            .flatten();
        Ok(Self {
            pool,
            backend,
            sqlite_path,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the forward-only migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Fails with a clear message when `migrate` has not been run; used by the
    /// roles that must not migrate themselves (the gateway).
    pub async fn ensure_migrated(&self) -> Result<(), StoreError> {
        match sqlx::query("SELECT 1 FROM audit_events WHERE 1 = 0")
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::NotMigrated),
        }
    }
}

/// The file of a `sqlite://PATH?...` URL; `None` for an in-memory database.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// Hides the credentials of a URL (database or git) before it reaches a
/// log, an error or an audit row: the password, a user name that is really a
/// token (`https://TOKEN@host`), and token-like query parameters.
pub fn redact_url(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at))
            if at > scheme_end && !url[scheme_end + 3..at].contains('/') =>
        {
            let userinfo = &url[scheme_end + 3..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                // A user name alone is how GitHub tokens are usually given.
                None if userinfo.len() >= 20 => "***".into(),
                None => userinfo.into(),
            };
            format!("{}{shown}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if ["token", "access_token", "password", "sslpassword", "secret"]
                        .iter()
                        .any(|s| k.eq_ignore_ascii_case(s)) =>
                {
                    format!("{k}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_leave_the_url() {
        assert_eq!(
            redact_url("postgres://u:s3cret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn tokens_in_git_urls_are_hidden() {
        assert_eq!(
            redact_url("https://x-access-token:ghs_abcdef@github.com/o/r.git"),
            "https://x-access-token:***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("https://ghp_0123456789abcdefghij0123@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("ssh://git@github.com/o/r.git"),
            "ssh://git@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("https://h/r.git?access_token=abc&ref=main"),
            "https://h/r.git?access_token=***&ref=main"
        );
        assert_eq!(
            redact_url("https://h/o/r@v1?x=1"),
            "https://h/o/r@v1?x=1",
            "an @ in the path is not a user name"
        );
    }
}

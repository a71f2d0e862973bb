//! One writer at a time, through the database every replica shares.
//!
//! Two kinds of lock, both named by a role (`control-plane`, `reconciler`):
//! - *leadership*, held for as long as a service is the active replica of its
//!   role; the others stand by and retry. PostgreSQL: a session advisory lock
//!   on a connection of its own, released by the server the moment the holder
//!   dies. SQLite (one machine): an exclusive lock on a file beside the
//!   database, released by the kernel the same way.
//! - *exclusive*, held for one pass of work or one CLI command that changes
//!   state: a service's pass and an operator's `approve` take turns instead of
//!   interleaving. PostgreSQL: a transaction-scoped advisory lock (released
//!   even when the holder is cancelled); SQLite: a second lock file.

use super::{sql, Backend, Store, StoreError};
use sqlx::Any;
use sqlx::AnyConnection;
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Advisory lock keys: a fixed namespace, then the role and the kind of lock.
fn key(role: &str, exclusive: bool) -> i64 {
    let mut h: i64 = 0x6973_7375_656f_7073; // "issueops"
    for b in role.bytes().chain([u8::from(exclusive)]) {
        h = h.wrapping_mul(31).wrapping_add(i64::from(b));
    }
    h
}

/// Holding leadership of a role.
pub struct Leadership {
    role: String,
    held: Held,
}

enum Held {
    /// Detached from the pool: dropping it closes the session, and with it
    /// the lock (a pooled connection would go back still holding it).
    Postgres(AnyConnection),
    File(#[allow(dead_code)] File),
    /// An in-memory database: only this process can see it.
    Nothing,
}

impl Leadership {
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Whether the lock is still ours: false once the PostgreSQL session that
    /// holds it is gone (the server released it; another replica may lead).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.held {
            Held::Postgres(conn) => {
                let check = sqlx::query("SELECT 1").execute(&mut *conn);
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), check).await,
                    Ok(Ok(_))
                )
            }
            Held::File(_) | Held::Nothing => true,
        }
    }
}

/// Holding the exclusive lock of a role; released on drop.
pub struct Exclusive {
    #[allow(dead_code)]
    held: ExclusiveHeld,
}

enum ExclusiveHeld {
    Postgres(#[allow(dead_code)] sqlx::Transaction<'static, Any>),
    File(#[allow(dead_code)] File),
    Nothing,
}

impl Store {
    /// The lock file of `role` beside a SQLite database; `None` in memory.
    fn lock_file(&self, role: &str, suffix: &str) -> Option<PathBuf> {
        let path = self.sqlite_path.as_ref()?;
        let mut name = path.file_name()?.to_os_string();
        name.push(format!(".{role}.{suffix}"));
        Some(path.with_file_name(name))
    }

    /// Tries to become the active replica of `role`; `None` while another
    /// process leads.
    pub async fn try_leadership(&self, role: &str) -> Result<Option<Leadership>, StoreError> {
        let held = match self.backend() {
            Backend::Postgres => {
                let mut conn = self
                    .pool()
                    .acquire()
                    .await
                    .map_err(sql("taking a connection for the leader lock"))?
                    .detach();
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(key(role, false))
                    .fetch_one(&mut conn)
                    .await
                    .map_err(sql("taking the leader lock"))?;
                if !got {
                    return Ok(None);
                }
                Held::Postgres(conn)
            }
            Backend::Sqlite => match self.lock_file(role, "leader") {
                Some(path) => match try_lock_file(&path)? {
                    Some(file) => Held::File(file),
                    None => return Ok(None),
                },
                None => Held::Nothing,
            },
        };
        Ok(Some(Leadership {
            role: role.to_string(),
            held,
        }))
    }

    /// Waits up to `wait` for the exclusive lock of `role`, else fails with
    /// [`StoreError::Busy`].
    pub async fn exclusive(&self, role: &str, wait: Duration) -> Result<Exclusive, StoreError> {
        let busy = || {
            StoreError::Busy(format!(
                "another issueops process held the {role} lock for more than {} s; try again",
                wait.as_secs().max(1)
            ))
        };
        let held = match self.backend() {
            Backend::Postgres => {
                let mut tx = self
                    .pool()
                    .begin()
                    .await
                    .map_err(sql("starting a locked transaction"))?;
                sqlx::query(&format!(
                    "SET LOCAL lock_timeout = {}",
                    wait.as_millis().max(1)
                ))
                .execute(&mut *tx)
                .await
                .map_err(sql("bounding the wait for a lock"))?;
                match sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(key(role, true))
                    .execute(&mut *tx)
                    .await
                {
                    Ok(_) => ExclusiveHeld::Postgres(tx),
                    // 55P03: lock_not_available (the timeout ran out).
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                        return Err(busy())
                    }
                    Err(e) => return Err(sql("taking the exclusive lock")(e)),
                }
            }
            Backend::Sqlite => match self.lock_file(role, "lock") {
                Some(path) => {
                    let deadline = Instant::now() + wait;
                    loop {
                        if let Some(file) = try_lock_file(&path)? {
                            break ExclusiveHeld::File(file);
                        }
                        if Instant::now() >= deadline {
                            return Err(busy());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                None => ExclusiveHeld::Nothing,
            },
        };
        Ok(Exclusive { held })
    }
}

/// Takes an exclusive lock on `path` (created when missing) without waiting.
fn try_lock_file(path: &std::path::Path) -> Result<Option<File>, StoreError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::Lock(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Lock(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn roles_and_kinds_get_different_keys() {
        assert_ne!(key("control-plane", false), key("reconciler", false));
        assert_ne!(key("control-plane", false), key("control-plane", true));
        assert_eq!(key("reconciler", true), key("reconciler", true));
    }
}

//! Running a role's work only while this replica leads it.
//!
//! The control plane leads through the database (PostgreSQL advisory lock,
//! or a lock file beside SQLite); the reconciler through a Lease on a real
//! cluster, else the same way as the control plane. A replica that is not
//! the leader stands by and retries; one that loses its lock stops its work
//! after the pass in progress and stands by again.

use issueops_core::store::lock::Leadership;
use issueops_core::Store;
use issueops_reconciler::lease::LeaseLock;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub enum Gate {
    Database { store: Store, role: &'static str },
    Lease(Box<LeaseLock>),
}

enum Held {
    Database(Leadership),
    Lease,
}

impl Gate {
    fn role(&self) -> &'static str {
        match self {
            Gate::Database { role, .. } => role,
            Gate::Lease(_) => issueops_reconciler::WRITER_ROLE,
        }
    }

    /// How often a standby tries, and a leader renews.
    fn intervals(&self) -> (Duration, Duration) {
        match self {
            Gate::Database { .. } => (Duration::from_secs(1), Duration::from_secs(5)),
            // Renew three times per duration; look for an expired Lease four
            // times per duration, so a takeover comes within about 1.25 of it.
            Gate::Lease(l) => (l.duration() / 4, l.duration() / 3),
        }
    }

    async fn acquire(&self) -> Result<Option<Held>, String> {
        match self {
            Gate::Database { store, role } => store
                .try_leadership(role)
                .await
                .map(|l| l.map(Held::Database))
                .map_err(|e| e.to_string()),
            Gate::Lease(lease) => lease
                .acquire_or_renew()
                .await
                .map(|won| won.then_some(Held::Lease))
                .map_err(|e| e.to_string()),
        }
    }

    async fn renew(&self, held: &mut Held) -> bool {
        match (self, held) {
            (Gate::Database { .. }, Held::Database(l)) => l.still_held().await,
            (Gate::Lease(lease), Held::Lease) => match lease.acquire_or_renew().await {
                Ok(kept) => kept,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the reconciler's Lease");
                    false
                }
            },
            _ => false,
        }
    }

    async fn release(&self, held: Held) {
        if let (Gate::Lease(lease), Held::Lease) = (self, held) {
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "cannot release the reconciler's Lease; a standby takes over when it expires");
            }
        }
    }
}

/// Runs `work` whenever this replica leads `gate`'s role, until `stop`.
/// `work` gets a token cancelled when leadership is lost or `stop` comes,
/// and must return soon after (at the end of its pass).
pub async fn lead<F, Fut>(gate: Gate, stop: CancellationToken, work: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let role = gate.role();
    let (retry_every, renew_every) = gate.intervals();
    let mut said_standby = false;
    loop {
        let mut held = loop {
            match gate.acquire().await {
                Ok(Some(held)) => break held,
                Ok(None) if !said_standby => {
                    tracing::info!(role, "another replica leads; standing by");
                    said_standby = true;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(role, error = %e, "cannot try for leadership; will retry"),
            }
            issueops_core::metrics::leader(role, false);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retry_every) => {}
            }
        };
        said_standby = false;
        issueops_core::metrics::leader(role, true);
        tracing::info!(role, "leading");
        let lost = stop.child_token();
        let running = work(lost.clone());
        tokio::pin!(running);
        let mut renewals = tokio::time::interval(renew_every);
        renewals.tick().await;
        loop {
            tokio::select! {
                _ = &mut running => break,
                _ = renewals.tick(), if !lost.is_cancelled() => {
                    if !gate.renew(&mut held).await {
                        tracing::error!(role, "leadership lost; stopping after the pass in progress");
                        lost.cancel();
                    }
                }
            }
        }
        gate.release(held).await;
        issueops_core::metrics::leader(role, false);
        if stop.is_cancelled() {
            tracing::info!(role, "stopped");
            return;
        }
    }
}

/// A name for this replica in Leases: the pod (host) name and a random part.
pub fn holder_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "issueops".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

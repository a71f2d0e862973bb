//! Vocabulary shared by every issueops component (ids, events, config, naming)
//! and the store they all write to (inbox, runs, audit table, state repo).
//!
//! Data flows one way through the components that depend on this crate:
//! gateway → inbox → control plane → state repo → reconciler → cluster,
//! with the audit table beside every step. Nothing here calls up that chain.

pub mod audit;
pub mod config;
pub mod event;
pub mod metrics;
pub mod naming;
pub mod retry;
pub mod signing;
pub mod state_repo;
pub mod store;
pub mod transcript;

pub use audit::{AuditEvent, AuditRow};
pub use config::Config;
pub use store::Store;

/// Label every object issueops renders carries; the reconciler never deletes an
/// object without it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on issueops objects.
pub const MANAGED_BY_VALUE: &str = "issueops";
/// Label naming the install an object belongs to (see `Config::instance`).
pub const INSTANCE_LABEL: &str = "issueops.dev/instance";
/// The install name when the config gives none.
pub const DEFAULT_INSTANCE: &str = "default";

/// The label selector for the objects of install `instance`.
pub fn managed_selector(instance: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{INSTANCE_LABEL}={instance}")
}

/// Field manager used for every server-side apply.
pub const FIELD_MANAGER: &str = "issueops";

/// Annotation on every applied object: the git blob id of the state-repo file
/// it was applied from (`git cat-file -p <id>` shows it). The full resync
/// compares it with the file at HEAD instead of comparing the objects.
pub const DIGEST_ANNOTATION: &str = "issueops.dev/applied-digest";

/// Milliseconds since the Unix epoch, the one time format in the store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

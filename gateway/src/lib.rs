//! The thin edge: verifies, bounds, dedupes and stores GitHub webhook
//! deliveries, then answers. It never decides, renders, commits or talks to
//! Kubernetes; the control plane reads what it stored.

pub mod group_commit;
pub mod guard;
pub mod router;
pub mod signature;
pub mod source;

pub use router::{router, serve, AppState};
pub use signature::{sign, Secrets};

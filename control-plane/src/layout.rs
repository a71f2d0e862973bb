//! Moving a state repo made before buckets into them, once, in one commit.
//!
//! Runs on the control plane's first pass. The move changes no file's
//! content, so the reconciler sees each object leave one path and arrive at
//! another with the same blob, and applies nothing.

use crate::{trailers, ControlPlane, ControlPlaneError, SYSTEM_ACTOR};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::state_repo::{CommitRequest, LEGACY_LAYOUT};
use serde_json::json;

/// The `Action` trailer of the move.
pub const LAYOUT_MOVE: &str = "layout-move";

impl ControlPlane {
    /// Moves every `issues/<namespace>/` folder to `issues/<bucket>/<namespace>/`
    /// in one commit; returns how many moved (0: nothing to do).
    pub async fn migrate_layout(&self) -> Result<usize, ControlPlaneError> {
        let repo = self.repo.clone();
        let moves = tokio::task::spawn_blocking(move || repo.layout_moves())
            .await
            .map_err(|e| ControlPlaneError::Task(e.to_string()))??;
        let folders = moves.len();
        if folders == 0 {
            return Ok(0);
        }
        let request = CommitRequest {
            subject: format!(
                "move {folders} issue folders from {LEGACY_LAYOUT} into issues/<bucket>/<namespace>/"
            ),
            body: "The state repo layout with buckets: each issue's folder sits in the bucket \
                   named by the first two hex digits of its namespace's hash, so a commit no \
                   longer rewrites a tree with an entry per issue. No file's content changes; \
                   nothing is re-applied."
                .into(),
            trailers: trailers("-", "-", "-", SYSTEM_ACTOR, LAYOUT_MOVE),
            changes: moves,
        };
        let sha = self.commit(request).await?;
        let mut audit = AuditEvent::new(kind::COMMIT, LAYOUT_MOVE)
            .actor(SYSTEM_ACTOR)
            .detail(json!({ "folders": folders, "from": LEGACY_LAYOUT, "to": "issues/<bucket>/<namespace>/" }));
        if let Some(sha) = &sha {
            audit = audit.commit(sha.clone());
        }
        self.store.append_audit(&audit).await?;
        tracing::info!(folders, commit = ?sha, "state repo moved into the bucket layout");
        Ok(folders)
    }
}

//! The debug hold: while an issue carries `labels.debug` (`run:debug`), its
//! namespace, runs and agent home are not pruned after its runs end, so a
//! person can inspect them. The hold ends when the label is removed, when the
//! issue is closed, or `labels.debug_max_seconds` after it began, whichever
//! comes first; each start and end is audited once.

use crate::{ControlPlane, ControlPlaneError, SYSTEM_ACTOR};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::event::IssuesEvent;
use serde_json::json;

impl ControlPlane {
    /// The debug label was added: the issue's namespace and runs stay after
    /// the runs end, until the label goes or `labels.debug_max_seconds` pass.
    pub(crate) async fn hold(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
    ) -> Result<String, ControlPlaneError> {
        self.change_hold(delivery_id, event, true).await
    }

    /// The debug label was removed: the issue is pruned as usual again.
    pub(crate) async fn release(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
    ) -> Result<String, ControlPlaneError> {
        self.change_hold(delivery_id, event, false).await
    }

    /// Starts or ends the issue's hold; audits only a change.
    async fn change_hold(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        hold: bool,
    ) -> Result<String, ControlPlaneError> {
        let repo = &event.repository.full_name;
        let issue = event.issue.number as i64;
        let label = &self.config.labels.debug;
        let changed = if hold {
            self.store.hold_issue(repo, issue, label).await?
        } else {
            self.store.release_issue(repo, issue, label).await?
        };
        let issue_ref = format!("{repo}#{issue}");
        if !changed {
            return Ok(format!(
                "{issue_ref} {}",
                if hold {
                    "is already held"
                } else {
                    "was not held"
                }
            ));
        }
        let (outcome, detail) = if hold {
            let reason =
                "pruning of this issue's namespace and runs is skipped while the label is on";
            let detail = json!({
                "issue": issue_ref, "label": label, "reason": reason,
                "max_seconds": self.config.labels.debug_max_seconds,
            });
            ("debug-hold", detail)
        } else {
            (
                "debug-released",
                json!({ "issue": issue_ref, "reason": "label removed" }),
            )
        };
        let audit = AuditEvent::new(kind::DECISION, outcome)
            .delivery(delivery_id)
            .actor(event.sender.login.clone())
            .detail(detail);
        self.store.append_audit(&audit).await?;
        Ok(format!("{issue_ref} {outcome}"))
    }

    /// Issues held by the debug label at `now_ms`; holds past their bound are
    /// released (and audited) here.
    pub(crate) async fn held_issues(
        &self,
        now_ms: i64,
    ) -> Result<std::collections::HashSet<(String, i64)>, ControlPlaneError> {
        let max_ms = (self.config.labels.debug_max_seconds as i64).saturating_mul(1000);
        let mut held = std::collections::HashSet::new();
        for (repo, issue, since) in self.store.issue_holds().await? {
            if since.saturating_add(max_ms) > now_ms {
                held.insert((repo, issue));
                continue;
            }
            if self
                .store
                .release_issue(&repo, issue, &self.config.labels.debug)
                .await?
            {
                let audit = AuditEvent::new(kind::DECISION, "debug-released")
                    .actor(SYSTEM_ACTOR)
                    .detail(json!({
                        "issue": format!("{repo}#{issue}"),
                        "reason": format!("held longer than labels.debug_max_seconds ({} s)", self.config.labels.debug_max_seconds),
                    }));
                self.store.append_audit(&audit).await?;
            }
        }
        Ok(held)
    }
}

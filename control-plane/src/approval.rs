//! Who may trigger, and approvals for everyone else.
//!
//! A trigger runs at once when its sender is on the allowlist or has write,
//! maintain or admin permission on the repo (GitHub's collaborator permission
//! API). Anyone else's trigger becomes a pending approval request that an
//! approver (configured login or repo admin) approves or denies, by command or
//! by adding the approval label; requests expire. Every decision is audited
//! with who, when and why. Without GitHub configured, the allowlist alone
//! decides when it is set; with neither, nobody is checked (the embedded
//! default) and the start-up log says so.

use crate::decide::RunMode;
use crate::{ControlPlane, ControlPlaneError};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::event::IssuesEvent;
use issueops_core::store::approvals::Approval;
use issueops_core::{naming, now_ms};
use serde_json::json;

/// Whether a decider's right to decide is still to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Approver {
    Check,
    Established,
}

/// Whether a trigger may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Allowed { how: String },
    NeedsApproval { permission: String },
}

impl ControlPlane {
    /// Checks the sender of a trigger. A GitHub failure is an error: the
    /// delivery stays in the inbox and is retried, never lost or let through.
    pub(crate) async fn authorize(
        &self,
        event: &IssuesEvent,
    ) -> Result<Authorization, ControlPlaneError> {
        let sender = &event.sender.login;
        if self.config.github.allowlisted(sender) {
            return Ok(Authorization::Allowed {
                how: "allowlist".into(),
            });
        }
        let Some(github) = &self.github else {
            // Without GitHub the allowlist, when there is one, is all we
            // know about people: everyone else waits for an approver.
            if !self.config.github.trigger_allowlist.is_empty() {
                return Ok(Authorization::NeedsApproval {
                    permission: "no known".into(),
                });
            }
            return Ok(Authorization::Allowed {
                how: "GitHub not configured: no permission check".into(),
            });
        };
        let permission = github
            .permission(&event.repository.full_name, sender)
            .await?;
        if issueops_github::may_trigger(&permission) {
            Ok(Authorization::Allowed {
                how: format!("permission {permission}"),
            })
        } else {
            Ok(Authorization::NeedsApproval { permission })
        }
    }

    pub(crate) async fn request_approval(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        mode: RunMode,
        permission: &str,
    ) -> Result<String, ControlPlaneError> {
        let now = now_ms();
        let id = format!("a{}", &naming::run_id_for_delivery(delivery_id)[1..9]);
        let request = Approval {
            id: id.clone(),
            delivery_id: delivery_id.into(),
            repo: event.repository.full_name.clone(),
            issue_number: event.issue.number as i64,
            mode: mode.as_str().into(),
            requester: event.sender.login.clone(),
            state: "pending".into(),
            created_at: now,
            expires_at: now + (self.config.github.approval_ttl_seconds as i64).saturating_mul(1000),
            decided_by: None,
            reason: None,
            decided_at: None,
        };
        self.notify(delivery_id, &request.repo, request.issue_number, &format!(
                "{} may not start runs here ({permission} permission), so this trigger waits for an approver: \
                 add the `{}` label or run `issueops approve {id} --reason ...`. The request expires in {} hours.",
                event.sender.login,
                self.config.github.approval_label,
                self.config.github.approval_ttl_seconds / 3600
            ))
                .await?;
        if self.store.insert_approval(&request).await? {
            let audit = AuditEvent::new(kind::DECISION, "pending-approval")
                .delivery(delivery_id)
                .actor(event.sender.login.clone())
                .detail(json!({
                    "approval": id, "permission": permission, "mode": mode.as_str(),
                    "issue": format!("{}#{}", event.repository.full_name, event.issue.number),
                    "expires_at": request.expires_at,
                }));
            self.store.append_audit(&audit).await?;
        }
        Ok(format!(
            "waiting for approval {id} ({} has {permission} permission)",
            event.sender.login
        ))
    }

    /// Whether `login` may decide requests on `repo`: a configured approver, or
    /// an admin of the repo.
    async fn is_approver(&self, repo: &str, login: &str) -> Result<bool, ControlPlaneError> {
        if self.config.github.is_approver(login) {
            return Ok(true);
        }
        match &self.github {
            Some(github) => Ok(github.permission(repo, login).await? == "admin"),
            None => Ok(false),
        }
    }

    /// Approves (`approve = true`) or denies request `id` as `actor`, with
    /// `reason`. An approved request starts its run. Returns what happened.
    pub async fn decide_request(
        &self,
        id: &str,
        actor: &str,
        approve: bool,
        reason: &str,
    ) -> Result<String, ControlPlaneError> {
        self.decide(id, actor, Approver::Check, approve, reason)
            .await
    }

    /// As [`Self::decide_request`], for a caller that has already established
    /// that `actor` is an approver (the staff UI signs people in and gives
    /// them the approver role from its own configuration).
    pub async fn decide_request_as_approver(
        &self,
        id: &str,
        actor: &str,
        approve: bool,
        reason: &str,
    ) -> Result<String, ControlPlaneError> {
        self.decide(id, actor, Approver::Established, approve, reason)
            .await
    }

    async fn decide(
        &self,
        id: &str,
        actor: &str,
        approver: Approver,
        approve: bool,
        reason: &str,
    ) -> Result<String, ControlPlaneError> {
        let refuse = |m: String| Err(ControlPlaneError::Refused(m));
        if reason.trim().is_empty() {
            return refuse("a decision needs a reason".into());
        }
        let Some(request) = self.store.get_approval(id).await? else {
            return refuse(format!(
                "there is no approval request {id:?} (see `issueops approvals`)"
            ));
        };
        if approver == Approver::Check && !self.is_approver(&request.repo, actor).await? {
            return refuse(format!(
                "{actor} may not decide requests on {}: not in github.approvers and not a repo admin",
                request.repo
            ));
        }
        if request.state != "pending" {
            return refuse(format!(
                "request {id} is already {} and cannot be decided again",
                request.state
            ));
        }
        if request.expires_at <= now_ms() {
            self.expire_approvals(now_ms()).await?;
            return refuse(format!("request {id} expired; ask for a new trigger"));
        }
        let state = if approve { "approved" } else { "denied" };
        if !self.store.decide_approval(id, state, actor, reason).await? {
            return refuse(format!("request {id} was decided or expired meanwhile"));
        }
        let audit = AuditEvent::new(kind::APPROVAL, state)
            .delivery(request.delivery_id.clone())
            .actor(actor)
            .detail(json!({ "approval": id, "requester": request.requester, "reason": reason }));
        self.store.append_audit(&audit).await?;
        if !approve {
            self.notify(
                &request.delivery_id,
                &request.repo,
                request.issue_number,
                &format!("{actor} denied this trigger: {reason}."),
            )
            .await?;
            return Ok(format!("request {id} denied"));
        }
        let Some((_, payload)) = self.store.delivery(&request.delivery_id).await? else {
            return refuse(format!(
                "the delivery of request {id} is gone from the inbox"
            ));
        };
        let (Ok(event), Some(mode)) = (
            serde_json::from_str::<IssuesEvent>(&payload),
            RunMode::parse(&request.mode),
        ) else {
            return refuse(format!("the delivery of request {id} is not a trigger"));
        };
        let outcome = self
            .admit_and_start(&request.delivery_id, &event, mode)
            .await?;
        Ok(format!("request {id} approved: {outcome}"))
    }

    /// The approval label on an issue: approve its pending requests when the
    /// sender is an approver; otherwise record the refusal.
    pub(crate) async fn approve_by_label(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
    ) -> Result<String, ControlPlaneError> {
        let sender = &event.sender.login;
        let pending = self
            .store
            .pending_approvals_for_issue(&event.repository.full_name, event.issue.number as i64)
            .await?;
        if !self
            .is_approver(&event.repository.full_name, sender)
            .await?
        {
            let audit = AuditEvent::new(kind::APPROVAL, "refused")
                .delivery(delivery_id)
                .actor(sender.clone())
                .detail(json!({ "reason": format!("{sender} is not an approver"), "pending": pending.len() }));
            self.store.append_audit(&audit).await?;
            return Ok(format!(
                "approval label from {sender} ignored: not an approver"
            ));
        }
        let mut outcomes = Vec::new();
        for request in pending {
            let reason = format!("label {} added", self.config.github.approval_label);
            match self
                .decide_request_as_approver(&request.id, sender, true, &reason)
                .await
            {
                Ok(o) => outcomes.push(o),
                Err(ControlPlaneError::Refused(m)) => outcomes.push(m),
                Err(e) => return Err(e),
            }
        }
        Ok(if outcomes.is_empty() {
            "approval label: nothing pending".into()
        } else {
            outcomes.join("; ")
        })
    }

    /// Expires pending requests past their time, auditing each.
    pub async fn expire_approvals(&self, now: i64) -> Result<usize, ControlPlaneError> {
        let expired = self.store.expire_approvals(now).await?;
        for request in &expired {
            self.notify(&request.delivery_id, &request.repo, request.issue_number, "no approver decided on this trigger in time; it expired. Add the label again to ask anew.")
                .await?;
            let audit = AuditEvent::new(kind::APPROVAL, "expired")
                .delivery(request.delivery_id.clone())
                .actor(crate::SYSTEM_ACTOR)
                .detail(json!({ "approval": request.id, "requester": request.requester }));
            self.store.append_audit(&audit).await?;
        }
        Ok(expired.len())
    }
}

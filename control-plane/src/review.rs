//! Review before apply (`review` in the config): a run's intent, or a
//! rollback, is committed to the branch `proposals/<id>` instead of the
//! applied branch; a reviewer approves it (issueops merges it into the
//! applied branch, a commit it signs, and the reconciler applies it), denies
//! it, or lets it expire. Nothing of a proposal reaches the cluster before
//! it is approved: the reconciler reads only the applied branch.
//!
//! States: `pending`, then `approved`, `denied`, `expired`, or `withdrawn`
//! (its run was cancelled or its issue closed first).
//!
//! Invariants: a proposal is decided once (`decide_proposal` moves it out of
//! `pending` only); approving twice merges once (a merge that changes
//! nothing is skipped, and an approval whose merge was interrupted resumes).

use crate::commit_path::RunPlan;
use crate::render::RenderedFile;
use crate::{trailers, ControlPlane, ControlPlaneError};
use issueops_core::audit::AuditEvent;
use issueops_core::state_repo::{proposal_branch, CommitRequest};
use issueops_core::store::proposals::Proposal;
use issueops_core::store::runs::RunState;
use serde_json::{json, Value};

/// The audit kind of every step of a proposal.
pub use issueops_core::audit::kind::PROPOSAL;

/// What a reviewer must judge, above the diff: per object, what it lets the
/// run do (image, command, resources, quota, every RBAC rule, egress).
pub fn review_summary(files: &[RenderedFile]) -> String {
    let mut out = Vec::new();
    for f in files {
        let Ok(doc) = serde_yaml::from_str::<Value>(&f.content) else {
            out.push(format!("- `{}` (not YAML: read the diff)", f.path));
            continue;
        };
        let kind = doc["kind"].as_str().unwrap_or("");
        let name = doc["metadata"]["name"].as_str().unwrap_or("");
        let compact = |v: &Value| serde_json::to_string(v).unwrap_or_default();
        match kind {
            "Namespace" => out.push(format!("- **Namespace** `{name}`")),
            "Job" => {
                let spec = &doc["spec"]["template"]["spec"];
                out.push(format!(
                    "- **Job** `{name}`: deadline {} s, service account `{}`",
                    doc["spec"]["activeDeadlineSeconds"],
                    spec["serviceAccountName"].as_str().unwrap_or("default")
                ));
                for group in ["initContainers", "containers"] {
                    for c in spec[group].as_array().into_iter().flatten() {
                        out.push(format!(
                            "  - container `{}`: image `{}`, command `{}`, args `{}`, resources `{}`",
                            c["name"].as_str().unwrap_or(""),
                            c["image"].as_str().unwrap_or(""),
                            compact(&c["command"]),
                            compact(&c["args"]),
                            compact(&c["resources"]),
                        ));
                    }
                }
            }
            "ResourceQuota" => out.push(format!(
                "- **ResourceQuota** `{name}`: `{}`",
                compact(&doc["spec"]["hard"])
            )),
            "LimitRange" => out.push(format!(
                "- **LimitRange** `{name}`: `{}`",
                compact(&doc["spec"]["limits"])
            )),
            "Role" | "ClusterRole" => {
                out.push(format!("- **{kind}** `{name}`:"));
                for rule in doc["rules"].as_array().into_iter().flatten() {
                    out.push(format!(
                        "  - apiGroups `{}` resources `{}` verbs `{}`",
                        compact(&rule["apiGroups"]),
                        compact(&rule["resources"]),
                        compact(&rule["verbs"])
                    ));
                }
            }
            "NetworkPolicy" => out.push(format!(
                "- **NetworkPolicy** `{name}`: policy types `{}`, egress `{}`",
                compact(&doc["spec"]["policyTypes"]),
                compact(&doc["spec"]["egress"])
            )),
            other => out.push(format!("- **{other}** `{name}`")),
        }
    }
    out.join("\n")
}

impl ControlPlane {
    /// Commits a run's intent to its proposal branch and records the
    /// proposal; the run waits, `proposed`, for a reviewer.
    pub(crate) async fn propose_run(
        &self,
        plan: &RunPlan,
        request: CommitRequest,
    ) -> Result<String, ControlPlaneError> {
        let run = &plan.run;
        let repo = self.repo.clone();
        let id = run.run_id.clone();
        let sha = tokio::task::spawn_blocking(move || repo.propose(&id, &request))
            .await
            .map_err(|e| ControlPlaneError::Task(e.to_string()))??;
        let summary = format!(
            "Run `{}` ({} run) for {}#{} asked by @{} (delivery `{}`).\n\n{}",
            run.run_id,
            run.mode,
            run.repo,
            run.issue_number,
            run.actor,
            run.delivery_id,
            review_summary(&plan.files)
        );
        let proposal = Proposal {
            run_id: Some(run.run_id.clone()),
            delivery_id: Some(run.delivery_id.clone()),
            repo: Some(run.repo.clone()),
            issue_number: Some(run.issue_number),
            ..self.pending_proposal(&run.run_id, "run", &sha, &run.actor, summary)
        };
        if self.store.insert_proposal(&proposal).await? {
            let audit = AuditEvent::new(PROPOSAL, "proposed")
                .delivery(run.delivery_id.clone())
                .run(run.run_id.clone())
                .actor(run.actor.clone())
                .commit(sha.clone())
                .detail(json!({
                    "branch": proposal.branch,
                    "files": plan.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
                    "state_repo": self.repo.location(),
                }));
            self.store.append_audit(&audit).await?;
        }
        self.store
            .advance_run(&run.run_id, RunState::Proposed, None, None)
            .await?;
        tracing::info!(commit = %sha, run_id = %run.run_id, "run proposed for review");
        Ok(format!(
            "run {} proposed on {} as {sha}",
            run.run_id, proposal.branch
        ))
    }

    /// Proposes a rollback to `target` (its tree restored on top of the
    /// branch) for review; returns the proposal's id.
    pub(crate) async fn propose_rollback(
        &self,
        target: &issueops_core::state_repo::CommitInfo,
        head: &str,
        request: CommitRequest,
        actor: &str,
    ) -> Result<String, ControlPlaneError> {
        let id = format!(
            "rollback-{}-{}",
            &target.sha[..12.min(target.sha.len())],
            &head[..12.min(head.len())]
        );
        let repo = self.repo.clone();
        let name = id.clone();
        let sha = tokio::task::spawn_blocking(move || repo.propose(&name, &request))
            .await
            .map_err(|e| ControlPlaneError::Task(e.to_string()))??;
        let summary = format!(
            "Rollback asked by {actor}: restores the tree of `{}` ({}) over `{}`. Read the diff: everything it removes is deleted from the cluster once approved.",
            target.sha, target.summary, head
        );
        let proposal = self.pending_proposal(&id, "rollback", &sha, actor, summary);
        if self.store.insert_proposal(&proposal).await? {
            let audit = AuditEvent::new(PROPOSAL, "proposed")
                .actor(actor)
                .commit(sha)
                .detail(json!({ "branch": proposal.branch, "rollback_to": target.sha }));
            self.store.append_audit(&audit).await?;
        }
        Ok(id)
    }

    /// A pending proposal of `kind` on `proposals/<id>` at `sha`, expiring
    /// after `review.proposal_ttl_seconds`.
    fn pending_proposal(
        &self,
        id: &str,
        kind: &str,
        sha: &str,
        by: &str,
        summary: String,
    ) -> Proposal {
        let now = issueops_core::now_ms();
        Proposal {
            id: id.into(),
            kind: kind.into(),
            run_id: None,
            delivery_id: None,
            repo: None,
            issue_number: None,
            branch: proposal_branch(id),
            commit_sha: sha.into(),
            proposed_by: by.into(),
            summary,
            state: "pending".into(),
            created_at: now,
            expires_at: now.saturating_add(
                (self.config.review.proposal_ttl_seconds as i64).saturating_mul(1000),
            ),
            decided_at: None,
            decided_by: None,
            reason: None,
            merge_sha: None,
        }
    }

    /// Approves a pending proposal: merges it into the applied branch (a
    /// commit issueops signs) and lets its run go on. Returns the merge.
    pub async fn approve_proposal(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<String, ControlPlaneError> {
        let p = self.pending(id).await?;
        // A run that ended meanwhile (its issue closed, say) is not revived.
        if let Some(run_id) = &p.run_id {
            if let Some(run) = self.store.get_run(run_id).await? {
                if run.run_state().is_some_and(RunState::is_finished) {
                    return Err(ControlPlaneError::Refused(format!(
                        "run {run_id} has ended ({}); there is nothing to approve",
                        run.state
                    )));
                }
            }
        }
        // Resuming an approval whose merge was interrupted is fine.
        if p.state == "pending"
            && !self
                .store
                .decide_proposal(id, "approved", actor, Some(reason))
                .await?
        {
            return Err(ControlPlaneError::Refused(format!(
                "proposal {id} was decided meanwhile"
            )));
        }
        let issue = match (&p.repo, p.issue_number) {
            (Some(repo), Some(n)) => format!("{repo}#{n}"),
            _ => "-".into(),
        };
        let mut t = trailers(
            p.delivery_id.as_deref().unwrap_or("-"),
            p.run_id.as_deref().unwrap_or("-"),
            &issue,
            actor,
            "approve-proposal",
        );
        t.push(("Proposal".into(), p.branch.clone()));
        let request = CommitRequest {
            subject: format!("approve {}: merge {}", p.id, p.branch),
            body: format!("Approved by {actor}: {}", reason.replace(['\r', '\n'], " ")),
            trailers: t,
            changes: Vec::new(),
        };
        let repo = self.repo.clone();
        let name = p.id.clone();
        let merged = tokio::task::spawn_blocking(move || repo.merge_proposal(&name, &request))
            .await
            .map_err(|e| ControlPlaneError::Task(e.to_string()))??;
        let sha = match merged {
            Some(sha) => sha,
            // Merged before a crash: the branch has its changes already.
            None => match &p.merge_sha {
                Some(sha) => sha.clone(),
                None => self.repo_head().await?,
            },
        };
        self.store.set_proposal_merge(id, &sha).await?;
        let mut audit = AuditEvent::new(PROPOSAL, "approved")
            .actor(actor)
            .commit(sha.clone())
            .detail(json!({ "proposal": p.id, "branch": p.branch, "proposal_commit": p.commit_sha, "reason": reason }));
        if let Some(d) = &p.delivery_id {
            audit = audit.delivery(d.clone());
        }
        if let Some(r) = &p.run_id {
            audit = audit.run(r.clone());
        }
        self.store.append_audit(&audit).await?;
        if let Some(run_id) = &p.run_id {
            self.store
                .advance_run(run_id, RunState::Committed, Some(&sha), None)
                .await?;
        }
        tracing::info!(proposal = %p.id, merge = %sha, %actor, "proposal approved and merged");
        Ok(sha)
    }

    /// Denies a pending proposal: nothing of it is applied, its run is
    /// cancelled with the reason (reported on the issue).
    pub async fn deny_proposal(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), ControlPlaneError> {
        let p = self.pending(id).await?;
        if p.state != "pending"
            || !self
                .store
                .decide_proposal(id, "denied", actor, Some(reason))
                .await?
        {
            return Err(ControlPlaneError::Refused(format!(
                "proposal {id} is already {}",
                p.state
            )));
        }
        self.end_proposal(&p, "denied", actor, &format!("denied by {actor}: {reason}"))
            .await
    }

    /// Expires the proposals nobody decided within `review.proposal_ttl_seconds`.
    pub async fn expire_proposals(&self, now: i64) -> Result<usize, ControlPlaneError> {
        let mut n = 0;
        for p in self.store.list_proposals(true).await? {
            if p.expires_at > now
                || !self
                    .store
                    .decide_proposal(&p.id, "expired", crate::SYSTEM_ACTOR, None)
                    .await?
            {
                continue;
            }
            let why = format!(
                "the proposal expired: nobody approved or denied it within {} s (review.proposal_ttl_seconds)",
                self.config.review.proposal_ttl_seconds
            );
            self.end_proposal(&p, "expired", crate::SYSTEM_ACTOR, &why)
                .await?;
            n += 1;
        }
        Ok(n)
    }

    /// Withdraws the pending proposal of `run_id`, if any (its run was
    /// cancelled or its issue closed): it can no longer be approved.
    pub(crate) async fn withdraw_proposal(
        &self,
        run_id: &str,
        actor: &str,
        why: &str,
    ) -> Result<(), ControlPlaneError> {
        let Some(p) = self.store.get_proposal(run_id).await? else {
            return Ok(());
        };
        if p.state == "pending"
            && self
                .store
                .decide_proposal(run_id, "withdrawn", actor, Some(why))
                .await?
        {
            self.end_proposal(&p, "withdrawn", actor, why).await?;
        }
        Ok(())
    }

    async fn end_proposal(
        &self,
        p: &Proposal,
        outcome: &str,
        actor: &str,
        why: &str,
    ) -> Result<(), ControlPlaneError> {
        if let Some(run_id) = &p.run_id {
            self.store
                .advance_run(run_id, RunState::Cancelled, None, Some(why))
                .await?;
        }
        let mut audit = AuditEvent::new(PROPOSAL, outcome)
            .actor(actor)
            .detail(json!({ "proposal": p.id, "branch": p.branch, "reason": why }));
        if let Some(d) = &p.delivery_id {
            audit = audit.delivery(d.clone());
        }
        if let Some(r) = &p.run_id {
            audit = audit.run(r.clone());
        }
        self.store.append_audit(&audit).await?;
        tracing::info!(proposal = %p.id, outcome, %actor, "proposal ended");
        Ok(())
    }

    /// The proposal `id`, refused unless it is pending (or approved with
    /// its merge not yet recorded).
    async fn pending(&self, id: &str) -> Result<Proposal, ControlPlaneError> {
        let Some(p) = self.store.get_proposal(id).await? else {
            return Err(ControlPlaneError::Refused(format!(
                "there is no proposal {id}: `issueops proposals` lists them"
            )));
        };
        match p.state.as_str() {
            "pending" if p.expires_at <= issueops_core::now_ms() => {
                Err(ControlPlaneError::Refused(format!(
                    "proposal {id} has expired; trigger the run again"
                )))
            }
            "pending" => Ok(p),
            "approved" if p.merge_sha.is_none() => Ok(p),
            state => Err(ControlPlaneError::Refused(format!(
                "proposal {id} is already {state}"
            ))),
        }
    }

    async fn repo_head(&self) -> Result<String, ControlPlaneError> {
        let repo = self.repo.clone();
        Ok(tokio::task::spawn_blocking(move || repo.head())
            .await
            .map_err(|e| ControlPlaneError::Task(e.to_string()))??
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_what_the_run_may_do() {
        let files = vec![
            RenderedFile {
                path: "issues/x/role.yaml".into(),
                content: "kind: Role\nmetadata: {name: agent}\nrules:\n- apiGroups: ['']\n  resources: [pods]\n  verbs: [get, list]\n".into(),
            },
            RenderedFile {
                path: "issues/x/runs/r/job.yaml".into(),
                content: "kind: Job\nmetadata: {name: run-r}\nspec:\n  activeDeadlineSeconds: 3600\n  template:\n    spec:\n      containers:\n      - name: agent\n        image: ghcr.io/x/agent:1\n        command: [issueops-runner]\n".into(),
            },
        ];
        let s = review_summary(&files);
        assert!(
            s.contains(r#"resources `["pods"]` verbs `["get","list"]`"#),
            "{s}"
        );
        assert!(
            s.contains("image `ghcr.io/x/agent:1`, command `[\"issueops-runner\"]`"),
            "{s}"
        );
        assert!(s.contains("deadline 3600 s"), "{s}");
    }
}

//! The commit path: plan a run (render its files), then commit its intent to
//! the applied branch, find the commit a replay made before, or, with review
//! on for the run, propose it on a branch of its own (`crate::review`).
//!
//! Invariant: one intent per commit, and a replay (the same delivery again
//! after a crash) commits nothing new: the run id derives from the delivery
//! and a commit that changes nothing is skipped.

use crate::decide::{self, RunMode};
use crate::render::{IssueContext, RenderError, RenderedFile, RunContext, Templates};
use crate::{ControlPlane, ControlPlaneError};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::event::IssuesEvent;
use issueops_core::naming;
use issueops_core::state_repo::{Change, CommitRequest, StateRepoError};
use issueops_core::store::runs::{Run, RunState};
use issueops_core::Config;
use serde_json::json;

/// The intent for a new run: its row and the files to commit.
pub struct RunPlan {
    pub run: Run,
    pub title: String,
    pub files: Vec<RenderedFile>,
}

/// Builds the run and renders its files for a trigger; pure, no I/O.
pub fn plan_run(
    config: &Config,
    templates: &Templates,
    delivery_id: &str,
    event: &IssuesEvent,
    mode: RunMode,
    branch: &str,
    pull_request: Option<i64>,
) -> Result<RunPlan, RenderError> {
    let repo = event.repository.full_name.clone();
    let number = event.issue.number;
    let namespace = naming::namespace_for_issue(&repo, number);
    // Conflicting labels were refused before a run was planned; here the
    // defaults stand in for anything unreadable.
    let choice = decide::agent_choice(config, &event.issue.labels).unwrap_or(decide::AgentChoice {
        model: config.agent.default_model.clone(),
        reasoning: config.agent.default_reasoning.clone(),
    });
    let run_ctx = RunContext {
        id: naming::run_id_for_delivery(delivery_id),
        mode: mode.as_str().into(),
        branch: branch.into(),
        pull_request: pull_request.map(|n| n.to_string()),
        model: choice.model,
        reasoning: choice.reasoning,
    };
    let issue_ctx = IssueContext {
        repo: repo.clone(),
        issue_number: number,
        title: event.issue.title.clone(),
        namespace: namespace.clone(),
    };
    let files = templates.render(config, &issue_ctx, Some(&run_ctx))?;
    Ok(RunPlan {
        run: Run {
            run_id: run_ctx.id,
            delivery_id: delivery_id.into(),
            repo,
            issue_number: number as i64,
            namespace,
            mode: run_ctx.mode,
            branch: run_ctx.branch,
            actor: event.sender.login.clone(),
            state: RunState::Accepted.as_str().into(),
            commit_sha: None,
            finished_at: None,
            reason: None,
            pull_request,
        },
        title: event.issue.title.clone(),
        files,
    })
}

impl ControlPlane {
    /// Renders and commits one run; idempotent for a replay.
    pub(crate) async fn commit_run(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        mode: RunMode,
        branch: &str,
        pull_request: Option<i64>,
    ) -> Result<String, ControlPlaneError> {
        let plan = match plan_run(
            &self.config,
            &self.templates,
            delivery_id,
            event,
            mode,
            branch,
            pull_request,
        ) {
            Ok(plan) => plan,
            Err(e) => {
                // A template or config fault: record it and move on rather than
                // block every later delivery behind this one.
                tracing::error!(error = %e, "rendering failed");
                let audit = self
                    .decision_audit(delivery_id, event, "error")
                    .detail(json!({ "reason": e.to_string() }));
                self.store.append_audit(&audit).await?;
                return Ok(format!("error: {e}"));
            }
        };
        let run = &plan.run;
        tracing::Span::current().record("run_id", run.run_id.as_str());
        let issue_ref = format!("{}#{}", run.repo, run.issue_number);
        let inserted = self.store.insert_run(run).await?;
        let was_queued = self
            .store
            .advance_run(&run.run_id, RunState::Accepted, None, None)
            .await?;
        if inserted || was_queued {
            let audit = AuditEvent::new(kind::DECISION, "accepted")
                .delivery(run.delivery_id.clone())
                .run(run.run_id.clone())
                .actor(run.actor.clone())
                .detail(json!({
                    "issue": issue_ref, "mode": run.mode, "namespace": run.namespace, "branch": run.branch,
                }));
            self.store.append_audit(&audit).await?;
        }
        let label = match mode {
            RunMode::Dev => &self.config.trigger_label,
            RunMode::Revise => &self.config.revise_label,
        };
        let request = CommitRequest {
            subject: format!(
                "{label}: start {} run {} for {issue_ref}",
                run.mode, run.run_id
            ),
            body: format!(
                "Issue title: {}\nNamespace: {}\nBranch: {}",
                plan.title.replace(['\r', '\n'], " "),
                run.namespace,
                run.branch
            ),
            trailers: trailers(
                &run.delivery_id,
                &run.run_id,
                &issue_ref,
                &run.actor,
                "start-run",
            ),
            changes: plan
                .files
                .iter()
                .map(|f| Change::Write {
                    path: f.path.clone(),
                    content: f.content.clone().into_bytes(),
                })
                .collect(),
        };
        self.store.mark_started(&run.run_id).await?;
        let labels: Vec<String> = event.issue.labels.iter().map(|l| l.name.clone()).collect();
        if self.config.review.applies(&run.repo, &labels) {
            return self.propose_run(&plan, request).await;
        }
        let (sha, new_commit) = self.commit_or_find(request, &run.run_id).await?;
        // The commit row is written before the run is marked committed; a replay
        // after a crash in between writes it once, never twice.
        if new_commit || !self.store.has_audit(&run.run_id, kind::COMMIT).await? {
            tracing::info!(commit = %sha, namespace = %run.namespace, "run committed");
            let audit = AuditEvent::new(kind::COMMIT, "committed")
                .delivery(run.delivery_id.clone())
                .run(run.run_id.clone())
                .commit(sha.clone())
                .actor(run.actor.clone())
                .detail(json!({
                    "files": plan.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
                    "state_repo": self.repo.location(),
                }));
            self.store.append_audit(&audit).await?;
        }
        self.store
            .set_run_state(
                &run.run_id,
                RunState::Committed,
                Some(&sha).filter(|s| !s.is_empty()).map(|s| s.as_str()),
            )
            .await?;
        Ok(format!("run {} committed {sha}", run.run_id))
    }

    /// Commits `request`; when it changes nothing (a replay), finds the commit
    /// that made it by its `Run-Id` trailer. Returns the sha and whether it is new.
    pub(crate) async fn commit_or_find(
        &self,
        request: CommitRequest,
        run_id: &str,
    ) -> Result<(String, bool), ControlPlaneError> {
        let repo = self.repo.clone();
        let run_id = run_id.to_string();
        tokio::task::spawn_blocking(move || -> Result<_, StateRepoError> {
            match repo.commit(&request)? {
                Some(sha) => Ok((sha, true)),
                None => Ok((
                    repo.find_commit_with_trailer("Run-Id", &run_id)?
                        .unwrap_or_default(),
                    false,
                )),
            }
        })
        .await
        .map_err(|e| ControlPlaneError::Task(e.to_string()))?
        .map_err(Into::into)
    }

    /// Commits an intent that may change nothing; returns the new sha if any.
    pub(crate) async fn commit(
        &self,
        request: CommitRequest,
    ) -> Result<Option<String>, ControlPlaneError> {
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || repo.commit(&request))
            .await
            .map_err(|e| ControlPlaneError::Task(e.to_string()))?
            .map_err(Into::into)
    }
}

/// The trailers every issueops commit carries.
pub(crate) fn trailers(
    delivery: &str,
    run: &str,
    issue: &str,
    actor: &str,
    action: &str,
) -> Vec<(String, String)> {
    vec![
        ("Delivery-Id".into(), delivery.into()),
        ("Run-Id".into(), run.into()),
        ("Issue".into(), issue.into()),
        ("Actor".into(), actor.into()),
        ("Action".into(), action.into()),
    ]
}

//! The rest of a run's life as state-repo commits: closing an issue,
//! cancelling a run, pruning finished runs and idle issues, rolling back.
//!
//! Invariants: every change is a new commit (history is never rewritten), with
//! trailers and an audit row; pruning removes only folders of runs that have
//! finished; a rollback restores a tree, and the reconciler still never
//! re-creates a finished run's Job.

use crate::{issue_dir, run_dir, trailers, ControlPlane, ControlPlaneError, SYSTEM_ACTOR};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::event::IssuesEvent;
use issueops_core::naming;
use issueops_core::state_repo::{Change, CommitRequest, FileDelta};
use issueops_core::store::runs::{Run, RunState};
use serde_json::json;

/// What a prune pass decided: finished runs (with whether their issue is
/// idle too, so its folder goes with them), and idle issues' folders.
#[derive(Debug, Default)]
pub struct PrunePlan {
    pub runs: Vec<(Run, bool)>,
    pub issues: Vec<(String, String, i64)>,
}

impl ControlPlane {
    /// `issues.closed`: cancel the active run, prune the issue's namespace.
    pub(crate) async fn close_issue(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
    ) -> Result<String, ControlPlaneError> {
        let repo = &event.repository.full_name;
        let issue_ref = format!("{repo}#{}", event.issue.number);
        let namespace = naming::namespace_for_issue(repo, event.issue.number);
        let runs = self
            .store
            .runs_for_issue(repo, event.issue.number as i64)
            .await?;
        let mut cancelled = Vec::new();
        for run in runs
            .iter()
            .filter(|r| r.run_state().is_some_and(|s| !s.is_finished()))
        {
            self.withdraw_proposal(&run.run_id, &event.sender.login, "the issue was closed")
                .await?;
            if self
                .store
                .advance_run(&run.run_id, RunState::Cancelled, None, Some("issue closed"))
                .await?
            {
                cancelled.push(run.run_id.clone());
            }
        }
        let request = CommitRequest {
            subject: format!("close {issue_ref}: prune namespace {namespace}"),
            body: format!(
                "Cancelled runs: {}",
                if cancelled.is_empty() {
                    "none".into()
                } else {
                    cancelled.join(", ")
                }
            ),
            trailers: trailers(
                delivery_id,
                &if cancelled.is_empty() {
                    "-".to_string()
                } else {
                    cancelled.join(",")
                },
                &issue_ref,
                &event.sender.login,
                "close-issue",
            ),
            changes: vec![Change::Remove {
                path: issue_dir(&namespace),
            }],
        };
        let sha = self.commit(request).await?;
        for run in &runs {
            self.store
                .advance_run(&run.run_id, RunState::Pruned, None, None)
                .await?;
        }
        // Closing is explicit: a debug hold does not outlive the issue.
        self.store
            .release_issue(repo, event.issue.number as i64, &self.config.labels.debug)
            .await?;
        let mut audit = AuditEvent::new(kind::PRUNE, "issue-closed")
            .delivery(delivery_id)
            .actor(event.sender.login.clone())
            .object(format!("Namespace/{namespace}"))
            .detail(json!({ "issue": issue_ref, "cancelled": cancelled }));
        if let Some(sha) = &sha {
            audit = audit.commit(sha.clone());
        }
        self.store.append_audit(&audit).await?;
        Ok(format!(
            "issue closed; namespace pruned in {}",
            sha.as_deref().unwrap_or("(already absent)")
        ))
    }

    /// The trigger label was removed and the config says that cancels.
    pub(crate) async fn cancel_active(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
    ) -> Result<String, ControlPlaneError> {
        let repo = &event.repository.full_name;
        let runs = self
            .store
            .runs_for_issue(repo, event.issue.number as i64)
            .await?;
        let Some(active) = runs
            .iter()
            .find(|r| r.run_state().is_some_and(|s| s.is_active()))
        else {
            return Ok("trigger label removed; no active run".into());
        };
        match self
            .cancel(
                active,
                delivery_id,
                &event.sender.login,
                "trigger label removed",
            )
            .await
        {
            Ok(()) => Ok(format!("run {} cancelled", active.run_id)),
            // It ended meanwhile: nothing to cancel, and the delivery is done.
            Err(ControlPlaneError::Refused(why)) => Ok(why),
            Err(e) => Err(e),
        }
    }

    /// A person cancels run `run_id` (the staff UI): the same commit and audit
    /// as a removed trigger label, with who and why. Refused for a run that
    /// has already ended.
    pub async fn cancel_run(
        &self,
        run_id: &str,
        actor: &str,
        why: &str,
    ) -> Result<String, ControlPlaneError> {
        let Some(run) = self.store.get_run(run_id).await? else {
            return Err(ControlPlaneError::Refused(format!(
                "there is no run {run_id:?}"
            )));
        };
        if run.run_state().is_none_or(|s| s.is_finished()) {
            return Err(ControlPlaneError::Refused(format!(
                "run {run_id} is already {} and cannot be cancelled",
                run.state
            )));
        }
        self.cancel(&run, "-", actor, &format!("cancelled by {actor}: {why}"))
            .await?;
        Ok(format!("run {run_id} cancelled"))
    }

    /// Cancels `run`, commits the removal of its folder and audits it.
    async fn cancel(
        &self,
        run: &Run,
        delivery_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), ControlPlaneError> {
        let issue_ref = format!("{}#{}", run.repo, run.issue_number);
        self.withdraw_proposal(&run.run_id, actor, reason).await?;
        if !self
            .store
            .advance_run(&run.run_id, RunState::Cancelled, None, Some(reason))
            .await?
        {
            return Err(ControlPlaneError::Refused(format!(
                "run {} moved on meanwhile; not cancelled",
                run.run_id
            )));
        }
        let request = CommitRequest {
            subject: format!("cancel run {} of {issue_ref}: {reason}", run.run_id),
            body: String::new(),
            trailers: trailers(delivery_id, &run.run_id, &issue_ref, actor, "cancel-run"),
            changes: vec![Change::Remove {
                path: run_dir(&run.namespace, &run.run_id),
            }],
        };
        let sha = self.commit(request).await?;
        let mut audit = AuditEvent::new(kind::PRUNE, "run-cancelled")
            .run(run.run_id.clone())
            .actor(actor)
            .detail(json!({ "reason": reason }));
        if delivery_id != "-" {
            audit = audit.delivery(delivery_id);
        }
        if let Some(sha) = &sha {
            audit = audit.commit(sha.clone());
        }
        self.store.append_audit(&audit).await?;
        Ok(())
    }

    /// Puts dead letter `delivery_id` back in line (`issueops deliveries
    /// retry`, the API): it is processed again by the next pass.
    pub async fn retry_delivery(
        &self,
        delivery_id: &str,
        actor: &str,
        why: Option<&str>,
    ) -> Result<String, ControlPlaneError> {
        if !self.store.retry_dead_delivery(delivery_id).await? {
            return Err(ControlPlaneError::Refused(format!(
                "no dead letter with delivery id {delivery_id:?}: `issueops deliveries` lists them"
            )));
        }
        self.store
            .append_audit(
                &AuditEvent::new(kind::DELIVERY_RETRY, "requeued")
                    .delivery(delivery_id)
                    .actor(actor)
                    .detail(json!({ "reason": why })),
            )
            .await?;
        Ok(format!("delivery {delivery_id} is back in line"))
    }

    /// Prunes runs that finished more than the retention ago, and the folder of
    /// any issue idle for longer than the idle time, except issues held by the
    /// debug label. Returns the commits made.
    pub async fn prune_due(&self, now_ms: i64) -> Result<Vec<String>, ControlPlaneError> {
        let days = self.config.lifecycle.transcript_retention_days as i64;
        let dropped = self
            .store
            .drop_transcripts_before(now_ms - days.saturating_mul(86_400_000))
            .await?;
        if dropped > 0 {
            tracing::info!(dropped, "agent transcripts past their retention dropped");
        }
        let plan = self.plan_prunes(now_ms).await?;
        self.execute_prunes(plan).await
    }

    /// Decides what is due for pruning at `now_ms`, changing nothing.
    pub async fn plan_prunes(&self, now_ms: i64) -> Result<PrunePlan, ControlPlaneError> {
        let lifecycle = &self.config.lifecycle;
        let retention_ms = (lifecycle.run_retention_seconds as i64).saturating_mul(1000);
        let idle_ms = (lifecycle.issue_idle_seconds as i64).saturating_mul(1000);
        let held = self.held_issues(now_ms).await?;
        let is_held = |repo: &str, issue: i64| held.contains(&(repo.to_ascii_lowercase(), issue));
        let mut plan = PrunePlan::default();
        for run in self.store.runs_due_for_prune(now_ms - retention_ms).await? {
            if is_held(&run.repo, run.issue_number) {
                continue;
            }
            let runs = self
                .store
                .runs_for_issue(&run.repo, run.issue_number)
                .await?;
            let idle = issue_is_idle(&runs, &run.run_id, now_ms - idle_ms);
            plan.runs.push((run, idle));
        }
        // Issues whose runs were pruned before the issue went idle.
        for (namespace, repo, issue) in self.store.idle_issue_namespaces(now_ms - idle_ms).await? {
            if !is_held(&repo, issue) {
                plan.issues.push((namespace, repo, issue));
            }
        }
        Ok(plan)
    }

    /// Carries out a prune plan. An issue folder goes only if its issue is
    /// still idle now: a run started after the plan was made (an approval, a
    /// label) keeps it, and its objects.
    pub async fn execute_prunes(&self, plan: PrunePlan) -> Result<Vec<String>, ControlPlaneError> {
        let mut commits = Vec::new();
        for (run, idle) in &plan.runs {
            if let Some(sha) = self.prune_run(run, *idle).await? {
                commits.push(sha);
            }
        }
        for (namespace, repo, issue) in plan.issues {
            let dir = issue_dir(&namespace);
            let state_repo = self.repo.clone();
            let exists = tokio::task::spawn_blocking(move || state_repo.path_exists(&dir))
                .await
                .map_err(|e| ControlPlaneError::Task(e.to_string()))??;
            if !exists || !self.still_idle(&repo, issue).await? {
                continue;
            }
            let issue_ref = format!("{repo}#{issue}");
            let request = CommitRequest {
                subject: format!("prune-issue {issue_ref}: idle, no runs left"),
                body: String::new(),
                trailers: trailers("-", "-", &issue_ref, SYSTEM_ACTOR, "prune-issue"),
                changes: vec![Change::Remove {
                    path: issue_dir(&namespace),
                }],
            };
            if let Some(sha) = self.commit(request).await? {
                let audit = AuditEvent::new(kind::PRUNE, "prune-issue")
                    .commit(sha.clone())
                    .actor(SYSTEM_ACTOR)
                    .object(format!("Namespace/{namespace}"))
                    .detail(json!({ "issue": issue_ref, "reason": "idle" }));
                self.store.append_audit(&audit).await?;
                commits.push(sha);
            }
        }
        Ok(commits)
    }

    /// Fails the runs stuck in committed or applied for longer than
    /// `lifecycle.stuck_seconds` (say the reconciler was down, or the Job was
    /// refused), with the reason: their issue is free again and the Job is
    /// never created later (the reconciler skips finished runs' Jobs).
    pub async fn fail_stuck_runs(&self, now_ms: i64) -> Result<usize, ControlPlaneError> {
        let limit_s = self.config.lifecycle.stuck_seconds;
        let before = now_ms.saturating_sub((limit_s as i64).saturating_mul(1000));
        let stuck = self.store.runs_stuck(before).await?;
        for run in &stuck {
            let reason = format!(
                "stuck in {} for more than {limit_s} s: its Job never started; see the reconciler's health and this run's audit trail",
                run.state
            );
            if !self
                .store
                .advance_run(&run.run_id, RunState::Failed, None, Some(&reason))
                .await?
            {
                continue; // moved on meanwhile
            }
            tracing::warn!(run_id = %run.run_id, state = %run.state, "stuck run failed");
            let audit = AuditEvent::new(kind::DECISION, "failed-stuck")
                .delivery(run.delivery_id.clone())
                .run(run.run_id.clone())
                .actor(SYSTEM_ACTOR)
                .detail(json!({ "state": run.state, "reason": reason }));
            self.store.append_audit(&audit).await?;
        }
        Ok(stuck.len())
    }

    /// Whether issue `issue` of `repo` has no active run now. Checked again
    /// right before an idle prune commits: a run started after the prune was
    /// decided (an approval, a label) keeps its issue.
    async fn still_idle(&self, repo: &str, issue: i64) -> Result<bool, ControlPlaneError> {
        Ok(!self
            .store
            .runs_for_issue(repo, issue)
            .await?
            .iter()
            .any(|r| {
                r.run_state()
                    .is_some_and(|s| s.is_active() || s == RunState::Queued)
            }))
    }

    async fn prune_run(
        &self,
        run: &Run,
        with_issue: bool,
    ) -> Result<Option<String>, ControlPlaneError> {
        let with_issue = with_issue && self.still_idle(&run.repo, run.issue_number).await?;
        let issue_ref = format!("{}#{}", run.repo, run.issue_number);
        let mut changes = vec![Change::Remove {
            path: run_dir(&run.namespace, &run.run_id),
        }];
        if with_issue {
            changes.push(Change::Remove {
                path: issue_dir(&run.namespace),
            });
        }
        let action = if with_issue {
            "prune-issue"
        } else {
            "prune-run"
        };
        let request = CommitRequest {
            subject: format!("{action} {} of {issue_ref} ({})", run.run_id, run.state),
            body: run.reason.clone().unwrap_or_default(),
            trailers: trailers(
                &run.delivery_id,
                &run.run_id,
                &issue_ref,
                SYSTEM_ACTOR,
                action,
            ),
            changes,
        };
        let sha = self.commit(request).await?;
        // A replay after a crash between the commit and here commits nothing
        // new and must not audit the prune twice.
        let replay = sha.is_none() && self.store.has_audit(&run.run_id, kind::PRUNE).await?;
        self.store
            .advance_run(&run.run_id, RunState::Pruned, None, None)
            .await?;
        if replay {
            return Ok(None);
        }
        let mut audit = AuditEvent::new(kind::PRUNE, action)
            .delivery(run.delivery_id.clone())
            .run(run.run_id.clone())
            .actor(SYSTEM_ACTOR)
            .detail(json!({ "issue": issue_ref, "state": run.state }));
        if let Some(sha) = &sha {
            audit = audit.commit(sha.clone());
        }
        self.store.append_audit(&audit).await?;
        issueops_core::metrics::pruned(1);
        tracing::info!(run_id = %run.run_id, action, commit = ?sha, "pruned");
        Ok(sha)
    }

    /// Writes a new commit whose tree is the tree of `target` (history is never
    /// rewritten). Returns the new commit, or `None` when HEAD already has it.
    pub async fn rollback(
        &self,
        target: &str,
        actor: &str,
    ) -> Result<Option<String>, ControlPlaneError> {
        let (target_info, _, request) = self.rollback_request(target, actor).await?;
        let sha = self.commit(request).await?;
        let mut audit = AuditEvent::new(
            kind::ROLLBACK,
            if sha.is_some() {
                "committed"
            } else {
                "no-change"
            },
        )
        .actor(actor)
        .detail(json!({ "to": target_info.sha }));
        if let Some(sha) = &sha {
            audit = audit.commit(sha.clone());
        }
        self.store.append_audit(&audit).await?;
        Ok(sha)
    }

    /// A rollback as people ask for it: with review on (`review`), proposed
    /// for review like any change of desired state; otherwise committed.
    pub async fn request_rollback(
        &self,
        target: &str,
        actor: &str,
    ) -> Result<RollbackOutcome, ControlPlaneError> {
        if !self.config.review.enabled() {
            return Ok(match self.rollback(target, actor).await? {
                Some(sha) => RollbackOutcome::Committed(sha),
                None => RollbackOutcome::Unchanged,
            });
        }
        let (target_info, head, request) = self.rollback_request(target, actor).await?;
        if request.changes.is_empty() {
            return Ok(RollbackOutcome::Unchanged);
        }
        let id = self
            .propose_rollback(&target_info, &head, request, actor)
            .await?;
        Ok(RollbackOutcome::Proposed(id))
    }

    /// The commit that restores `target`'s tree on top of the head, with the
    /// target and the head it was computed against.
    async fn rollback_request(
        &self,
        target: &str,
        actor: &str,
    ) -> Result<(issueops_core::state_repo::CommitInfo, String, CommitRequest), ControlPlaneError>
    {
        let repo = self.repo.clone();
        let target_owned = target.to_string();
        let changes = tokio::task::spawn_blocking(
            move || -> Result<_, issueops_core::state_repo::StateRepoError> {
                let Some(head) = repo.head()? else {
                    return Ok(None);
                };
                let target_info = repo.commit_info(&target_owned)?;
                let deltas = repo.diff(Some(&head), &target_info.sha)?;
                Ok(Some((
                    target_info,
                    head,
                    deltas
                        .into_iter()
                        .map(|d| match d {
                            FileDelta::Upsert { path, content, .. } => {
                                Change::Write { path, content }
                            }
                            FileDelta::Deleted { path, .. } => Change::Remove { path },
                        })
                        .collect::<Vec<_>>(),
                )))
            },
        )
        .await
        .map_err(|e| ControlPlaneError::Task(e.to_string()))??;
        let Some((target_info, head, changes)) = changes else {
            return Err(ControlPlaneError::Refused(
                "the state repo has no commits to roll back".into(),
            ));
        };
        let mut t = trailers("-", "-", "-", actor, "rollback");
        t.push(("Rollback-To".into(), target_info.sha.clone()));
        let request = CommitRequest {
            subject: format!(
                "rollback to {} ({})",
                &target_info.sha[..12.min(target_info.sha.len())],
                target_info.summary
            ),
            body: format!(
                "Restores the tree of {}. History is kept; this commit can itself be rolled back.",
                target_info.sha
            ),
            trailers: t,
            changes,
        };
        Ok((target_info, head, request))
    }
}

/// Whether pruning `run` leaves its issue idle: no other run active or queued,
/// and the newest end of any run at or before `idle_before`.
fn issue_is_idle(runs: &[Run], run_id: &str, idle_before: i64) -> bool {
    let others_busy = runs
        .iter()
        .filter(|r| r.run_id != run_id)
        .any(|r| r.run_state().is_some_and(|s| !s.is_finished()));
    let last_end = runs.iter().filter_map(|r| r.finished_at).max();
    !others_busy && last_end.is_some_and(|t| t <= idle_before)
}

/// What `request_rollback` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// Committed to the applied branch.
    Committed(String),
    /// The head has the target's tree already.
    Unchanged,
    /// Proposed for review: the proposal's id.
    Proposed(String),
}

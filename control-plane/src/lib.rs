//! The control plane: consumes the inbox in order, decides, renders and commits
//! one intent per commit to the state repo, auditing each step.
//!
//! Invariants: deliveries are handled in inbox order; handling one twice (a
//! replay after a crash) adds no second run and no second commit, because the
//! run id derives from the delivery and a commit that changes nothing is skipped.

pub mod decide;
pub mod render;

use decide::{decide, Decision, RunMode};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::event::IssuesEvent;
use issueops_core::naming;
use issueops_core::state_repo::{Change, CommitRequest, StateRepo, StateRepoError};
use issueops_core::store::inbox::InboxRow;
use issueops_core::store::runs::{Run, RunState};
use issueops_core::store::StoreError;
use issueops_core::{Config, Store};
use render::{IssueContext, RenderError, RenderedFile, RunContext, Templates};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StateRepo(#[from] StateRepoError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("state repo task failed: {0}")]
    Task(String),
}

/// How many inbox rows are read per query.
const BATCH: i64 = 100;

pub struct ControlPlane {
    store: Store,
    repo: StateRepo,
    config: Arc<Config>,
    templates: Templates,
}

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
) -> Result<RunPlan, RenderError> {
    let repo = event.repository.full_name.clone();
    let number = event.issue.number;
    let namespace = naming::namespace_for_issue(&repo, number);
    let run_ctx = RunContext {
        id: naming::run_id_for_delivery(delivery_id),
        mode: mode.as_str().into(),
        branch: naming::branch_for_issue(number),
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
        },
        title: event.issue.title.clone(),
        files,
    })
}

impl ControlPlane {
    pub fn new(store: Store, repo: StateRepo, config: Arc<Config>, templates: Templates) -> Self {
        Self {
            store,
            repo,
            config,
            templates,
        }
    }

    /// Handles every pending delivery, oldest first. Returns how many it handled.
    /// On a store or git error it stops and leaves the delivery pending, so
    /// nothing is lost; the next call resumes there.
    pub async fn process_pending(&self) -> Result<usize, ControlPlaneError> {
        let mut handled = 0;
        loop {
            let rows = self.store.pending_deliveries(BATCH).await?;
            if rows.is_empty() {
                return Ok(handled);
            }
            for row in rows {
                let span = tracing::info_span!("process", delivery_id = %row.delivery_id, run_id = tracing::field::Empty);
                self.process(row).instrument(span).await?;
                handled += 1;
            }
        }
    }

    /// Runs until the task is dropped: wakes on `wake` or every `poll`, and
    /// wakes `handled` after each batch so the reconciler starts at once.
    pub async fn run(self, wake: Arc<Notify>, handled: Arc<Notify>, poll: Duration) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.process_pending().await {
                Ok(n) => {
                    backoff = Duration::from_millis(200);
                    if n > 0 {
                        handled.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "control plane cycle failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            let _ = tokio::time::timeout(poll, wake.notified()).await;
        }
    }

    async fn process(&self, row: InboxRow) -> Result<(), ControlPlaneError> {
        match decide(&self.config, &row.event, &row.payload, true) {
            Decision::Ignore { reason } => {
                tracing::info!(event = %row.event, %reason, "ignored");
                let mut audit = AuditEvent::new(kind::DECISION, "ignored")
                    .delivery(row.delivery_id.clone())
                    .detail(json!({ "event": row.event, "action": row.action, "repo": row.repo, "reason": reason }));
                if let Some(sender) = &row.sender {
                    audit = audit.actor(sender.clone());
                }
                self.store.append_audit(&audit).await?;
                self.store
                    .mark_processed(row.seq, &format!("ignored: {reason}"))
                    .await?;
            }
            Decision::StartRun { event, mode } => self.start_run(&row, &event, mode).await?,
        }
        Ok(())
    }

    async fn start_run(
        &self,
        row: &InboxRow,
        event: &IssuesEvent,
        mode: RunMode,
    ) -> Result<(), ControlPlaneError> {
        let plan = match plan_run(&self.config, &self.templates, &row.delivery_id, event, mode) {
            Ok(plan) => plan,
            Err(e) => {
                // A template or config fault: record it and move on rather than
                // block every later delivery behind this one.
                tracing::error!(error = %e, "rendering failed");
                let audit = AuditEvent::new(kind::DECISION, "error")
                    .delivery(row.delivery_id.clone())
                    .actor(event.sender.login.clone())
                    .detail(json!({ "reason": e.to_string() }));
                self.store.append_audit(&audit).await?;
                self.store
                    .mark_processed(row.seq, &format!("error: {e}"))
                    .await?;
                return Ok(());
            }
        };
        let run = &plan.run;
        tracing::Span::current().record("run_id", run.run_id.as_str());
        let issue_ref = format!("{}#{}", run.repo, run.issue_number);
        if self.store.insert_run(run).await? {
            let audit = AuditEvent::new(kind::DECISION, "accepted")
                .delivery(run.delivery_id.clone())
                .run(run.run_id.clone())
                .actor(run.actor.clone())
                .detail(json!({
                    "issue": issue_ref, "mode": run.mode, "namespace": run.namespace,
                    "label": self.config.trigger_label,
                }));
            self.store.append_audit(&audit).await?;
        }
        let request = CommitRequest {
            subject: format!(
                "{}: start {} run {} for {issue_ref}",
                self.config.trigger_label, run.mode, run.run_id
            ),
            body: format!(
                "Issue title: {}\nNamespace: {}\nBranch: {}",
                plan.title.replace(['\r', '\n'], " "),
                run.namespace,
                run.branch
            ),
            trailers: vec![
                ("Delivery-Id".into(), run.delivery_id.clone()),
                ("Run-Id".into(), run.run_id.clone()),
                ("Issue".into(), issue_ref.clone()),
                ("Actor".into(), run.actor.clone()),
                ("Action".into(), "start-run".into()),
            ],
            changes: plan
                .files
                .iter()
                .map(|f| Change::Write {
                    path: f.path.clone(),
                    content: f.content.clone().into_bytes(),
                })
                .collect(),
        };
        let repo = self.repo.clone();
        let run_id = run.run_id.clone();
        let committed = tokio::task::spawn_blocking(move || -> Result<_, StateRepoError> {
            match repo.commit(&request)? {
                Some(sha) => Ok((sha, true)),
                // Replay after a crash: the intent is already in the repo.
                None => Ok((
                    repo.find_commit_with_trailer("Run-Id", &run_id)?
                        .unwrap_or_default(),
                    false,
                )),
            }
        })
        .await
        .map_err(|e| ControlPlaneError::Task(e.to_string()))??;
        let (sha, new_commit) = committed;
        self.store
            .set_run_state(
                &run.run_id,
                RunState::Committed,
                Some(&sha).filter(|s| !s.is_empty()).map(|s| s.as_str()),
            )
            .await?;
        if new_commit {
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
            .mark_processed(row.seq, &format!("run {} committed {sha}", run.run_id))
            .await?;
        Ok(())
    }
}

//! The control plane: consumes the inbox in order, decides, renders and commits
//! one intent per commit to the state repo, auditing each step. It also prunes
//! finished runs and writes rollbacks: every change of desired state is a
//! commit made here.
//!
//! Invariants: deliveries are handled in inbox order; handling one twice (a
//! replay after a crash) adds no second run and no second commit, because the
//! run id derives from the delivery and a commit that changes nothing is
//! skipped. At most one run per issue is active.

pub mod approval;
pub mod capacity;
pub mod catch_up;
pub mod commit_path;
pub mod debug_hold;
pub mod decide;
pub mod labels;
pub mod layout;
pub mod lifecycle;
pub mod render;
pub mod report;
pub mod review;

pub(crate) use commit_path::trailers;
pub use commit_path::{plan_run, RunPlan};
use decide::{admit, decide, Admission, Decision, RunMode};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::event::IssuesEvent;
use issueops_core::naming;
pub use issueops_core::state_repo::{issue_dir, run_dir};
use issueops_core::state_repo::{StateRepo, StateRepoError};
use issueops_core::store::inbox::InboxRow;
use issueops_core::store::runs::{Run, RunState};
use issueops_core::store::StoreError;
use issueops_core::{Config, Store};
use render::{RenderError, Templates};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
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
    #[error("{0}")]
    Refused(String),
    #[error("GitHub: {0}")]
    GitHub(String),
    /// GitHub refused for good (say the App is not installed on the repo):
    /// trying again changes nothing.
    #[error("GitHub: {0}")]
    GitHubRefused(String),
}

/// What a failed delivery means for its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The delivery cannot succeed as it is: a dead letter at once.
    Permanent,
    /// Worth trying again later (GitHub unavailable or throttling).
    Transient,
    /// The store or the state repo failed: no fault of the delivery. The pass
    /// stops and is retried, and the attempt does not count.
    Infrastructure,
}

impl ControlPlaneError {
    pub fn failure(&self) -> Failure {
        match self {
            ControlPlaneError::Refused(_)
            | ControlPlaneError::Render(_)
            | ControlPlaneError::GitHubRefused(_) => Failure::Permanent,
            ControlPlaneError::GitHub(_) => Failure::Transient,
            ControlPlaneError::Store(_)
            | ControlPlaneError::StateRepo(_)
            | ControlPlaneError::Task(_) => Failure::Infrastructure,
        }
    }
}

/// GitHub errors keep their text (they never hold a token). A client error
/// other than a timeout or throttling is GitHub's final word.
impl From<issueops_github::GitHubError> for ControlPlaneError {
    fn from(e: issueops_github::GitHubError) -> Self {
        match &e {
            issueops_github::GitHubError::Status { status, .. }
                if (400..500).contains(status) && ![408, 429].contains(status) =>
            {
                ControlPlaneError::GitHubRefused(e.to_string())
            }
            _ => ControlPlaneError::GitHub(e.to_string()),
        }
    }
}

/// How many inbox rows are claimed per query.
const BATCH: i64 = 100;
/// How long a claim holds: longer than handling a batch takes, short enough
/// that a crashed consumer's deliveries come back soon.
const CLAIM_LEASE_MS: i64 = 60 * 1000;
/// The role name of the control plane's locks (leadership and exclusive).
pub const WRITER_ROLE: &str = "control-plane";
/// How long a pass waits for an operator's command to finish.
const PASS_LOCK_WAIT: Duration = Duration::from_secs(60);
/// Who signs the commits issueops makes on its own (prunes).
pub const SYSTEM_ACTOR: &str = "issueops";

pub struct ControlPlane {
    store: Store,
    repo: StateRepo,
    config: Arc<Config>,
    templates: Templates,
    /// `None` when GitHub is not configured: no permission checks, no calls.
    github: Option<Arc<issueops_github::GitHub>>,
}

impl ControlPlane {
    pub fn new(store: Store, repo: StateRepo, config: Arc<Config>, templates: Templates) -> Self {
        Self {
            store,
            repo,
            config,
            templates,
            github: None,
        }
    }

    /// Checks who triggers runs against GitHub (collaborator permission).
    pub fn with_github(mut self, github: Arc<issueops_github::GitHub>) -> Self {
        self.github = Some(github);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles every due delivery, oldest first, then starts queued runs
    /// whose issue is free. Returns how many deliveries it handled.
    ///
    /// Each batch is claimed first (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
    /// A delivery that fails is retried later with backoff, or after a
    /// permanent error or `inbox.max_attempts` attempts becomes a dead letter
    /// (audited); later deliveries of its repo wait behind it, other repos go
    /// on. On a store or git error the pass stops and leaves the delivery
    /// pending, so nothing is lost; the next pass resumes there.
    pub async fn process_pending(&self) -> Result<usize, ControlPlaneError> {
        let mut handled = 0;
        loop {
            let rows = self.store.claim_deliveries(BATCH, CLAIM_LEASE_MS).await?;
            if rows.is_empty() {
                break;
            }
            let mut held_repos = std::collections::HashSet::new();
            let mut rows = rows.into_iter();
            while let Some(row) = rows.next() {
                if held_repos.contains(&row.repo) {
                    self.store.release_delivery(row.seq).await?;
                    continue;
                }
                let span = tracing::info_span!("process", delivery_id = %row.delivery_id, run_id = tracing::field::Empty);
                let (seq, repo, delivery_id) = (row.seq, row.repo.clone(), row.delivery_id.clone());
                let Err(e) = self.process(row).instrument(span).await else {
                    handled += 1;
                    continue;
                };
                if e.failure() == Failure::Infrastructure {
                    // Kept for people (the UI's deliveries page); the claims
                    // are given back so the next pass starts at once.
                    let release = async {
                        self.store.note_delivery_error(seq, &e.to_string()).await?;
                        for rest in rows {
                            self.store.release_delivery(rest.seq).await?;
                        }
                        Ok::<_, StoreError>(())
                    };
                    if let Err(record) = release.await {
                        tracing::warn!(error = %record, "cannot record why a delivery failed");
                    }
                    return Err(e);
                }
                held_repos.insert(repo.clone());
                self.delivery_failed(seq, &delivery_id, repo.as_deref(), &e)
                    .await?;
            }
        }
        self.start_queued().await?;
        Ok(handled)
    }

    /// Schedules the retry of a delivery that failed, or parks it as a dead
    /// letter (audited) when the error is permanent or attempts ran out.
    async fn delivery_failed(
        &self,
        seq: i64,
        delivery_id: &str,
        repo: Option<&str>,
        e: &ControlPlaneError,
    ) -> Result<(), ControlPlaneError> {
        let inbox = &self.config.inbox;
        let attempts = self.store.delivery_attempts(seq).await? + 1;
        let dead = e.failure() == Failure::Permanent || attempts >= i64::from(inbox.max_attempts);
        let retry_at = (!dead).then(|| {
            let pause = issueops_core::retry::delay(
                Duration::from_secs(inbox.first_retry_seconds),
                Duration::from_secs(inbox.max_retry_seconds.max(inbox.first_retry_seconds)),
                attempts as u32,
            );
            issueops_core::now_ms().saturating_add(pause.as_millis() as i64)
        });
        self.store
            .fail_delivery(seq, &e.to_string(), retry_at)
            .await?;
        issueops_core::metrics::delivery_outcome(if dead { "dead" } else { "retry" });
        if dead {
            tracing::error!(delivery_id, error = %e, attempts, "delivery dead-lettered");
            self.store
                .append_audit(
                    &AuditEvent::new(kind::DELIVERY_DEAD, "dead-lettered")
                        .delivery(delivery_id)
                        .detail(json!({
                            "repo": repo,
                            "attempts": attempts,
                            "reason": e.to_string(),
                            "permanent": e.failure() == Failure::Permanent,
                        })),
                )
                .await?;
        } else {
            tracing::warn!(delivery_id, error = %e, attempts, "delivery failed; will retry");
        }
        Ok(())
    }

    /// Runs until `stop` is cancelled (a pass in progress finishes first):
    /// wakes on `wake` or every `poll`, and wakes `handled` after each batch
    /// so the reconciler starts at once. Prunes finished runs on every pass.
    /// Each pass holds the control plane's exclusive lock, so an operator's
    /// CLI command waits for it instead of interleaving.
    pub async fn run(
        &self,
        wake: Arc<Notify>,
        handled: Arc<Notify>,
        poll: Duration,
        stop: CancellationToken,
    ) {
        let mut pauses =
            issueops_core::retry::Pauses::new(Duration::from_millis(200), Duration::from_secs(30));
        let catch_up_every = Duration::from_secs(self.config.github.catch_up_seconds.max(1));
        let mut last_catch_up: Option<std::time::Instant> = None;
        let verify_every = Duration::from_secs(self.config.audit.verify_every_hours * 3600);
        let mut last_verify: Option<std::time::Instant> = None;
        let layout_checked = std::cell::Cell::new(false);
        loop {
            if !verify_every.is_zero() && last_verify.is_none_or(|t| t.elapsed() >= verify_every) {
                last_verify = Some(std::time::Instant::now());
                self.verify_audit().await;
            }
            if self.github.is_some() && last_catch_up.is_none_or(|t| t.elapsed() >= catch_up_every)
            {
                last_catch_up = Some(std::time::Instant::now());
                match self.catch_up().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(intents = n, "catch-up sync found missed triggers"),
                    Err(e) => tracing::warn!(error = %e, "catch-up sync failed; will retry"),
                }
            }
            let pass = async {
                let _turn = self.store.exclusive(WRITER_ROLE, PASS_LOCK_WAIT).await?;
                if !layout_checked.get() {
                    self.migrate_layout().await?;
                    layout_checked.set(true);
                }
                let n = self.process_pending().await?;
                self.expire_approvals(issueops_core::now_ms()).await?;
                self.expire_proposals(issueops_core::now_ms()).await?;
                self.fail_stuck_runs(issueops_core::now_ms()).await?;
                let pruned = self.prune_due(issueops_core::now_ms()).await?;
                // Reporting back must not hold up runs: a GitHub outage only
                // delays the comments, which stay in the outbox.
                if let Err(e) = self.report_pass().await {
                    tracing::warn!(error = %e, "reporting to GitHub failed; will retry");
                }
                if let Err(e) = self.remove_trigger_labels().await {
                    tracing::warn!(error = %e, "removing trigger labels failed; will retry");
                }
                Ok::<_, ControlPlaneError>(n + pruned.len())
            };
            match pass.await {
                Ok(n) => {
                    pauses.reset();
                    if n > 0 {
                        handled.notify_one();
                    }
                }
                Err(e) => {
                    let pause = pauses.next_pause();
                    tracing::error!(error = %e, retry_in = ?pause, "control plane cycle failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::timeout(poll, wake.notified()) => {}
            }
        }
    }

    /// Runs `audit verify` as issueops (recorded for the health page); a
    /// break is logged as an error, a failure to verify as a warning.
    pub async fn verify_audit(&self) {
        match issueops_core::audit::verify::verify_and_record(&self.store, &self.repo, SYSTEM_ACTOR)
            .await
        {
            Ok(v) => match v.first_break() {
                None => tracing::info!(rows = v.rows, "audit trail verified"),
                Some(first) => {
                    tracing::error!(first_break = %first, breaks = v.breaks.len(), "the audit trail does not verify")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "audit verification failed; tried again after audit.verify_every_hours")
            }
        }
    }

    async fn process(&self, row: InboxRow) -> Result<(), ControlPlaneError> {
        let outcome = match decide(&self.config, &row.event, &row.payload, true) {
            Decision::Ignore { reason } => {
                tracing::info!(event = %row.event, %reason, "ignored");
                let mut audit = AuditEvent::new(kind::DECISION, "ignored")
                    .delivery(row.delivery_id.clone())
                    .detail(json!({ "event": row.event, "action": row.action, "repo": row.repo, "reason": reason }));
                if let Some(sender) = &row.sender {
                    audit = audit.actor(sender.clone());
                }
                self.store.append_audit(&audit).await?;
                format!("ignored: {reason}")
            }
            Decision::StartRun { event, mode } => {
                self.trigger(&row.delivery_id, &event, mode).await?
            }
            Decision::RefuseTrigger { event, reason } => {
                self.refuse(&row.delivery_id, &event, None, &reason).await?
            }
            Decision::CloseIssue { event } => self.close_issue(&row.delivery_id, &event).await?,
            Decision::CancelActive { event } => {
                self.cancel_active(&row.delivery_id, &event).await?
            }
            Decision::ApproveByLabel { event } => {
                self.approve_by_label(&row.delivery_id, &event).await?
            }
            Decision::Hold { event } => self.hold(&row.delivery_id, &event).await?,
            Decision::Release { event } => self.release(&row.delivery_id, &event).await?,
        };
        self.store.mark_processed(row.seq, &outcome).await?;
        issueops_core::metrics::delivery_outcome("handled");
        issueops_core::metrics::decision(&outcome);
        Ok(())
    }

    fn decision_audit(&self, delivery_id: &str, event: &IssuesEvent, outcome: &str) -> AuditEvent {
        AuditEvent::new(kind::DECISION, outcome)
            .delivery(delivery_id)
            .actor(event.sender.login.clone())
    }

    /// A trigger: start, queue or refuse it, then start if admitted.
    async fn trigger(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        mode: RunMode,
    ) -> Result<String, ControlPlaneError> {
        let run_id = naming::run_id_for_delivery(delivery_id);
        // A replay after a crash finds its own run and carries on with it; a
        // finished run stays finished (its folder is not committed again).
        if let Some(existing) = self.store.get_run(&run_id).await? {
            if existing.run_state().is_some_and(RunState::is_finished) {
                return Ok(format!(
                    "replay of run {run_id}, which already ended ({}): nothing to do",
                    existing.state
                ));
            }
            if existing.state != RunState::Queued.as_str() {
                return self
                    .commit_run(
                        delivery_id,
                        event,
                        mode,
                        &existing.branch,
                        existing.pull_request,
                    )
                    .await;
            }
            return Ok(format!("run {run_id} queued"));
        }
        if event
            .issue
            .labels
            .iter()
            .any(|l| l.name == self.config.labels.debug)
        {
            self.hold(delivery_id, event).await?;
        }
        match self.authorize(event).await? {
            approval::Authorization::NeedsApproval { permission } => {
                return self
                    .request_approval(delivery_id, event, mode, &permission)
                    .await;
            }
            approval::Authorization::Allowed { how } => {
                let audit = self
                    .decision_audit(delivery_id, event, "authorized")
                    .detail(json!({ "how": how }));
                self.store.append_audit(&audit).await?;
            }
        }
        self.admit_and_start(delivery_id, event, mode).await
    }

    /// Weighs an authorized trigger against the issue's runs, then starts,
    /// queues or refuses it.
    pub(crate) async fn admit_and_start(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        mode: RunMode,
    ) -> Result<String, ControlPlaneError> {
        let runs = self
            .store
            .runs_for_issue(&event.repository.full_name, event.issue.number as i64)
            .await?;
        let admission = admit(&self.config, event.issue.number, mode, &runs);
        if !matches!(admission, Admission::Refuse { .. }) {
            if let Some(reason) = self.over_daily_budget(&event.repository.full_name).await? {
                return self.refuse(delivery_id, event, Some(mode), &reason).await;
            }
        }
        match admission {
            // With a cap on active runs every trigger waits its turn in the
            // queue, which starts it at the end of this pass if a slot is free.
            Admission::Start { .. } if self.config.limits.caps_active_runs() => {
                self.queue_run(delivery_id, event, mode, "capacity").await
            }
            Admission::Start { branch } => {
                match self
                    .revision_target(delivery_id, event, mode, &branch)
                    .await?
                {
                    Ok(pull_request) => {
                        self.commit_run(delivery_id, event, mode, &branch, pull_request)
                            .await
                    }
                    Err(outcome) => Ok(outcome),
                }
            }
            Admission::Refuse { reason } => {
                self.refuse(delivery_id, event, Some(mode), &reason).await
            }
            Admission::Queue { active_run } => {
                self.queue_run(delivery_id, event, mode, &active_run).await
            }
        }
    }

    /// Records a trigger as a queued run, waiting `behind` a run of its
    /// issue or for `capacity`.
    async fn queue_run(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        mode: RunMode,
        behind: &str,
    ) -> Result<String, ControlPlaneError> {
        let issue_ref = format!("{}#{}", event.repository.full_name, event.issue.number);
        let run_id = naming::run_id_for_delivery(delivery_id);
        let namespace =
            naming::namespace_for_issue(&event.repository.full_name, event.issue.number);
        let run = Run {
            run_id: run_id.clone(),
            delivery_id: delivery_id.into(),
            repo: event.repository.full_name.clone(),
            issue_number: event.issue.number as i64,
            namespace,
            mode: mode.as_str().into(),
            branch: String::new(),
            actor: event.sender.login.clone(),
            state: RunState::Queued.as_str().into(),
            commit_sha: None,
            finished_at: None,
            reason: None,
            pull_request: None,
        };
        self.store.insert_run(&run).await?;
        let audit = self
            .decision_audit(delivery_id, event, "queued")
            .run(run_id.clone())
            .detail(json!({ "issue": issue_ref, "mode": mode.as_str(), "behind": behind }));
        self.store.append_audit(&audit).await?;
        Ok(format!("run {run_id} queued behind {behind}"))
    }

    /// Refuses a trigger: says why on the issue, and audits it.
    async fn refuse(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        mode: Option<RunMode>,
        reason: &str,
    ) -> Result<String, ControlPlaneError> {
        tracing::info!(%reason, "trigger refused");
        let issue_ref = format!("{}#{}", event.repository.full_name, event.issue.number);
        self.notify(
            delivery_id,
            &event.repository.full_name,
            event.issue.number as i64,
            &format!("this trigger was refused: {reason}."),
        )
        .await?;
        let audit = self.decision_audit(delivery_id, event, "refused").detail(
            json!({ "issue": issue_ref, "mode": mode.map(RunMode::as_str), "reason": reason }),
        );
        self.store.append_audit(&audit).await?;
        Ok(format!("refused: {reason}"))
    }

    /// For a revision with GitHub configured: the open pull request of the
    /// earlier run's branch, or `Err(outcome)` after refusing (with a comment)
    /// when there is none. Dev runs and runs without GitHub: `Ok(None)`.
    async fn revision_target(
        &self,
        delivery_id: &str,
        event: &IssuesEvent,
        mode: RunMode,
        branch: &str,
    ) -> Result<Result<Option<i64>, String>, ControlPlaneError> {
        let (RunMode::Revise, Some(github)) = (mode, &self.github) else {
            return Ok(Ok(None));
        };
        let repo = &event.repository.full_name;
        if let Some((number, _)) = self.pull_request_for(github, repo, branch).await? {
            return Ok(Ok(Some(number)));
        }
        let reason = format!(
            "there is no open pull request from branch `{branch}` to revise; add `{}` to start a new run",
            self.config.trigger_label
        );
        self.notify(
            delivery_id,
            repo,
            event.issue.number as i64,
            &format!("this revision was refused: {reason}."),
        )
        .await?;
        let audit = self
            .decision_audit(delivery_id, event, "refused")
            .detail(json!({ "mode": mode.as_str(), "reason": reason }));
        self.store.append_audit(&audit).await?;
        Ok(Err(format!("refused: {reason}")))
    }
}

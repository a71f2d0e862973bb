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
pub mod catch_up;
pub mod debug_hold;
pub mod decide;
pub mod labels;
pub mod lifecycle;
pub mod render;
pub mod report;

use decide::{admit, decide, Admission, Decision, RunMode};
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

/// `issues/<namespace>`: the folder of one issue in the state repo.
pub fn issue_dir(namespace: &str) -> String {
    format!("issues/{namespace}")
}

/// `issues/<namespace>/runs/<run id>`: the folder of one run.
pub fn run_dir(namespace: &str, run_id: &str) -> String {
    format!("issues/{namespace}/runs/{run_id}")
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
        loop {
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
                let n = self.process_pending().await?;
                self.expire_approvals(issueops_core::now_ms()).await?;
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
        let issue_ref = format!("{}#{}", event.repository.full_name, event.issue.number);
        let run_id = naming::run_id_for_delivery(delivery_id);
        let runs = self
            .store
            .runs_for_issue(&event.repository.full_name, event.issue.number as i64)
            .await?;
        match admit(&self.config, event.issue.number, mode, &runs) {
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
                    .detail(
                        json!({ "issue": issue_ref, "mode": mode.as_str(), "behind": active_run }),
                    );
                self.store.append_audit(&audit).await?;
                Ok(format!("run {run_id} queued behind {active_run}"))
            }
        }
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

    /// Starts, in arrival order, the queued runs whose issue has no active run.
    async fn start_queued(&self) -> Result<(), ControlPlaneError> {
        for queued in self.store.startable_queued_runs().await? {
            let Some((_, payload)) = self.store.delivery(&queued.delivery_id).await? else {
                continue;
            };
            let (Ok(event), Some(mode)) = (
                serde_json::from_str::<IssuesEvent>(&payload),
                RunMode::parse(&queued.mode),
            ) else {
                continue;
            };
            let runs = self
                .store
                .runs_for_issue(&queued.repo, queued.issue_number)
                .await?;
            // This run and those queued behind it do not hold it back.
            let earlier: Vec<Run> = runs
                .into_iter()
                .filter(|r| r.state != RunState::Queued.as_str())
                .collect();
            let span = tracing::info_span!("dequeue", delivery_id = %queued.delivery_id, run_id = %queued.run_id);
            match admit(&self.config, event.issue.number, mode, &earlier) {
                Admission::Start { branch } => {
                    let Ok(pull_request) = self
                        .revision_target(&queued.delivery_id, &event, mode, &branch)
                        .await?
                    else {
                        self.store
                            .advance_run(
                                &queued.run_id,
                                RunState::Cancelled,
                                None,
                                Some("no open pull request to revise"),
                            )
                            .await?;
                        continue;
                    };
                    self.commit_run(&queued.delivery_id, &event, mode, &branch, pull_request)
                        .instrument(span)
                        .await?;
                }
                Admission::Refuse { reason } => {
                    self.store
                        .advance_run(&queued.run_id, RunState::Cancelled, None, Some(&reason))
                        .await?;
                }
                Admission::Queue { .. } => {}
            }
        }
        Ok(())
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

    /// Renders and commits one run; idempotent for a replay.
    async fn commit_run(
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
    async fn commit_or_find(
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

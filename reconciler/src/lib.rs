//! The reconciler: applies the state repo's HEAD to the cluster.
//!
//! One cycle diffs the last applied commit against HEAD (a git tree diff), so
//! its work is proportional to what changed, not to the inventory. Objects are
//! applied with server-side apply, cluster-scoped first; objects whose files
//! left the repo are deleted, Jobs first and namespaces last, and only when they
//! carry the managed-by label. The last applied commit moves only when every
//! object of the cycle succeeded, so a failure is retried next cycle.

pub mod agent_result;
pub mod apply;
pub mod credentials;
pub mod desired;
mod execute;
pub mod invariants;
pub mod inventory;
pub mod lease;
pub mod observe;
pub mod ownership;
mod plan;
pub mod resync;
pub mod transcript;

use apply::DeleteOutcome;
use desired::DesiredObject;
use execute::Pass;
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::state_repo::{CommitInfo, StateRepo, StateRepoError};
use issueops_core::store::runs::RunState;
use issueops_core::store::StoreError;
use issueops_core::Store;
use plan::plan_cycle;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// Key under which the last applied commit is stored, unless set otherwise.
pub const DEFAULT_STATE_KEY: &str = "default";
/// `Action` trailers of the control plane's commits that remove folders as a
/// run or an issue ends.
const LIFECYCLE_ACTIONS: [&str; 4] = ["prune-run", "prune-issue", "cancel-run", "close-issue"];
/// The role name of the reconciler's locks (leadership and exclusive).
pub const WRITER_ROLE: &str = "reconciler";
/// How long a cycle waits for an operator's `issueops reconcile`.
const CYCLE_LOCK_WAIT: Duration = Duration::from_secs(60);
/// Label carrying the run id on run-scoped objects.
pub const RUN_LABEL: &str = "issueops.dev/run-id";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StateRepo(#[from] StateRepoError),
    #[error("state repo task failed: {0}")]
    Task(String),
    #[error("Kubernetes API: {0}")]
    Kube(String),
}

/// The guard against mass deletion (an emptied or broken state repo): a cycle
/// that would delete more than `max_share` of the managed objects, and more
/// than `max_unguarded` objects, stops and waits for `--force`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneSafety {
    pub max_share: f64,
    pub max_unguarded: usize,
}

impl PruneSafety {
    pub fn from_config(lifecycle: &issueops_core::config::LifecycleConfig) -> Self {
        Self {
            max_share: lifecycle.max_delete_share,
            max_unguarded: lifecycle.max_unguarded_deletes,
        }
    }

    /// `Some(reason)` when deleting `deletes` of `inventory` objects needs `--force`.
    pub fn check(&self, deletes: usize, inventory: usize) -> Option<String> {
        let share = if inventory == 0 {
            1.0
        } else {
            deletes as f64 / inventory as f64
        };
        (deletes > self.max_unguarded && share > self.max_share).then(|| {
            format!(
                "would delete {deletes} of {inventory} managed objects ({:.0}%, limit {:.0}% beyond {} objects); \
                 check the state repo, then run `issueops reconcile --force` if this is intended",
                share * 100.0,
                self.max_share * 100.0,
                self.max_unguarded
            )
        })
    }
}

impl Default for PruneSafety {
    fn default() -> Self {
        Self::from_config(&Default::default())
    }
}

/// What one cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    /// HEAD the cycle worked towards (`None`: the state repo is empty).
    pub head: Option<String>,
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
    pub skipped: Vec<String>,
    pub failed: Vec<String>,
    /// State-repo files refused (not Kubernetes objects, or outside what this
    /// install manages), with the reason: audited, never applied, and no
    /// obstacle to the rest of the cycle.
    pub refused: Vec<String>,
    /// Set when prune safety stopped the cycle before it changed anything.
    pub blocked: Option<String>,
    /// Set when the cycle applied nothing because a commit since the last
    /// applied one is not signed by a trusted key (`with_trusted_keys`).
    pub untrusted: Option<String>,
}

impl CycleReport {
    pub fn converged(&self) -> bool {
        self.failed.is_empty() && self.blocked.is_none() && self.untrusted.is_none()
    }
}

pub struct Reconciler {
    store: Store,
    repo: StateRepo,
    client: kube::Client,
    state_key: String,
    safety: PruneSafety,
    watch_jobs: bool,
    /// GitHub App client and the Secret name for agent tokens.
    credentials: Option<(Arc<issueops_github::GitHub>, String)>,
    /// This install's name: the `issueops.dev/instance` label it owns.
    instance: String,
    /// What this install may touch (instance, kinds).
    scope: desired::Scope,
    /// The agent's model API key, written beside the GitHub token (key
    /// `agent-api-key`); never logged, audited or committed.
    agent_api_key: Option<credentials::AgentApiKey>,
    /// What the cluster holds of ours, for the full resync.
    inventory: inventory::Inventory,
    /// With keys: only commits they signed are applied (see `trust`).
    trusted: Option<issueops_core::signing::TrustedKeys>,
}

/// One change to make, with the commit that asked for it.
pub(crate) struct Step {
    pub(crate) object: DesiredObject,
    pub(crate) delete: bool,
    pub(crate) origin: Option<CommitInfo>,
    /// Not applied by us before (a new file, or missing from the cluster):
    /// look before applying, so nobody else's object is taken over.
    pub(crate) check_owner: bool,
    /// Why a resync does this (drift, missing, orphan), for the audit row.
    pub(crate) note: Option<String>,
}

fn trailer<'a>(info: Option<&'a CommitInfo>, key: &str) -> Option<&'a str> {
    info.and_then(|i| i.trailers.iter().find(|(k, _)| k == key))
        .map(|(_, v)| v.as_str())
}

impl Reconciler {
    pub fn new(store: Store, repo: StateRepo, client: kube::Client) -> Self {
        Self {
            store,
            repo,
            client,
            state_key: DEFAULT_STATE_KEY.into(),
            safety: PruneSafety::default(),
            watch_jobs: false,
            credentials: None,
            instance: issueops_core::DEFAULT_INSTANCE.into(),
            scope: desired::Scope::new(
                issueops_core::DEFAULT_INSTANCE,
                &issueops_core::config::ClusterConfig::default().kinds,
            ),
            agent_api_key: None,
            inventory: inventory::Inventory::default(),
            trusted: None,
        }
    }

    /// Applies a new head only when every commit since the last applied one
    /// is signed by one of `keys` (issueops's own and the reviewers'); an
    /// empty set checks nothing (issueops does not sign).
    pub fn with_trusted_keys(mut self, keys: issueops_core::signing::TrustedKeys) -> Self {
        self.trusted = (!keys.is_empty()).then_some(keys);
        self
    }

    /// Acts only on objects labelled with install `instance` (the config's `instance`).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self.scope.instance = self.instance.clone();
        self
    }

    /// Applies only the kinds of `cluster.kinds`, and only Namespaces that
    /// carry `cluster.pod_security`.
    pub fn with_cluster(mut self, cluster: &issueops_core::config::ClusterConfig) -> Self {
        self.scope.kinds = cluster.kinds.clone();
        self.scope.pod_security = cluster.pod_security.clone();
        self
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Writes agent token Secrets (named `secret_name`) with this GitHub App.
    pub fn with_credentials(
        mut self,
        github: Arc<issueops_github::GitHub>,
        secret_name: impl Into<String>,
    ) -> Self {
        self.credentials = Some((github, secret_name.into()));
        self
    }

    /// Also give agents this model API key, in their token Secret.
    pub fn with_agent_api_key(mut self, key: credentials::AgentApiKey) -> Self {
        self.agent_api_key = Some(key);
        self
    }

    /// Watch the cluster: Jobs (their runs move as events arrive) and the
    /// inventory of managed objects (a resync then needs no LIST). For a real
    /// API server; the in-process stand-in serves no watches.
    pub fn with_job_watch(mut self, on: bool) -> Self {
        self.watch_jobs = on;
        self
    }

    pub fn with_safety(mut self, safety: PruneSafety) -> Self {
        self.safety = safety;
        self
    }

    /// Keeps the last applied commit under `key`: a cluster that starts empty
    /// (the in-process stand-in) must not inherit another cluster's progress.
    pub fn with_state_key(mut self, key: impl Into<String>) -> Self {
        self.state_key = key.into();
        self
    }

    /// Runs until `stop` is cancelled (a cycle in progress finishes first): a
    /// cycle when woken by `wake` or every `poll`, Job observation after each,
    /// and a full resync every `resync`. Each cycle holds the reconciler's
    /// exclusive lock, so `issueops reconcile` waits for it.
    pub async fn run(
        &self,
        wake: Arc<Notify>,
        poll: Duration,
        resync: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let _watches = self.watch_jobs.then(|| self.watch());
        let mut last_resync = std::time::Instant::now();
        loop {
            let turn = match self.store.exclusive(WRITER_ROLE, CYCLE_LOCK_WAIT).await {
                Ok(turn) => turn,
                Err(e) => {
                    tracing::warn!(error = %e, "reconciler lock not available; next cycle");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(poll) => continue,
                    }
                }
            };
            let cycle = self.reconcile_once().await;
            match &cycle {
                Ok(report) if !report.converged() => {
                    tracing::warn!(failed = ?report.failed, blocked = ?report.blocked, "cycle did not converge; retrying next cycle")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "reconcile cycle failed"),
            }
            self.record_cycle(&cycle).await;
            // Watched, Jobs need no LIST: the watch moves their runs, and the
            // inventory says which are gone.
            let observed = if self.inventory.is_watched() {
                observe::end_runs_without_jobs(&self.client, &self.store, &self.inventory).await
            } else {
                observe::observe_jobs(&self.client, &self.store, &self.instance).await
            };
            if let Err(e) = observed {
                tracing::error!(error = %e, "observing Jobs failed");
            }
            let now = (issueops_core::now_ms() / 1000) as i64;
            if let Err(e) = self.refresh_credentials(now).await {
                tracing::error!(error = %e, "agent credentials pass failed; will retry");
            }
            if last_resync.elapsed() >= resync {
                last_resync = std::time::Instant::now();
                match self.resync(false).await {
                    Ok(r) if r.cycle.blocked.is_some() => {
                        tracing::error!(reason = ?r.cycle.blocked, "resync stopped by prune safety")
                    }
                    Ok(r) => tracing::info!(
                        applied = r.cycle.applied.len(),
                        deleted = r.cycle.deleted.len(),
                        list_calls = r.list_calls,
                        "resync done"
                    ),
                    Err(e) => tracing::error!(error = %e, "resync failed"),
                }
            }
            drop(turn);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::timeout(poll, wake.notified()) => {}
            }
        }
    }

    /// Starts the watches (until the returned value is dropped): Jobs, whose
    /// runs move as events arrive, and the inventory of managed objects, so
    /// a resync needs no LIST.
    pub fn watch(&self) -> Watches {
        let (client, store) = (self.client.clone(), self.store.clone());
        let instance = self.instance.clone();
        let jobs = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = observe::watch_jobs(client, store, &instance).await {
                tracing::error!(error = %e, "Job watcher stopped; the periodic list goes on");
            }
        }));
        let (inventory, client) = (self.inventory.clone(), self.client.clone());
        let (store, instance) = (self.store.clone(), self.instance.clone());
        // Marks the inventory watched now, so a resync waits for the lists.
        let watch = inventory.watch(client, instance.clone());
        let objects = AbortOnDrop(tokio::spawn(async move {
            // Before the first lists: they match objects against these.
            match store.verdicts(&instance).await {
                Ok(kept) => {
                    tracing::info!(
                        verdicts = kept.len(),
                        "resync verdicts kept from the last run"
                    );
                    inventory.remember(kept);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kept resync verdicts not read; the first resync reads every file")
                }
            }
            watch.await
        }));
        Watches {
            _jobs: jobs,
            _objects: objects,
        }
    }

    /// Keeps the verdicts reached since the last call (and drops those of
    /// objects gone), so the first resync after a restart reads only what
    /// changed. Losing them costs only that reading: a failure is logged.
    pub(crate) async fn keep_verdicts(&self) {
        let (verdicts, gone) = self.inventory.take_unsaved();
        if let Err(e) = self
            .store
            .save_verdicts(&self.instance, &verdicts, &gone)
            .await
        {
            tracing::warn!(error = %e, "resync verdicts not kept; after a restart the first resync reads those files again");
        }
    }

    /// What the cluster holds of this install's objects, as the resync sees it.
    pub fn inventory(&self) -> &inventory::Inventory {
        &self.inventory
    }

    /// What the next cycle would create or change and delete, without doing
    /// it: one line per object, from the git diff since the last applied commit.
    pub async fn plan(&self) -> Result<Vec<String>, ReconcileError> {
        let last = self.store.last_applied_commit(&self.state_key).await?;
        let (repo, scope, from) = (self.repo.clone(), self.scope.clone(), last.clone());
        let planned =
            tokio::task::spawn_blocking(move || plan_cycle(&repo, from.as_deref(), &scope))
                .await
                .map_err(|e| ReconcileError::Task(e.to_string()))??;
        let Some((head, steps, report)) = planned else {
            return Ok(vec!["nothing to do: the cluster is at HEAD".into()]);
        };
        let mut lines = vec![format!("HEAD {head}")];
        let untrusted = self.untrusted(last.as_deref(), &head).await?;
        for c in &untrusted {
            lines.push(format!(
                "REFUSED commit {} ({}): {}",
                &c.sha[..12.min(c.sha.len())],
                c.summary,
                c.why
            ));
        }
        if !untrusted.is_empty() {
            lines.push(
                "nothing below is applied until every commit since the last applied one is signed by issueops or a reviewer's key (review.trusted_keys), or the untrusted ones leave the branch".into(),
            );
        }
        for step in &steps {
            let verb = if step.delete { "delete" } else { "apply " };
            let mut line = format!("{verb} {}", step.object.reference());
            if !step.delete && step.check_owner {
                // An object new to us that exists already: the cycle would
                // refuse it rather than take it over.
                if let Some(owner) =
                    apply::foreign_object(&self.client, &step.object, &self.instance)
                        .await
                        .map_err(|e| ReconcileError::Kube(e.to_string()))?
                {
                    line = format!(
                        "refuse {} (exists, not managed by this install: {owner})",
                        step.object.reference()
                    );
                }
            }
            if !step.delete && step.object.resource.kind == "Job" {
                if let Some(run) = step.object.label(RUN_LABEL) {
                    if self
                        .store
                        .get_run(run)
                        .await?
                        .and_then(|r| r.run_state())
                        .is_some_and(|s| s.is_finished())
                    {
                        line = format!(
                            "skip   {} (run {run} already finished)",
                            step.object.reference()
                        );
                    }
                }
            }
            lines.push(line);
        }
        lines.extend(report.failed.into_iter().map(|f| format!("error  {f}")));
        lines.extend(report.refused.into_iter().map(|f| format!("refuse {f}")));
        Ok(lines)
    }

    /// Applies what changed between the last applied commit and HEAD.
    pub async fn reconcile_once(&self) -> Result<CycleReport, ReconcileError> {
        self.reconcile(false).await
    }

    /// One cycle; `force` lifts prune safety for this cycle only.
    pub async fn reconcile(&self, force: bool) -> Result<CycleReport, ReconcileError> {
        let started = std::time::Instant::now();
        let last = self.store.last_applied_commit(&self.state_key).await?;
        let (repo, scope) = (self.repo.clone(), self.scope.clone());
        let last_for_task = last.clone();
        let planned = tokio::task::spawn_blocking(move || {
            plan_cycle(&repo, last_for_task.as_deref(), &scope)
        })
        .await
        .map_err(|e| ReconcileError::Task(e.to_string()))??;
        let Some((head, steps, report)) = planned else {
            return Ok(CycleReport {
                head: last,
                ..Default::default()
            });
        };
        let untrusted = self.untrusted(last.as_deref(), &head).await?;
        if !untrusted.is_empty() {
            return self
                .refuse_untrusted(&head, last.as_deref(), untrusted)
                .await;
        }
        let span = tracing::info_span!("reconcile", commit = %head);
        for reason in &report.refused {
            tracing::error!(%reason, "state repo file refused");
            let audit = AuditEvent::new(kind::APPLY, "refused-out-of-scope")
                .commit(head.clone())
                .detail(json!({ "reason": reason }));
            self.store.append_audit(&audit).await?;
        }
        let deletes = steps.iter().filter(|s| s.delete).count();
        // Deletes the control plane's own lifecycle commits explain (a prune,
        // a cancel, a closed issue) are routine, even of the last issue.
        let unexplained = steps.iter().filter(|s| s.delete).any(|s| {
            !trailer(s.origin.as_ref(), "Action").is_some_and(|a| LIFECYCLE_ACTIONS.contains(&a))
        });
        if !force && unexplained && deletes <= self.safety.max_unguarded {
            // However small the install: a HEAD without a single manifest
            // (an emptied or broken state repo) never deletes everything.
            let (repo, at) = (self.repo.clone(), head.clone());
            let emptied = tokio::task::spawn_blocking(move || {
                repo.any_file(&at, desired::is_manifest).map(|any| !any)
            })
            .await
            .map_err(|e| ReconcileError::Task(e.to_string()))??;
            if emptied {
                let reason = format!(
                    "the state repo at {head} holds no manifests: this would delete every managed object ({deletes}); \
                     check the state repo, then run `issueops reconcile --force` if this is intended"
                );
                return self
                    .block(report, &head, last.as_deref(), deletes, deletes, reason)
                    .await;
            }
        }
        if !force && deletes > self.safety.max_unguarded {
            let repo = self.repo.clone();
            let from = last.clone();
            let inventory = tokio::task::spawn_blocking(move || match from {
                Some(c) => repo
                    .files_at(&c)
                    .map(|f| f.keys().filter(|p| desired::is_manifest(p)).count()),
                None => Ok(0),
            })
            .await
            .map_err(|e| ReconcileError::Task(e.to_string()))??;
            if let Some(reason) = self.safety.check(deletes, inventory) {
                return self
                    .block(report, &head, last.as_deref(), deletes, inventory, reason)
                    .await;
            }
        }
        let report = async {
            let pass = Pass::new(report);
            self.execute_all(&steps, &head, &pass).await?;
            let report = pass.into_report();
            if report.converged() {
                self.store
                    .set_last_applied_commit(&self.state_key, &head)
                    .await?;
            }
            let audit = AuditEvent::new(
                kind::RECONCILE,
                if report.converged() {
                    "converged"
                } else {
                    "incomplete"
                },
            )
            .commit(head.clone())
            .detail(json!({
                "from": last, "applied": report.applied.len(), "deleted": report.deleted.len(),
                "skipped": report.skipped, "failed": report.failed,
            }));
            self.store.append_audit(&audit).await?;
            self.keep_verdicts().await;
            tracing::info!(
                applied = report.applied.len(),
                deleted = report.deleted.len(),
                failed = report.failed.len(),
                "cycle done"
            );
            Ok::<_, ReconcileError>(report)
        }
        .instrument(span)
        .await?;
        issueops_core::metrics::duration("reconcile", started.elapsed());
        Ok(report)
    }

    /// The commits of `(last, head]` no trusted key signed (none when
    /// nothing is checked).
    pub(crate) async fn untrusted(
        &self,
        last: Option<&str>,
        head: &str,
    ) -> Result<Vec<issueops_core::state_repo::UntrustedCommit>, ReconcileError> {
        let Some(keys) = self.trusted.clone() else {
            return Ok(Vec::new());
        };
        let (repo, last, head) = (
            self.repo.clone(),
            last.map(str::to_string),
            head.to_string(),
        );
        Ok(tokio::task::spawn_blocking(move || {
            repo.untrusted_commits(last.as_deref(), &head, &keys)
        })
        .await
        .map_err(|e| ReconcileError::Task(e.to_string()))??)
    }

    /// A commit nobody trusted is on the branch: apply nothing, audit why
    /// (once per head), and say what would let it through.
    async fn refuse_untrusted(
        &self,
        head: &str,
        last: Option<&str>,
        untrusted: Vec<issueops_core::state_repo::UntrustedCommit>,
    ) -> Result<CycleReport, ReconcileError> {
        let first = &untrusted[0];
        let reason = format!(
            "commit {} ({}) is not trusted: {}; {} untrusted commit(s) since the last applied one. \
             Nothing is applied until they are signed by issueops or a reviewer's key (review.trusted_keys) \
             or leave the branch",
            &first.sha[..12.min(first.sha.len())],
            first.summary,
            first.why,
            untrusted.len()
        );
        let seen = self
            .store
            .last_audit(kind::RECONCILE, "refused-untrusted")
            .await?
            .is_some_and(|row| row.commit_sha.as_deref() == Some(head));
        if !seen {
            tracing::error!(%reason, "untrusted commit on the applied branch");
            let audit = AuditEvent::new(kind::RECONCILE, "refused-untrusted")
                .commit(head.to_string())
                .detail(json!({
                    "from": last,
                    "reason": reason,
                    "commits": untrusted.iter().map(|c| json!({ "sha": c.sha, "summary": c.summary, "why": c.why.to_string() })).collect::<Vec<_>>(),
                }));
            self.store.append_audit(&audit).await?;
        }
        Ok(CycleReport {
            head: Some(head.to_string()),
            untrusted: Some(reason),
            ..Default::default()
        })
    }

    /// Prune safety stopped the cycle: audit why, change nothing.
    async fn block(
        &self,
        mut report: CycleReport,
        head: &str,
        last: Option<&str>,
        deletes: usize,
        inventory: usize,
        reason: String,
    ) -> Result<CycleReport, ReconcileError> {
        tracing::error!(%reason, "prune safety stopped the cycle");
        let audit = AuditEvent::new(kind::RECONCILE, "blocked-prune-safety")
            .commit(head.to_string())
            .detail(json!({ "from": last, "deletes": deletes, "inventory": inventory, "reason": reason }));
        self.store.append_audit(&audit).await?;
        report.blocked = Some(reason);
        Ok(report)
    }

    /// Keeps the cycle's outcome for people (the UI's health page): one row
    /// per state key, overwritten each cycle.
    async fn record_cycle(&self, cycle: &Result<CycleReport, ReconcileError>) {
        let (head, outcome, detail) = match cycle {
            Ok(r) => (
                r.head.clone(),
                if r.untrusted.is_some() {
                    "refused-untrusted"
                } else if r.blocked.is_some() {
                    "blocked-prune-safety"
                } else if r.converged() {
                    "converged"
                } else {
                    "incomplete"
                },
                json!({
                    "applied": r.applied.len(), "deleted": r.deleted.len(),
                    "failed": r.failed, "blocked": r.blocked, "untrusted": r.untrusted,
                }),
            ),
            Err(e) => (None, "error", json!({ "error": e.to_string() })),
        };
        if let Err(e) = self
            .store
            .record_cycle(&self.state_key, head.as_deref(), outcome, &detail)
            .await
        {
            tracing::warn!(error = %e, "cannot record the reconciler's cycle");
        }
    }
}

/// The reconciler's watches; dropping this stops them.
pub struct Watches {
    _jobs: AbortOnDrop,
    _objects: AbortOnDrop,
}

/// Stops a background task when its owner stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

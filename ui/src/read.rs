//! What people read, built once for both readers: the pages render these
//! views as HTML, the JSON API (`/api/v1`) returns them as they are. A page
//! and the API never compute the same thing twice.

use crate::live::{self, ClusterView};
use crate::{AppState, UiError};
use issueops_core::audit::{kind, AuditRow};
use issueops_core::naming;
use issueops_core::now_ms;
use issueops_core::store::approvals::Approval;
use issueops_core::store::proposals::Proposal;
use issueops_core::store::runs::RunState;
use issueops_core::store::transcripts::Transcript;
use issueops_core::store::views::{
    AuditFilter, CycleRecord, DeliveryView, RunFilter, RunView, PAGE,
};
use issueops_core::store::Backend;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Largest diff shown for a commit or proposal.
const PATCH_BYTES: usize = 64 * 1024;
/// The last page anyone can ask for: far past any real list, and safe from
/// overflow in `page * PAGE`.
const MAX_PAGE: i64 = 1_000_000;
/// Audit rows on the audit page and in an API search, and in an export.
pub const AUDIT_ROWS: i64 = 200;
pub const EXPORT_ROWS: i64 = 10_000;

/// A pull request as a link.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrLink {
    /// `#12`.
    pub label: String,
    pub url: String,
}

/// A run as a row of the runs table.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunRow {
    #[serde(flatten)]
    pub run: RunView,
    /// The label (or review) that started it.
    pub trigger: String,
    pub issue_url: String,
    pub pr: Option<PrLink>,
    /// How long it ran (until now when it has not ended).
    pub duration_ms: i64,
    /// Ended on the in-process stand-in, where no agent runs.
    pub simulated: bool,
    /// Not ended yet.
    pub active: bool,
}

/// Filters and paging of the runs list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// `owner/name`, any case.
    pub repo: String,
    /// A run state (queued, proposed, accepted, committed, applied, running,
    /// succeeded, failed, cancelled, pruned).
    pub state: String,
    /// `dev` or `revise`.
    pub mode: String,
    /// The trigger: the dev label, the revise label, or `review`.
    pub label: String,
    /// From 0; 20 runs a page.
    pub page: i64,
}

/// One page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsPage {
    pub runs: Vec<RunRow>,
    /// How many runs match the filters.
    pub total: i64,
    pub page: i64,
    pub pages: i64,
    pub page_size: i64,
}

/// A line of a diff with how it is shown: `add`, `del`, `hunk`, `meta`,
/// `ctx` (or `error`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiffLine {
    pub class: &'static str,
    pub text: String,
}

/// A commit trailer (`Issueops-Run: …`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Trailer {
    pub key: String,
    pub value: String,
}

/// The state-repo commit of a run, or why it cannot be shown.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct CommitShown {
    pub sha: Option<String>,
    pub summary: Option<String>,
    pub trailers: Vec<Trailer>,
    /// The diff, at most 64 KiB.
    pub lines: Vec<DiffLine>,
    pub error: Option<String>,
}

/// One object of a run, and its state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TreeNode {
    pub kind: String,
    pub name: String,
    /// What the cluster says now (a Job's or a pod's phase, a namespace's), or
    /// the reconciler's last verb for it (`applied`, `unchanged`, `deleted`).
    pub state: String,
}

/// An object in the run's namespace, with the pods of its Job.
#[derive(Debug, Serialize, ToSchema)]
pub struct TreeObject {
    #[serde(flatten)]
    pub node: TreeNode,
    pub pods: Vec<TreeNode>,
}

/// The run's objects as a tree, as Argo CD's resource tree: its namespace,
/// the objects the reconciler applied into it, the Job's pods.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceTree {
    pub namespace: TreeNode,
    pub objects: Vec<TreeObject>,
}

/// The tree from the run's audit rows (what the reconciler applied or
/// deleted, last verb first) and the cluster's answer now.
fn resource_tree(namespace: &str, timeline: &[AuditRow], cluster: &ClusterView) -> ResourceTree {
    let mut last: Vec<(String, String, String)> = Vec::new(); // kind, name, verb
    for row in timeline {
        if row.kind != kind::APPLY && row.kind != kind::DELETE {
            continue;
        }
        let Some(reference) = &row.object else {
            continue;
        };
        let parts: Vec<&str> = reference.split('/').collect();
        let (kind, name) = match parts.as_slice() {
            [kind, ns, name] if *ns == namespace => (*kind, *name),
            [kind, name] if *kind != "Namespace" => (*kind, *name),
            _ => continue,
        };
        let verb = if row.kind == kind::DELETE {
            "deleted".to_string()
        } else {
            row.outcome.clone()
        };
        match last.iter_mut().find(|(k, n, _)| k == kind && n == name) {
            Some(entry) => entry.2 = verb,
            None => last.push((kind.to_string(), name.to_string(), verb)),
        }
    }
    let namespace_state = match (cluster.namespace_exists, &cluster.namespace_phase) {
        (Some(true), Some(phase)) => phase.clone(),
        (Some(true), None) => "exists".into(),
        (Some(false), _) => "absent".into(),
        (None, _) => "unknown".into(),
    };
    let objects = last
        .into_iter()
        .map(|(kind, name, verb)| {
            let live = (kind == "Job")
                .then(|| cluster.jobs.iter().find(|j| j.name == name))
                .flatten();
            let state = match live {
                Some(j) if j.succeeded > 0 => "succeeded".to_string(),
                Some(j) if j.failed > 0 && j.active == 0 => "failed".to_string(),
                Some(j) if j.active > 0 => "running".to_string(),
                Some(_) => "created".to_string(),
                None => verb,
            };
            let pods = if kind == "Job" {
                cluster
                    .pods
                    .iter()
                    .map(|p| TreeNode {
                        kind: "Pod".into(),
                        name: p.name.clone(),
                        state: p.phase.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            TreeObject {
                node: TreeNode { kind, name, state },
                pods,
            }
        })
        .collect();
    ResourceTree {
        namespace: TreeNode {
            kind: "Namespace".into(),
            name: namespace.to_string(),
            state: namespace_state,
        },
        objects,
    }
}

/// One run: its row, its audit timeline (oldest first), its state-repo
/// commit, what the cluster holds for it now, and the agent's transcript
/// kept when its Job ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    pub run: RunRow,
    pub timeline: Vec<AuditRow>,
    pub commit: Option<CommitShown>,
    pub cluster: ClusterView,
    /// The run's objects: namespace → objects → the Job's pods.
    pub tree: ResourceTree,
    /// Which cluster this is, for people.
    pub cluster_description: String,
    /// The name of the run's token Secret (its value is never shown).
    pub token_secret_name: String,
    pub transcript: Option<Transcript>,
    /// The staff UI's page of the run's issue.
    pub issue_path: String,
}

/// An issue: its namespace now and every run it had.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssueDetail {
    pub repo: String,
    pub number: i64,
    pub namespace: String,
    /// The namespace's phase, `absent`, or `unknown: …`.
    pub ns_state: String,
    pub issue_url: String,
    pub runs: Vec<RunRow>,
    pub total: i64,
}

/// Approval requests: the ones waiting, then the decided or expired ones
/// (newest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalsView {
    pub pending: Vec<Approval>,
    pub history: Vec<Approval>,
}

/// A proposal waiting for review, with the diff of its branch.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingProposal {
    pub proposal: Proposal,
    pub lines: Vec<DiffLine>,
}

/// Proposals: the ones waiting, then the decided ones (newest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProposalsView {
    pub pending: Vec<PendingProposal>,
    pub history: Vec<Proposal>,
}

/// What to search the audit trail by; empty fields match everything.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub delivery: String,
    pub run: String,
    /// A commit sha or its prefix (hex).
    pub commit: String,
    pub actor: String,
    /// An audit kind, such as `delivery.received` or `job.status`.
    pub kind: String,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        AuditFilter {
            delivery_id: self.delivery.trim().into(),
            run_id: self.run.trim().into(),
            commit: self.commit.trim().to_ascii_lowercase(),
            actor: self.actor.trim().into(),
            kind: self.kind.trim().into(),
        }
    }

    pub fn query_string(&self) -> String {
        [
            ("delivery", &self.delivery),
            ("run", &self.run),
            ("commit", &self.commit),
            ("actor", &self.actor),
            ("kind", &self.kind),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", crate::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// The kinds of audit rows people filter by.
pub const KINDS: &[&str] = &[
    kind::DELIVERY_RECEIVED,
    kind::DELIVERY_REJECTED,
    kind::DELIVERY_DUPLICATE,
    kind::DECISION,
    kind::COMMIT,
    kind::APPLY,
    kind::DELETE,
    kind::RECONCILE,
    kind::JOB_STATUS,
    kind::PRUNE,
    kind::ROLLBACK,
    kind::APPROVAL,
    kind::CREDENTIALS,
    kind::AGENT_RESULT,
    kind::LABELS,
    kind::UI_SIGNIN,
];

/// Filters and paging of the deliveries list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `1`: only deliveries not processed yet (dead letters included).
    pub stuck: String,
    /// From 0; 20 deliveries a page.
    pub page: i64,
}

/// One page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesPage {
    pub rows: Vec<DeliveryView>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
    pub stuck: bool,
}

/// A refusal of the reconciler's, while no converged cycle came after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alert {
    pub at: i64,
    pub commit_sha: Option<String>,
    /// What the reconciler recorded (JSON).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// The last `audit verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verification {
    pub at: i64,
    /// `verified` or `broken`.
    pub outcome: String,
    pub actor: Option<String>,
    /// Rows and commits checked, and the first break (JSON).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// How the reconciler, the inbox and the audit trail are doing.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub cycle: Option<CycleRecord>,
    /// The last commit the reconciler applied, and the state repo's head.
    pub applied: Option<String>,
    pub head: Option<String>,
    pub head_error: Option<String>,
    pub in_sync: bool,
    /// The prune guard, tripped now (no converged cycle since).
    pub tripped: Option<AuditRow>,
    /// The last time it tripped.
    pub blocked: Option<AuditRow>,
    pub resync: Option<AuditRow>,
    /// Untrusted commits on the applied branch, refused now.
    pub untrusted: Option<Alert>,
    /// Deliveries not processed yet, and dead letters.
    pub stuck: i64,
    pub dead: i64,
    pub verification: Option<Verification>,
    pub cluster_description: String,
    /// `SQLite` or `PostgreSQL`.
    pub database: String,
    pub state_repo: String,
}

fn page_of(page: i64) -> i64 {
    page.clamp(0, MAX_PAGE)
}

fn diff_lines(patch: &str) -> Vec<DiffLine> {
    patch
        .lines()
        .map(|line| {
            let class = match line.chars().next() {
                Some('+') => "add",
                Some('-') => "del",
                Some('@') => "hunk",
                Some('d') | Some('i')
                    if line.starts_with("diff ") || line.starts_with("index ") =>
                {
                    "meta"
                }
                _ => "ctx",
            };
            DiffLine {
                class,
                text: line.to_string(),
            }
        })
        .collect()
}

fn database_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

impl AppState {
    fn web(&self, repo: &str, what: &str, number: i64) -> String {
        format!(
            "{}/{repo}/{what}/{number}",
            self.parts.config.ui.github_web_url.trim_end_matches('/')
        )
    }

    pub(crate) fn run_row(&self, run: RunView, now: i64) -> RunRow {
        let config = &self.parts.config;
        let trigger = if run.event.as_deref() == Some("pull_request_review") {
            "review: changes requested".to_string()
        } else if run.mode == "revise" {
            config.revise_label.clone()
        } else {
            config.trigger_label.clone()
        };
        let pr = match (&run.pr_url, run.pr_number.or(run.pull_request)) {
            (Some(url), Some(n)) => Some(PrLink {
                label: format!("#{n}"),
                url: url.clone(),
            }),
            (None, Some(n)) => Some(PrLink {
                label: format!("#{n}"),
                url: self.web(&run.repo, "pull", n),
            }),
            _ => None,
        };
        let state = RunState::parse(&run.state);
        RunRow {
            issue_url: self.web(&run.repo, "issues", run.issue_number),
            trigger,
            pr,
            duration_ms: run.finished_at.unwrap_or(now) - run.created_at,
            simulated: issueops_core::store::runs::simulated(run.reason.as_deref()),
            active: state.is_some_and(|s| !s.is_finished()),
            run,
        }
    }

    /// The trigger labels people filter by.
    pub(crate) fn trigger_labels(&self) -> [String; 3] {
        let config = &self.parts.config;
        [
            config.trigger_label.clone(),
            config.revise_label.clone(),
            "review".to_string(),
        ]
    }

    pub async fn runs_page(&self, q: &RunsQuery) -> Result<RunsPage, UiError> {
        let config = &self.parts.config;
        if !q.state.is_empty() && RunState::parse(&q.state).is_none() {
            return Err(UiError::BadRequest(format!(
                "there is no run state {:?}",
                q.state
            )));
        }
        if !q.mode.is_empty() && !matches!(q.mode.as_str(), "dev" | "revise") {
            return Err(UiError::BadRequest(format!(
                "there is no mode {:?}: dev or revise",
                q.mode
            )));
        }
        let mut filter = RunFilter {
            repo: q.repo.clone(),
            state: q.state.clone(),
            mode: q.mode.clone(),
            ..Default::default()
        };
        match q.label.as_str() {
            "" => {}
            l if l == config.trigger_label => {
                filter.event = "issues".into();
                filter.mode = "dev".into();
            }
            l if l == config.revise_label => {
                filter.event = "issues".into();
                filter.mode = "revise".into();
            }
            "review" => filter.event = "pull_request_review".into(),
            other => {
                return Err(UiError::BadRequest(format!(
                    "{other:?} is not a trigger: {}",
                    self.trigger_labels().join(", ")
                )))
            }
        }
        if !filter.mode.is_empty() && !q.mode.is_empty() && filter.mode != q.mode {
            filter.state = "no-such-state".into(); // label and mode disagree: nothing matches
        }
        let page = page_of(q.page);
        let (runs, total) = self.parts.store.runs_page(&filter, page).await?;
        let now = now_ms();
        Ok(RunsPage {
            runs: runs.into_iter().map(|r| self.run_row(r, now)).collect(),
            total,
            page,
            pages: (total + PAGE - 1) / PAGE,
            page_size: PAGE,
        })
    }

    pub async fn run_detail(&self, id: &str) -> Result<RunDetail, UiError> {
        let parts = &self.parts;
        let Some(view) = parts.store.run_view(id).await? else {
            return Err(UiError::NotFound(format!("there is no run {id:?}")));
        };
        let mut timeline = parts.store.audit_rows_for_run(id).await?;
        timeline.reverse();
        let commit = match &view.commit_sha {
            Some(sha) => {
                let repo = parts.repo.clone();
                let sha = sha.clone();
                let shown = tokio::task::spawn_blocking(move || {
                    let info = repo.commit_info(&sha)?;
                    let patch = repo.patch(&sha, PATCH_BYTES)?;
                    Ok::<_, issueops_core::state_repo::StateRepoError>((info, patch))
                })
                .await
                .map_err(|e| UiError::Internal(e.to_string()))?;
                Some(match shown {
                    Ok((info, patch)) => CommitShown {
                        sha: Some(info.sha),
                        summary: Some(info.summary),
                        trailers: info
                            .trailers
                            .into_iter()
                            .map(|(key, value)| Trailer { key, value })
                            .collect(),
                        lines: diff_lines(&patch),
                        error: None,
                    },
                    Err(e) => CommitShown {
                        error: Some(e.to_string()),
                        ..CommitShown::default()
                    },
                })
            }
            None => None,
        };
        let recorded_secret = parts
            .store
            .agent_secrets()
            .await?
            .iter()
            .any(|(ns, _, _)| ns == &view.namespace);
        let cluster = live::run_cluster(
            &parts.cluster,
            &view,
            &parts.config.job.github_token_secret,
            Some(recorded_secret),
        )
        .await;
        let transcript = parts.store.transcript(id).await?;
        let tree = resource_tree(&view.namespace, &timeline, &cluster);
        let issue_path = format!("/issues/{}/{}", view.repo, view.issue_number);
        Ok(RunDetail {
            run: self.run_row(view, now_ms()),
            timeline,
            commit,
            cluster,
            tree,
            cluster_description: parts.cluster_description.clone(),
            token_secret_name: parts.config.job.github_token_secret.clone(),
            transcript,
            issue_path,
        })
    }

    pub async fn issue_detail(
        &self,
        owner: &str,
        repo: &str,
        number: &str,
    ) -> Result<IssueDetail, UiError> {
        let number: i64 = number
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| UiError::BadRequest(format!("{number:?} is not an issue number")))?;
        let full = format!("{owner}/{repo}");
        let namespace = naming::namespace_for_issue(&full, number as u64);
        let filter = RunFilter {
            repo: full.clone(),
            issue_number: Some(number),
            ..Default::default()
        };
        let (runs, total) = self.parts.store.runs_page(&filter, 0).await?;
        let now = now_ms();
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.parts.cluster.clone());
        let ns_state = match tokio::time::timeout(
            Duration::from_secs(5),
            namespaces.get_opt(&namespace),
        )
        .await
        {
            Ok(Ok(Some(ns))) => ns
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "exists".into()),
            Ok(Ok(None)) => "absent".into(),
            Ok(Err(e)) => format!("unknown: {e}"),
            Err(_) => "unknown: the API server did not answer".into(),
        };
        Ok(IssueDetail {
            issue_url: self.web(&full, "issues", number),
            repo: full,
            number,
            namespace,
            ns_state,
            runs: runs.into_iter().map(|r| self.run_row(r, now)).collect(),
            total,
        })
    }

    pub async fn approvals_view(&self) -> Result<ApprovalsView, UiError> {
        let all = self.parts.store.list_approvals().await?;
        let now = now_ms();
        let (pending, mut history): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|a| a.state == "pending" && a.expires_at > now);
        history.sort_by_key(|a| std::cmp::Reverse(a.decided_at.unwrap_or(a.created_at)));
        Ok(ApprovalsView { pending, history })
    }

    pub async fn proposals_view(&self) -> Result<ProposalsView, UiError> {
        let parts = &self.parts;
        let all = parts.store.list_proposals(false).await?;
        let now = now_ms();
        let mut pending = Vec::new();
        let mut history = Vec::new();
        for p in all {
            if p.state == "pending" && p.expires_at > now {
                let repo = parts.repo.clone();
                let sha = p.commit_sha.clone();
                let patch = tokio::task::spawn_blocking(move || repo.patch(&sha, PATCH_BYTES))
                    .await
                    .map_err(|e| UiError::Internal(e.to_string()))?;
                let lines = match patch {
                    Ok(patch) => diff_lines(&patch),
                    Err(e) => vec![DiffLine {
                        class: "error",
                        text: e.to_string(),
                    }],
                };
                pending.push(PendingProposal { proposal: p, lines });
            } else {
                history.push(p);
            }
        }
        history.sort_by_key(|p| std::cmp::Reverse(p.decided_at.unwrap_or(p.created_at)));
        Ok(ProposalsView { pending, history })
    }

    /// The newest `limit` audit rows matching `q`, newest first.
    pub async fn audit_search(&self, q: &AuditQuery, limit: i64) -> Result<Vec<AuditRow>, UiError> {
        let commit = q.commit.trim();
        if !commit.is_empty() && !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(UiError::BadRequest(format!(
                "{:?} is not a commit sha",
                q.commit
            )));
        }
        Ok(self.parts.store.search_audit(&q.filter(), limit).await?)
    }

    /// The matching audit rows as JSON lines, oldest first (like `issueops audit`).
    pub async fn audit_jsonl(&self, q: &AuditQuery) -> Result<String, UiError> {
        let mut rows = self.audit_search(q, EXPORT_ROWS).await?;
        rows.reverse();
        let mut body = String::new();
        for row in &rows {
            body.push_str(
                &serde_json::to_string(row).map_err(|e| UiError::Internal(e.to_string()))?,
            );
            body.push('\n');
        }
        Ok(body)
    }

    pub async fn deliveries_page(&self, q: &DeliveriesQuery) -> Result<DeliveriesPage, UiError> {
        let stuck = !q.stuck.is_empty() && q.stuck != "0";
        let page = page_of(q.page);
        let (rows, total) = self.parts.store.deliveries_page(stuck, page).await?;
        Ok(DeliveriesPage {
            rows,
            total,
            page,
            pages: (total + PAGE - 1) / PAGE,
            stuck,
        })
    }

    pub async fn health_view(&self) -> Result<HealthView, UiError> {
        let parts = &self.parts;
        let store = &parts.store;
        let cycle = store.last_cycle(&parts.state_key).await?;
        let applied = store.last_applied_commit(&parts.state_key).await?;
        let repo = parts.repo.clone();
        let head = tokio::task::spawn_blocking(move || repo.head())
            .await
            .map_err(|e| UiError::Internal(e.to_string()))?;
        let (head, head_error) = match head {
            Ok(h) => (h, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let blocked = store
            .last_audit(kind::RECONCILE, "blocked-prune-safety")
            .await?;
        let converged = store.last_audit(kind::RECONCILE, "converged").await?;
        let since_converged = |row: &AuditRow| converged.as_ref().is_none_or(|c| c.id < row.id);
        // Tripped while no converged cycle came after the block.
        let tripped = blocked.as_ref().filter(|b| since_converged(b)).cloned();
        let untrusted = store
            .last_audit(kind::RECONCILE, "refused-untrusted")
            .await?
            .filter(since_converged)
            .map(|r| Alert {
                at: r.at,
                commit_sha: r.commit_sha,
                detail: serde_json::from_str(&r.detail).unwrap_or_default(),
            });
        let resync = store.last_audit(kind::RECONCILE, "resynced").await?;
        let (_, stuck) = store.deliveries_page(true, 0).await?;
        let dead = store.dead_deliveries().await?.len() as i64;
        let verification = store
            .last_audit_of_kind(issueops_core::audit::verify::VERIFY_KIND)
            .await?
            .map(|row| Verification {
                at: row.at,
                outcome: row.outcome,
                actor: row.actor,
                detail: serde_json::from_str(&row.detail).unwrap_or_default(),
            });
        Ok(HealthView {
            cycle,
            in_sync: head.is_some() && head == applied,
            applied,
            head,
            head_error,
            tripped,
            blocked,
            resync,
            untrusted,
            stuck,
            dead,
            verification,
            cluster_description: parts.cluster_description.clone(),
            database: database_name(store.backend()).to_string(),
            state_repo: parts.repo.location(),
        })
    }
}

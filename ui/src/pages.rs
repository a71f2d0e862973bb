//! The pages people read: runs, a run, an issue, approvals, audit,
//! deliveries, health; and the live-update stream.

use crate::{live, AppState, Signed, UiError};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use issueops_core::audit::{kind, AuditRow};
use issueops_core::naming;
use issueops_core::now_ms;
use issueops_core::store::runs::RunState;
use issueops_core::store::views::{AuditFilter, RunFilter, RunView, PAGE};
use minijinja::context;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest diff shown on a run page.
const PATCH_BYTES: usize = 64 * 1024;
/// Audit rows on the audit page, and in an export.
const AUDIT_ROWS: i64 = 200;
const EXPORT_ROWS: i64 = 10_000;

/// A run as a row of the runs table.
#[derive(Serialize)]
struct RunRow {
    #[serde(flatten)]
    run: RunView,
    trigger: String,
    issue_url: String,
    pr: Option<(String, String)>,
    duration_ms: i64,
    simulated: bool,
    active: bool,
}

impl AppState {
    fn web(&self, repo: &str, what: &str, number: i64) -> String {
        format!(
            "{}/{repo}/{what}/{number}",
            self.parts.config.ui.github_web_url.trim_end_matches('/')
        )
    }

    fn run_row(&self, run: RunView, now: i64) -> RunRow {
        let config = &self.parts.config;
        let trigger = if run.event.as_deref() == Some("pull_request_review") {
            "review: changes requested".to_string()
        } else if run.mode == "revise" {
            config.revise_label.clone()
        } else {
            config.trigger_label.clone()
        };
        let pr = match (&run.pr_url, run.pr_number.or(run.pull_request)) {
            (Some(url), Some(n)) => Some((format!("#{n}"), url.clone())),
            (None, Some(n)) => Some((format!("#{n}"), self.web(&run.repo, "pull", n))),
            _ => None,
        };
        let state = RunState::parse(&run.state);
        RunRow {
            issue_url: self.web(&run.repo, "issues", run.issue_number),
            trigger,
            pr,
            duration_ms: run.finished_at.unwrap_or(now) - run.created_at,
            simulated: run
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("simulated")),
            active: state.is_some_and(|s| !s.is_finished()),
            run,
        }
    }

    /// Context every page has: who is signed in, the navigation, and the
    /// audit high-water mark the page shows (for live updates).
    async fn common(&self, who: &Signed, nav: &str) -> Result<minijinja::Value, UiError> {
        let mark = self.parts.store.audit_high_water().await?;
        Ok(context! {
            mark,
            user => who.0.login,
            role => who.0.role,
            csrf => who.0.csrf,
            nav,
            now => now_ms(),
            simulated_cluster => self.parts.simulated,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RunsQuery {
    repo: String,
    state: String,
    mode: String,
    label: String,
    page: i64,
}

pub async fn runs(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<RunsQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "runs").await?;
    let config = &state.parts.config;
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
    let labels = [
        config.trigger_label.clone(),
        config.revise_label.clone(),
        "review".to_string(),
    ];
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
                labels.join(", ")
            )))
        }
    }
    if !filter.mode.is_empty() && !q.mode.is_empty() && filter.mode != q.mode {
        filter.state = "no-such-state".into(); // label and mode disagree: nothing matches
    }
    let page = q.page.max(0);
    let (runs, total) = state.parts.store.runs_page(&filter, page).await?;
    let now = now_ms();
    let rows: Vec<RunRow> = runs.into_iter().map(|r| state.run_row(r, now)).collect();
    let query = |p: i64| {
        let mut pairs = vec![];
        for (k, v) in [
            ("repo", &q.repo),
            ("state", &q.state),
            ("mode", &q.mode),
            ("label", &q.label),
        ] {
            if !v.is_empty() {
                pairs.push(format!("{k}={}", crate::encode(v)));
            }
        }
        pairs.push(format!("page={p}"));
        format!("/runs?{}", pairs.join("&"))
    };
    let states: Vec<&str> = RunState::all().iter().map(|s| s.as_str()).collect();
    state.render(
        "runs.html",
        context! {
            ..common,
            ..context! {
                runs => rows,
                total,
                page,
                pages => (total + PAGE - 1) / PAGE,
                prev => (page > 0).then(|| query(page - 1)),
                next => ((page + 1) * PAGE < total).then(|| query(page + 1)),
                f_repo => q.repo, f_state => q.state, f_mode => q.mode, f_label => q.label,
                repos => config.repos, states, labels,
            }
        },
    )
}

pub async fn run(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "runs").await?;
    let parts = &state.parts;
    let Some(view) = parts.store.run_view(&id).await? else {
        return Err(UiError::NotFound(format!("there is no run {id:?}")));
    };
    let mut timeline = parts.store.audit_rows_for_run(&id).await?;
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
            match shown {
                Ok((info, patch)) => Some(context! {
                    sha => info.sha,
                    summary => info.summary,
                    trailers => info.trailers,
                    lines => patch.lines().map(diff_line).collect::<Vec<_>>(),
                }),
                Err(e) => Some(context! { error => e.to_string() }),
            }
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
    let issue_path = format!("/issues/{}/{}", view.repo, view.issue_number);
    let row = state.run_row(view, now_ms());
    state.render(
        "run.html",
        context! {
            ..common,
            ..context! {
                run => row,
                timeline,
                commit,
                cluster,
                cluster_description => parts.cluster_description,
                token_secret_name => parts.config.job.github_token_secret,
                issue_path,
            }
        },
    )
}

/// A diff line with the class it is shown in.
fn diff_line(line: &str) -> (&'static str, String) {
    let class = match line.chars().next() {
        Some('+') => "add",
        Some('-') => "del",
        Some('@') => "hunk",
        Some('d') | Some('i') if line.starts_with("diff ") || line.starts_with("index ") => "meta",
        _ => "ctx",
    };
    (class, line.to_string())
}

pub async fn issue(
    State(state): State<AppState>,
    who: Signed,
    Path((owner, repo, number)): Path<(String, String, String)>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "runs").await?;
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
    let (runs, total) = state.parts.store.runs_page(&filter, 0).await?;
    let now = now_ms();
    let rows: Vec<RunRow> = runs.into_iter().map(|r| state.run_row(r, now)).collect();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(state.parts.cluster.clone());
    let ns_state =
        match tokio::time::timeout(Duration::from_secs(5), namespaces.get_opt(&namespace)).await {
            Ok(Ok(Some(ns))) => ns
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "exists".into()),
            Ok(Ok(None)) => "absent".into(),
            Ok(Err(e)) => format!("unknown: {e}"),
            Err(_) => "unknown: the API server did not answer".into(),
        };
    state.render(
        "issue.html",
        context! {
            ..common,
            ..context! {
                repo => full,
                number,
                namespace,
                ns_state,
                issue_url => state.web(&format!("{owner}/{repo}"), "issues", number),
                runs => rows,
                total,
            }
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ApprovalsQuery {
    decided: String,
}

pub async fn approvals(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<ApprovalsQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "approvals").await?;
    let all = state.parts.store.list_approvals().await?;
    let now = now_ms();
    let (pending, history): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|a| a.state == "pending" && a.expires_at > now);
    let mut history = history;
    history.sort_by_key(|a| std::cmp::Reverse(a.decided_at.unwrap_or(a.created_at)));
    let decided = if q.decided.is_empty() {
        None
    } else {
        state.parts.store.get_approval(&q.decided).await?
    };
    state.render(
        "approvals.html",
        context! {
            ..common,
            ..context! { pending, history, decided }
        },
    )
}

/// Proposals waiting for review, each with what the reviewer must judge and
/// the diff of its branch; the decided ones below.
pub async fn proposals(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<ApprovalsQuery>,
) -> Result<Response, UiError> {
    let common = state.common(&who, "proposals").await?;
    let parts = &state.parts;
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
                Ok(patch) => patch.lines().map(diff_line).collect::<Vec<_>>(),
                Err(e) => vec![("error", e.to_string())],
            };
            pending.push(context! { p, lines });
        } else {
            history.push(p);
        }
    }
    history.sort_by_key(|p| std::cmp::Reverse(p.decided_at.unwrap_or(p.created_at)));
    let decided = if q.decided.is_empty() {
        None
    } else {
        parts.store.get_proposal(&q.decided).await?
    };
    state.render(
        "proposals.html",
        context! {
            ..common,
            ..context! { pending, history, decided }
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    delivery: String,
    run: String,
    commit: String,
    actor: String,
    kind: String,
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

    fn query_string(&self) -> String {
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

const KINDS: &[&str] = &[
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

pub async fn audit(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<AuditQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "audit").await?;
    if !q.commit.trim().is_empty() && !q.commit.trim().chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(UiError::BadRequest(format!(
            "{:?} is not a commit sha",
            q.commit
        )));
    }
    let rows = state
        .parts
        .store
        .search_audit(&q.filter(), AUDIT_ROWS)
        .await?;
    let shown = rows.len();
    state.render(
        "audit.html",
        context! {
            ..common,
            ..context! {
                rows, shown, limit => AUDIT_ROWS, kinds => KINDS,
                f_delivery => q.delivery, f_run => q.run, f_commit => q.commit,
                f_actor => q.actor, f_kind => q.kind,
                export => format!("/audit.jsonl?{}", q.query_string()),
            }
        },
    )
}

/// The matching audit rows as JSON lines, oldest first (like `issueops audit`).
pub async fn audit_export(
    State(state): State<AppState>,
    _who: Signed,
    Query(q): Query<AuditQuery>,
) -> Result<Response, UiError> {
    let mut rows: Vec<AuditRow> = state
        .parts
        .store
        .search_audit(&q.filter(), EXPORT_ROWS)
        .await?;
    rows.reverse();
    let mut body = String::new();
    for row in &rows {
        body.push_str(&serde_json::to_string(row).map_err(|e| UiError::Internal(e.to_string()))?);
        body.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"issueops-audit.jsonl\"",
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeliveriesQuery {
    stuck: String,
    page: i64,
}

pub async fn deliveries(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "deliveries").await?;
    let stuck = !q.stuck.is_empty() && q.stuck != "0";
    let page = q.page.max(0);
    let (rows, total) = state.parts.store.deliveries_page(stuck, page).await?;
    let link = |p: i64| {
        format!(
            "/deliveries?{}page={p}",
            if stuck { "stuck=1&" } else { "" }
        )
    };
    state.render(
        "deliveries.html",
        context! {
            ..common,
            ..context! {
                rows, total, page, stuck,
                prev => (page > 0).then(|| link(page - 1)),
                next => ((page + 1) * PAGE < total).then(|| link(page + 1)),
            }
        },
    )
}

pub async fn health(State(state): State<AppState>, who: Signed) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "health").await?;
    let parts = &state.parts;
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
    // Tripped while no converged cycle came after the block.
    let tripped = blocked
        .as_ref()
        .filter(|b| converged.as_ref().is_none_or(|c| c.id < b.id))
        .cloned();
    let refused = store
        .last_audit(kind::RECONCILE, "refused-untrusted")
        .await?;
    // Untrusted while no converged cycle came after the refusal.
    let untrusted = refused
        .filter(|r| converged.as_ref().is_none_or(|c| c.id < r.id))
        .map(|r| {
            let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();
            context! { at => r.at, head => r.commit_sha, detail }
        });
    let resync = store.last_audit(kind::RECONCILE, "resynced").await?;
    let (_, stuck) = store.deliveries_page(true, 0).await?;
    let dead = store.dead_deliveries().await?.len();
    let verification = store
        .last_audit_of_kind(issueops_core::audit::verify::VERIFY_KIND)
        .await?
        .map(|row| {
            let detail: serde_json::Value = serde_json::from_str(&row.detail).unwrap_or_default();
            context! { at => row.at, outcome => row.outcome, actor => row.actor, detail }
        });
    state.render(
        "health.html",
        context! {
            ..common,
            ..context! {
                cycle, applied, head, head_error,
                in_sync => head.is_some() && head == applied,
                tripped, blocked, resync, untrusted,
                stuck, dead, verification,
                cluster_description => parts.cluster_description,
                database => format!("{:?}", store.backend()),
                state_repo => parts.repo.location(),
            }
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventsQuery {
    /// The audit high-water mark the page was rendered at: a change since
    /// then is sent at once, so nothing between rendering the page and
    /// connecting is missed.
    since: String,
}

/// Server-sent events: `change` whenever anything new is audited (a run
/// moved, a request was decided), polled once a second per open page.
pub async fn events(
    State(state): State<AppState>,
    _who: Signed,
    Query(q): Query<EventsQuery>,
) -> Response {
    let store = state.parts.store.clone();
    let since = q.since.trim().parse::<i64>().ok();
    let stream = futures::stream::unfold((store, since), |(store, last)| async move {
        loop {
            let Ok(mark) = store.audit_high_water().await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            match last {
                Some(l) if l != mark => {
                    let event = Event::default().event("change").data(mark.to_string());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (store, Some(mark)),
                    ));
                }
                None => {
                    let event = Event::default().event("hello").data(mark.to_string());
                    return Some((Ok(event), (store, Some(mark))));
                }
                Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    });
    (
        StatusCode::OK,
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response()
}

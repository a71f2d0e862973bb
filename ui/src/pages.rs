//! The pages people read: runs, a run, an issue, approvals, audit,
//! deliveries, health; and the live-update stream.

use crate::read::{AuditQuery, DeliveriesQuery, RunsQuery, AUDIT_ROWS, KINDS};
use crate::{AppState, Signed, UiError};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use issueops_core::now_ms;
use issueops_core::store::runs::RunState;
use issueops_core::store::views::PAGE;
use minijinja::context;
use serde::{Deserialize, Serialize};
use std::time::Duration;

impl AppState {
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

/// A page's context: the common part, then the view's fields, then extras.
fn page(
    common: minijinja::Value,
    view: &impl Serialize,
    extra: minijinja::Value,
) -> minijinja::Value {
    context! { ..common, ..minijinja::Value::from_serialize(view), ..extra }
}

pub async fn runs(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<RunsQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "runs").await?;
    let view = state.runs_page(&q).await?;
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
    let (page_no, total) = (view.page, view.total);
    state.render(
        "runs.html",
        page(
            common,
            &view,
            context! {
                prev => (page_no > 0).then(|| query(page_no - 1)),
                next => ((page_no + 1) * PAGE < total).then(|| query(page_no + 1)),
                f_repo => q.repo, f_state => q.state, f_mode => q.mode, f_label => q.label,
                repos => state.parts.config.repos, states, labels => state.trigger_labels(),
            },
        ),
    )
}

pub async fn run(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "runs").await?;
    let view = state.run_detail(&id).await?;
    state.render("run.html", page(common, &view, context! {}))
}

pub async fn issue(
    State(state): State<AppState>,
    who: Signed,
    Path((owner, repo, number)): Path<(String, String, String)>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "runs").await?;
    let view = state.issue_detail(&owner, &repo, &number).await?;
    state.render("issue.html", page(common, &view, context! {}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DecidedQuery {
    decided: String,
}

pub async fn approvals(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<DecidedQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "approvals").await?;
    let view = state.approvals_view().await?;
    let decided = if q.decided.is_empty() {
        None
    } else {
        state.parts.store.get_approval(&q.decided).await?
    };
    state.render("approvals.html", page(common, &view, context! { decided }))
}

/// Proposals waiting for review, each with what the reviewer must judge and
/// the diff of its branch; the decided ones below.
pub async fn proposals(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<DecidedQuery>,
) -> Result<Response, UiError> {
    let common = state.common(&who, "proposals").await?;
    let view = state.proposals_view().await?;
    let decided = if q.decided.is_empty() {
        None
    } else {
        state.parts.store.get_proposal(&q.decided).await?
    };
    state.render("proposals.html", page(common, &view, context! { decided }))
}

pub async fn audit(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<AuditQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "audit").await?;
    let rows = state.audit_search(&q, AUDIT_ROWS).await?;
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
    let body = state.audit_jsonl(&q).await?;
    Ok(jsonl(body))
}

/// An audit export as a download.
pub(crate) fn jsonl(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"issueops-audit.jsonl\"",
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn deliveries(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "deliveries").await?;
    let view = state.deliveries_page(&q).await?;
    let stuck = view.stuck;
    let link = |p: i64| {
        format!(
            "/deliveries?{}page={p}",
            if stuck { "stuck=1&" } else { "" }
        )
    };
    let (page_no, total) = (view.page, view.total);
    state.render(
        "deliveries.html",
        page(
            common,
            &view,
            context! {
                prev => (page_no > 0).then(|| link(page_no - 1)),
                next => ((page_no + 1) * PAGE < total).then(|| link(page_no + 1)),
            },
        ),
    )
}

pub async fn dashboard(State(state): State<AppState>, who: Signed) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "dashboard").await?;
    let view = state.dashboard_view().await?;
    state.render("dashboard.html", page(common, &view, context! {}))
}

pub async fn health(State(state): State<AppState>, who: Signed) -> Result<Response, UiError> {
    // The live-update mark first: a change after it shows up on the page.
    let common = state.common(&who, "health").await?;
    let view = state.health_view().await?;
    state.render("health.html", page(common, &view, context! {}))
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

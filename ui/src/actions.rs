//! What people do: sign in and out, approve or deny a request, cancel a
//! run. Every form post needs the session's CSRF token; decisions need the
//! approver role.

use crate::oauth::role_for;
use crate::session::{cookie, random_token, Role, Session, GITHUB, LOOPBACK, SESSION_COOKIE};
use crate::{AppState, Signed, UiError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, PrivateCookieJar};
use issueops_control_plane::ControlPlaneError;
use issueops_core::audit::{kind, AuditEvent};
use minijinja::context;
use serde::{Deserialize, Serialize};

const OAUTH_COOKIE: &str = "issueops_oauth";
/// Longest reason kept.
const MAX_REASON: usize = 500;

/// Only local paths: a `next` pointing elsewhere would make the sign-in an
/// open redirect. It must read as a path-absolute relative reference (a
/// path and query, nothing before the first `/`, not `//`), with no control
/// character or backslash anywhere: browsers drop tabs and newlines from a
/// URL (`/\t/evil.example` becomes `//evil.example`) and read `\` as `/`.
fn safe_next(next: &str) -> String {
    let plain = !next.chars().any(|c| c.is_control() || c == '\\');
    let local = next.starts_with('/') && !next.starts_with("//");
    let parses = next
        .parse::<axum::http::uri::PathAndQuery>()
        .is_ok_and(|p| p.as_str() == next);
    if plain && local && parses {
        next.to_string()
    } else {
        "/runs".into()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SignInQuery {
    next: String,
    token: String,
}

pub async fn signin_page(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(q): Query<SignInQuery>,
) -> Result<Response, UiError> {
    let next = safe_next(&q.next);
    if Session::live(&jar, &state.parts.store, &state.parts.config)
        .await
        .is_some()
    {
        return Ok(Redirect::to(&next).into_response());
    }
    let github = state.parts.github_sign_in.is_some();
    // One link at a time: a visit while one is outstanding prints nothing.
    let printed = if github {
        false
    } else if let Some(link) = state.sign_in_link() {
        tracing::info!("staff UI sign-in link (one-time): {link}");
        true
    } else {
        false
    };
    state.render(
        "signin.html",
        context! {
            github, printed, next,
            github_link => format!("/signin/github?next={}", crate::encode(&next)),
            now => issueops_core::now_ms(),
        },
    )
}

pub async fn signin_link(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(q): Query<SignInQuery>,
) -> Result<Response, Response> {
    if state.parts.github_sign_in.is_some() || !state.links.redeem(&q.token) {
        return Err(state.message(
            StatusCode::FORBIDDEN,
            "Sign-in link not valid",
            "This link was used already, or is not the one the server printed. Open /signin: \
             a new link is printed in the server's log.",
        ));
    }
    let session = Session::new(
        state.parts.local_login.clone(),
        Role::Approver,
        state.parts.config.ui.session_hours,
    );
    let identity = crate::oauth::Identity {
        login: session.login.clone(),
        orgs: Vec::new(),
        teams: Vec::new(),
    };
    begin(&state, &session, LOOPBACK, &identity)
        .await
        .map_err(|e| e.into_response())?;
    let jar = session.store(jar, state.secure_cookies);
    Ok((jar, Redirect::to(&safe_next(&q.next))).into_response())
}

#[derive(Serialize, Deserialize)]
struct OAuthState {
    state: String,
    next: String,
}

pub async fn signin_github(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(q): Query<SignInQuery>,
) -> Response {
    let Some(github) = &state.parts.github_sign_in else {
        return Redirect::to("/signin").into_response();
    };
    let pending = OAuthState {
        state: random_token(),
        next: safe_next(&q.next),
    };
    let url = github.authorize_url(&pending.state);
    let value = serde_json::to_string(&pending).unwrap_or_default();
    let jar = jar.add(cookie(OAUTH_COOKIE, value, state.secure_cookies));
    (jar, Redirect::to(&url)).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CallbackQuery {
    code: String,
    state: String,
    error: String,
    error_description: String,
}

pub async fn github_callback(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let refuse =
        |status: StatusCode, message: &str| state.message(status, "Sign-in failed", message);
    let Some(github) = &state.parts.github_sign_in else {
        return Redirect::to("/signin").into_response();
    };
    if !q.error.is_empty() {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("GitHub said: {} {}", q.error, q.error_description),
        );
    }
    let pending = jar
        .get(OAUTH_COOKIE)
        .and_then(|c| serde_json::from_str::<OAuthState>(c.value()).ok());
    let Some(pending) = pending.filter(|p| {
        !q.state.is_empty()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                p.state.as_bytes(),
                q.state.as_bytes(),
            ))
    }) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The sign-in did not start here or took too long (state mismatch). Start again from /signin.",
        );
    };
    let jar = jar.remove(Cookie::from(OAUTH_COOKIE));
    let who = match github.identify(&q.code, &state.parts.config).await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "GitHub sign-in failed");
            return (jar, refuse(StatusCode::BAD_GATEWAY, &e.to_string())).into_response();
        }
    };
    let Some(role) = role_for(&state.parts.config, &who) else {
        return (
            jar,
            refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "{} is not allowed here: ask an operator to add you (or your org or team) to ui.viewers or ui.approvers.",
                    who.login
                ),
            ),
        )
            .into_response();
    };
    let session = Session::new(who.login.clone(), role, state.parts.config.ui.session_hours);
    if let Err(e) = begin(&state, &session, GITHUB, &who).await {
        return (jar, e.into_response()).into_response();
    }
    let jar = session.store(jar, state.secure_cookies);
    (jar, Redirect::to(&pending.next)).into_response()
}

/// Makes `session` live on the server (its row) and audits the sign-in. No
/// row, no session: the cookie alone would let nobody in.
async fn begin(
    state: &AppState,
    session: &Session,
    how: &str,
    identity: &crate::oauth::Identity,
) -> Result<(), UiError> {
    state
        .parts
        .store
        .create_ui_session(&session.row(how, identity))
        .await?;
    let audit = AuditEvent::new(kind::UI_SIGNIN, "signed-in")
        .actor(session.login.clone())
        .detail(serde_json::json!({ "how": how, "role": session.role, "session": &session.id_hash()[..12] }));
    if let Err(e) = state.parts.store.append_audit(&audit).await {
        tracing::warn!(error = %e, "cannot audit a sign-in");
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn signout(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    who: Signed,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !who.0.csrf_ok(&form.csrf) {
        return csrf_refused(&state);
    }
    // The server's row goes first: a copy of the cookie is worth nothing after.
    let hash = who.0.id_hash();
    if let Err(e) = state
        .parts
        .store
        .revoke_ui_sessions(issueops_core::store::sessions::Revoke::Id(&hash))
        .await
    {
        return UiError::from(e).into_response();
    }
    let jar = jar.remove(Cookie::from(SESSION_COOKIE));
    (jar, Redirect::to("/signin")).into_response()
}

fn csrf_refused(state: &AppState) -> Response {
    state.message(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form did not carry your session's token (CSRF protection). Reload the page and try again.",
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DecisionForm {
    csrf: String,
    decision: String,
    reason: String,
}

/// One line of at most `MAX_REASON` characters: it goes into commit
/// messages and audit rows.
pub(crate) fn clean_reason(reason: &str) -> Result<String, &'static str> {
    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if reason.is_empty() {
        return Err("A reason is required: it goes into the audit trail with your name.");
    }
    Ok(reason.chars().take(MAX_REASON).collect())
}

/// A decision the product already has, as the staff UI and the API make it.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    Approval { id: String, approve: bool },
    Proposal { id: String, approve: bool },
    Cancel { run: String },
    RetryDelivery { delivery: String },
}

impl Decision {
    /// `approve`/`deny` of a request or proposal.
    pub(crate) fn verdict(decision: &str) -> Result<bool, Refusal> {
        match decision {
            "approve" => Ok(true),
            "deny" => Ok(false),
            other => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "Bad request",
                format!("{other:?} is not a decision: approve or deny"),
            )),
        }
    }
}

/// Why a decision was not made: what to answer, for people.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
        }
    }
}

/// Makes `decision` as `actor`, with `reason`, in the control plane's turn
/// (never interleaved with one of its passes or a CLI command). The one
/// path of the staff UI's forms and the API's POSTs.
pub(crate) async fn carry_out(
    state: &AppState,
    actor: &str,
    decision: Decision,
    reason: &str,
) -> Result<String, Refusal> {
    let reason = clean_reason(reason)
        .map_err(|m| Refusal::new(StatusCode::BAD_REQUEST, "Reason required", m))?;
    let _turn = state
        .parts
        .store
        .exclusive(
            issueops_control_plane::WRITER_ROLE,
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "a staff decision waited too long for the control plane");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                format!(
                    "The control plane is busy; nothing was decided. Try again in a moment. ({e})"
                ),
            )
        })?;
    let cp = &state.parts.control_plane;
    let (result, title) = match &decision {
        Decision::Approval { id, approve } => (
            cp.decide_request_as_approver(id, actor, *approve, &reason)
                .await,
            "Not decided",
        ),
        Decision::Proposal { id, approve: true } => (
            cp.approve_proposal(id, actor, &reason)
                .await
                .map(|sha| format!("proposal {id} merged as {sha}")),
            "Not decided",
        ),
        Decision::Proposal { id, approve: false } => (
            cp.deny_proposal(id, actor, &reason)
                .await
                .map(|()| format!("proposal {id} denied")),
            "Not decided",
        ),
        Decision::Cancel { run } => (cp.cancel_run(run, actor, &reason).await, "Not cancelled"),
        Decision::RetryDelivery { delivery } => (
            cp.retry_delivery(delivery, actor, Some(&reason)).await,
            "Not retried",
        ),
    };
    match result {
        Ok(outcome) => {
            tracing::info!(%outcome, actor, "decided by staff");
            Ok(outcome)
        }
        Err(ControlPlaneError::Refused(m)) => Err(Refusal::new(StatusCode::CONFLICT, title, m)),
        Err(e) => {
            tracing::error!(error = %e, ?decision, "a staff decision failed");
            Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                title,
                format!("The decision could not be recorded: {e}"),
            ))
        }
    }
}

/// The checks a decision form passes before [`carry_out`]: the session's
/// CSRF token and the approver role.
fn admit(state: &AppState, who: &Signed, form: &DecisionForm) -> Result<(), Box<Response>> {
    if !who.0.csrf_ok(&form.csrf) {
        return Err(Box::new(csrf_refused(state)));
    }
    if let Some(refused) = who.refusal_unless_approver(state) {
        return Err(Box::new(refused));
    }
    Ok(())
}

/// A form's decision made: on to `done`, or the page saying why not.
async fn decide_by_form(
    state: &AppState,
    who: &Signed,
    form: &DecisionForm,
    decision: Result<Decision, Refusal>,
    done: String,
) -> Response {
    if let Err(refused) = admit(state, who, form) {
        return *refused;
    }
    let made = match decision {
        Ok(decision) => carry_out(state, &who.0.login, decision, &form.reason).await,
        Err(refusal) => Err(refusal),
    };
    match made {
        Ok(_) => Redirect::to(&done).into_response(),
        Err(r) => state.message(r.status, r.title, &r.message),
    }
}

pub async fn decide(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let decision = Decision::verdict(&form.decision).map(|approve| Decision::Approval {
        id: id.clone(),
        approve,
    });
    let done = format!("/approvals?decided={}", crate::encode(&id));
    decide_by_form(&state, &who, &form, decision, done).await
}

/// Approve (merge into the applied branch) or deny a proposal.
pub async fn decide_proposal(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let decision = Decision::verdict(&form.decision).map(|approve| Decision::Proposal {
        id: id.clone(),
        approve,
    });
    let done = format!("/proposals?decided={}", crate::encode(&id));
    decide_by_form(&state, &who, &form, decision, done).await
}

pub async fn cancel(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let decision = Ok(Decision::Cancel { run: id.clone() });
    let done = format!("/runs/{}", crate::encode(&id));
    decide_by_form(&state, &who, &form, decision, done).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/runs/r1"), "/runs/r1");
        assert_eq!(safe_next("//evil.example/x"), "/runs");
        assert_eq!(safe_next("https://evil.example"), "/runs");
        assert_eq!(safe_next("/\\evil.example"), "/runs");
        // What `next=/%09/evil.example` and `next=/%0a/x` decode to.
        assert_eq!(safe_next("/\t/evil.example"), "/runs");
        assert_eq!(safe_next("/\n/x"), "/runs");
        assert_eq!(safe_next("/\r\n/x"), "/runs");
        assert_eq!(safe_next("/runs\u{7f}"), "/runs");
        assert_eq!(
            safe_next("/runs?state=running&page=2"),
            "/runs?state=running&page=2"
        );
        assert_eq!(safe_next(""), "/runs");
    }

    #[test]
    fn reasons_are_required_and_bounded() {
        assert!(clean_reason("  ").is_err());
        assert_eq!(clean_reason(" ok ").as_deref(), Ok("ok"));
        assert_eq!(
            clean_reason("fine\n\nActor: mallory").as_deref(),
            Ok("fine Actor: mallory"),
            "one line: no forged trailers"
        );
        assert_eq!(
            clean_reason(&"x".repeat(900)).map(|r| r.len()),
            Ok(MAX_REASON)
        );
    }
}

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
fn clean_reason(reason: &str) -> Result<String, &'static str> {
    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if reason.is_empty() {
        return Err("A reason is required: it goes into the audit trail with your name.");
    }
    Ok(reason.chars().take(MAX_REASON).collect())
}

/// The checks every decision form passes first: the session's CSRF token,
/// the approver role, a reason. Returns the reason, or the refusal page.
fn admit(state: &AppState, who: &Signed, form: &DecisionForm) -> Result<String, Box<Response>> {
    if !who.0.csrf_ok(&form.csrf) {
        return Err(Box::new(csrf_refused(state)));
    }
    if let Some(refused) = who.refusal_unless_approver(state) {
        return Err(Box::new(refused));
    }
    clean_reason(&form.reason)
        .map_err(|m| Box::new(state.message(StatusCode::BAD_REQUEST, "Reason required", m)))
}

/// Where a decision leads: `done` when the control plane made it, else a
/// page saying why not (a refusal, or a failure, which is also logged).
fn outcome(
    state: &AppState,
    result: Result<String, ControlPlaneError>,
    done: String,
    title: &str,
    what: &str,
) -> Response {
    match result {
        Ok(outcome) => {
            tracing::info!(%outcome, "decided in the staff UI");
            Redirect::to(&done).into_response()
        }
        Err(ControlPlaneError::Refused(m)) => state.message(StatusCode::CONFLICT, title, &m),
        Err(e) => {
            tracing::error!(error = %e, "{what} in the staff UI failed");
            state.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                title,
                &format!("{what} could not be recorded: {e}"),
            )
        }
    }
}

/// The control plane's exclusive lock, so a decision made here never
/// interleaves with a pass of the control plane (or a CLI command).
async fn take_turn(
    state: &AppState,
) -> Result<issueops_core::store::lock::Exclusive, Box<Response>> {
    state
        .parts
        .store
        .exclusive(
            issueops_control_plane::WRITER_ROLE,
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "staff UI decision waited too long for the control plane");
            Box::new(state.message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                &format!(
                    "The control plane is busy; nothing was decided. Try again in a moment. ({e})"
                ),
            ))
        })
}

pub async fn decide(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let (reason, approve) = match admit_decision(&state, &who, &form) {
        Ok(decision) => decision,
        Err(refused) => return *refused,
    };
    let _turn = match take_turn(&state).await {
        Ok(turn) => turn,
        Err(busy) => return *busy,
    };
    let result = state
        .parts
        .control_plane
        .decide_request_as_approver(&id, &who.0.login, approve, &reason)
        .await;
    let done = format!("/approvals?decided={}", crate::encode(&id));
    outcome(&state, result, done, "Not decided", "The decision")
}

/// A decision form admitted (see [`admit`]): its reason, and `true` to
/// approve, `false` to deny.
fn admit_decision(
    state: &AppState,
    who: &Signed,
    form: &DecisionForm,
) -> Result<(String, bool), Box<Response>> {
    let reason = admit(state, who, form)?;
    match form.decision.as_str() {
        "approve" => Ok((reason, true)),
        "deny" => Ok((reason, false)),
        other => Err(Box::new(state.message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            &format!("{other:?} is not a decision: approve or deny"),
        ))),
    }
}

/// Approve (merge into the applied branch) or deny a proposal.
pub async fn decide_proposal(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let (reason, approve) = match admit_decision(&state, &who, &form) {
        Ok(decision) => decision,
        Err(refused) => return *refused,
    };
    let _turn = match take_turn(&state).await {
        Ok(turn) => turn,
        Err(busy) => return *busy,
    };
    let cp = &state.parts.control_plane;
    let result = if approve {
        cp.approve_proposal(&id, &who.0.login, &reason)
            .await
            .map(|sha| format!("proposal {id} merged as {sha}"))
    } else {
        cp.deny_proposal(&id, &who.0.login, &reason)
            .await
            .map(|()| format!("proposal {id} denied"))
    };
    let done = format!("/proposals?decided={}", crate::encode(&id));
    outcome(&state, result, done, "Not decided", "The decision")
}

pub async fn cancel(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let reason = match admit(&state, &who, &form) {
        Ok(reason) => reason,
        Err(refused) => return *refused,
    };
    let _turn = match take_turn(&state).await {
        Ok(turn) => turn,
        Err(busy) => return *busy,
    };
    let result = state
        .parts
        .control_plane
        .cancel_run(&id, &who.0.login, &reason)
        .await;
    let done = format!("/runs/{}", crate::encode(&id));
    outcome(&state, result, done, "Not cancelled", "The cancel")
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

//! The staff UI: every run, where it runs and what it produced, drilldowns,
//! approvals, the audit trail, the inbox and the reconciler's health, as
//! server-rendered pages (readable without JavaScript; a small script swaps
//! in fresh content when server-sent events say something changed).
//!
//! It reads the store, the state repo and the cluster. The only things it
//! writes are decisions the product already has: approve or deny a request
//! (with a reason), cancel a run (a state-repo commit, like everything else).
//! Every page needs a session; every form carries the session's CSRF token.

mod actions;
pub mod api;
pub mod dashboard;
pub mod live;
pub mod oauth;
mod pages;
pub mod read;
pub mod session;
pub mod view;

use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Key, PrivateCookieJar};
use issueops_control_plane::ControlPlane;
use issueops_core::state_repo::StateRepo;
use issueops_core::{Config, Store};
use minijinja::Environment;
use session::{Role, Session, SignInLinks};
use std::sync::Arc;

/// What the UI is built from.
pub struct UiParts {
    pub store: Store,
    pub repo: StateRepo,
    pub control_plane: ControlPlane,
    pub config: Arc<Config>,
    pub cluster: kube::Client,
    /// For people: which cluster this is.
    pub cluster_description: String,
    /// The in-process stand-in: its Jobs are simulated.
    pub simulated: bool,
    /// The reconciler's state key (its last applied commit and cycle).
    pub state_key: String,
    /// Where people reach the UI, without a trailing slash.
    pub public_url: String,
    pub cookie_key: Key,
    /// GitHub sign-in; `None`: the loopback sign-in link.
    pub github_sign_in: Option<oauth::GitHubSignIn>,
    /// Who a loopback sign-in is (the person at the server's terminal).
    pub local_login: String,
}

pub struct Ui {
    parts: UiParts,
    env: Environment<'static>,
    links: SignInLinks,
    secure_cookies: bool,
}

/// The router's state.
#[derive(Clone)]
pub struct AppState(Arc<Ui>);

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Key {
        state.0.parts.cookie_key.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Ui;
    fn deref(&self) -> &Ui {
        &self.0
    }
}

impl AppState {
    pub fn new(parts: UiParts) -> Self {
        let secure_cookies = parts.public_url.starts_with("https://");
        AppState(Arc::new(Ui {
            parts,
            env: view::environment(),
            links: SignInLinks::default(),
            secure_cookies,
        }))
    }

    /// A fresh one-time sign-in link (loopback sign-in only), or `None` when
    /// GitHub sign-in is configured or a link is still outstanding.
    pub fn sign_in_link(&self) -> Option<String> {
        if self.parts.github_sign_in.is_some() {
            return None;
        }
        self.links
            .mint()
            .map(|token| format!("{}/signin/link?token={token}", self.parts.public_url))
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<Response, UiError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| UiError::Internal(format!("template {name}: {e}")))?;
        let html = template.render(ctx).map_err(|e| {
            // The full report (template source, variables) goes to the
            // log only: it could show data a page would not.
            tracing::error!(template = name, error = %format!("{e:#}"), "rendering a page failed");
            UiError::Internal(format!("rendering {name}: {e}"))
        })?;
        Ok(Html(html).into_response())
    }

    fn message(&self, status: StatusCode, title: &str, message: &str) -> Response {
        let ctx = minijinja::context! { title, message, now => issueops_core::now_ms() };
        match self.render("message.html", ctx) {
            Ok(page) => (status, page).into_response(),
            Err(_) => (status, message.to_string()).into_response(),
        }
    }
}

/// The router: pages, forms, sign-in, live events and static files.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/cancel", post(actions::cancel))
        .route("/issues/{owner}/{repo}/{number}", get(pages::issue))
        .route("/approvals", get(pages::approvals))
        .route("/approvals/{id}", post(actions::decide))
        .route("/proposals", get(pages::proposals))
        .route("/proposals/{id}", post(actions::decide_proposal))
        .route("/audit", get(pages::audit))
        .route("/audit.jsonl", get(pages::audit_export))
        .route("/deliveries", get(pages::deliveries))
        .route("/health", get(pages::health))
        .route("/dashboard", get(pages::dashboard))
        .route("/events", get(pages::events))
        .route("/signin", get(actions::signin_page))
        .route("/signin/link", get(actions::signin_link))
        .route("/signin/github", get(actions::signin_github))
        .route("/signin/github/callback", get(actions::github_callback))
        .route("/signout", post(actions::signout))
        .route(
            "/static/app.css",
            get(|| async { asset("text/css", include_str!("../static/app.css")) }),
        )
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript", include_str!("../static/app.js")) }),
        )
        .merge(api::router())
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// No framing, no foreign scripts or styles, no sniffing, no caching of pages.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A signed-in person; without a session the request is sent to sign in
/// (pages) or refused (live events).
pub struct Signed(pub Session);

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let jar = PrivateCookieJar::<Key>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if let Some(session) = Session::live(&jar, &state.parts.store, &state.parts.config).await {
            return Ok(Signed(session));
        }
        let uri = OriginalUri::from_request_parts(parts, state)
            .await
            .map(|u| u.0)
            .unwrap_or_else(|_| parts.uri.clone());
        if uri.path() == "/events" {
            return Err((StatusCode::UNAUTHORIZED, "sign in first").into_response());
        }
        let next = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let target = format!("/signin?next={}", encode(&next));
        Err(Redirect::to(&target).into_response())
    }
}

impl Signed {
    /// The refusal page when this person may not decide.
    fn refusal_unless_approver(&self, state: &AppState) -> Option<Response> {
        if self.0.role >= Role::Approver {
            None
        } else {
            Some(state.message(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!(
                    "{} may look but not decide: ask for the approver role (ui.approvers or github.approvers).",
                    self.0.login
                ),
            ))
        }
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] issueops_core::store::StoreError),
    #[error(transparent)]
    Repo(#[from] issueops_core::state_repo::StateRepoError),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            UiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            UiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Something failed"),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "staff UI page failed");
        }
        // Plain, escaped text: the message page needs the state, which an
        // error outside a handler does not have.
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>{title}</title><link rel=stylesheet href=/static/app.css>\
             <main><h1>{title}</h1><p class=error>{}</p><p><a href=/runs>Back to runs</a></p></main>",
            escape(&self.to_string())
        );
        (status, Html(body)).into_response()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Serves the UI on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_paths_are_encoded() {
        assert_eq!(super::encode("/runs?state=a&x"), "%2Fruns%3Fstate%3Da%26x");
        assert_eq!(
            super::escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}

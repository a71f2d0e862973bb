//! The staff JSON API, `/api/v1`: the views the pages show (`read`) and the
//! decisions their forms make (`actions::carry_out`), for scripts,
//! dashboards and chat bots. Its OpenAPI 3.1 document is generated from
//! these handlers and types (`/api/v1/openapi.json`; kept in the repository
//! as `docs/openapi.json`, checked by a test).
//!
//! Who may call: a bearer token (`issueops api-tokens create`, scoped
//! viewer or approver) or a staff UI session cookie; with a cookie, a POST
//! must also carry the session's CSRF token in `X-CSRF-Token`. Reads need
//! the viewer role, decisions the approver role. A refused request leaves
//! no trace.

use crate::actions::{carry_out, Decision, Refusal};
use crate::read::{
    ApprovalsView, AuditQuery, DeliveriesPage, DeliveriesQuery, HealthView, IssueDetail,
    ProposalsView, RunDetail, RunsPage, RunsQuery, AUDIT_ROWS,
};
use crate::session::{Role, Session};
use crate::{AppState, UiError};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Key, PrivateCookieJar};
use issueops_core::audit::AuditRow;
use issueops_core::store::api_tokens::PREFIX;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The header a cookie session's POST carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "issueops staff API",
        description = "Runs, issues, approvals, proposals, the audit trail, deliveries and health, as the staff UI shows them; decisions as its forms make them.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        runs, run, cancel_run, issue, approvals, decide_approval, proposals, decide_proposal,
        audit, audit_export, deliveries, retry_delivery, health, dashboard, me
    ),
    components(schemas(ApiError, DecisionBody, ReasonBody, Decided, Me)),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    tags((name = "runs"), (name = "decisions"), (name = "audit"), (name = "operations"))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `issueops api-tokens create`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::session::SESSION_COOKIE,
                "A staff UI session; POSTs also need its CSRF token in X-CSRF-Token.",
            ))),
        );
    }
}

/// The document, as served and as kept in `docs/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
        format!("{{\"error\": \"the OpenAPI document does not serialise: {e}\"}}")
    })
}

/// The API's routes, under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi_json()) }),
        )
        .route("/api/v1/me", get(me))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/issues/{owner}/{repo}/{number}", get(issue))
        .route("/api/v1/approvals", get(approvals))
        .route("/api/v1/approvals/{id}", post(decide_approval))
        .route("/api/v1/proposals", get(proposals))
        .route("/api/v1/proposals/{id}", post(decide_proposal))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit.jsonl", get(audit_export))
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/deliveries/{id}/retry", post(retry_delivery))
        .route("/api/v1/health", get(health))
        .route("/api/v1/dashboard", get(dashboard))
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no such API path: see /api/v1/openapi.json",
                )
            }),
        )
}

/// What every refusal and failure answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// What went wrong, for people.
    pub error: String,
    #[serde(skip)]
    status: StatusCode,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<UiError> for ApiError {
    fn from(e: UiError) -> Self {
        let status = match &e {
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => {
                tracing::error!(error = %e, "staff API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::new(r.status, r.message)
    }
}

/// Who is calling, and how.
pub struct Caller {
    pub login: String,
    pub role: Role,
    /// `token` or `session`.
    pub via: &'static str,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let store = &state.parts.store;
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| t.starts_with(PREFIX))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "Authorization must be `Bearer <token>` with a token from `issueops api-tokens create`",
                    )
                })?;
            let found = store.live_api_token(token).await.map_err(|e| {
                tracing::error!(error = %e, "cannot read API tokens");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot check the token now",
                )
            })?;
            let Some(found) = found else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this token is unknown, revoked or expired",
                ));
            };
            let role = Role::parse(&found.role).unwrap_or(Role::Viewer);
            return Ok(Caller {
                login: format!("{} (API token)", found.name),
                role,
                via: "token",
            });
        }
        let jar = PrivateCookieJar::<Key>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "sign in first"))?;
        let Some(session) = Session::live(&jar, store, &state.parts.config).await else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authenticate with `Authorization: Bearer <token>` (issueops api-tokens create) or a staff UI session",
            ));
        };
        if parts.method == Method::POST {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !session.csrf_ok(sent) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a session's POST must carry its CSRF token in X-CSRF-Token",
                ));
            }
        }
        Ok(Caller {
            login: session.login,
            role: session.role,
            via: "session",
        })
    }
}

impl Caller {
    fn approver(&self) -> Result<(), ApiError> {
        if self.role >= Role::Approver {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may read but not decide: an approver token or session is needed",
                    self.login
                ),
            ))
        }
    }
}

/// Approve or deny, with why (goes into the audit trail and the commit).
#[derive(Debug, Deserialize, ToSchema)]
pub struct DecisionBody {
    /// `approve` or `deny`.
    pub decision: String,
    /// One line, required; at most 500 characters are kept.
    pub reason: String,
}

/// Why (goes into the audit trail).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReasonBody {
    /// One line, required; at most 500 characters are kept.
    pub reason: String,
}

/// What a decision did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Decided {
    pub outcome: String,
}

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub login: String,
    /// `viewer` or `approver`.
    pub role: String,
    /// `token` or `session`.
    pub via: String,
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// A JSON body, or a 400 saying what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(
    payload: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    payload
        .map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// A query string, or a 400 saying what is wrong with it.
fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A decision POST: the approver role first (a viewer gets 403 whatever it
/// sent), then the body, then the decision it names, made by `carry_out`.
async fn decide<T: serde::de::DeserializeOwned>(
    state: &AppState,
    who: &Caller,
    payload: Body<T>,
    decision: impl FnOnce(&T) -> Result<(Decision, &str), ApiError>,
) -> ApiResult<Decided> {
    who.approver()?;
    let b = body(payload)?;
    let (decision, reason) = decision(&b)?;
    let outcome = carry_out(state, &who.login, decision, reason).await?;
    Ok(Json(Decided { outcome }))
}

/// The caller's identity and role.
#[utoipa::path(get, path = "/api/v1/me", tag = "operations",
    responses((status = 200, body = Me), (status = 401, body = ApiError)))]
async fn me(who: Caller) -> Json<Me> {
    Json(Me {
        login: who.login,
        role: who.role.as_str().into(),
        via: who.via.into(),
    })
}

/// Runs, newest first, 20 a page; filtered as the runs page is.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = RunsPage), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn runs(
    State(state): State<AppState>,
    _who: Caller,
    q: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<RunsPage> {
    Ok(Json(state.runs_page(&query(q)?).await?))
}

/// One run: its row, timeline, state-repo commit, cluster view and the
/// agent's transcript.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run id")),
    responses((status = 200, body = RunDetail), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn run(
    State(state): State<AppState>,
    _who: Caller,
    Path(id): Path<String>,
) -> ApiResult<RunDetail> {
    Ok(Json(state.run_detail(&id).await?))
}

/// Cancels an active run (a state-repo commit removing its folder).
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "decisions",
    params(("id" = String, Path, description = "The run id")),
    request_body = ReasonBody,
    responses((status = 200, body = Decided), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
async fn cancel_run(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    payload: Body<ReasonBody>,
) -> ApiResult<Decided> {
    decide(&state, &who, payload, |b: &ReasonBody| {
        Ok((Decision::Cancel { run: id }, b.reason.as_str()))
    })
    .await
}

/// An issue: its namespace now and its runs.
#[utoipa::path(get, path = "/api/v1/issues/{owner}/{repo}/{number}", tag = "runs",
    params(("owner" = String, Path), ("repo" = String, Path), ("number" = String, Path, description = "The issue number, from 1")),
    responses((status = 200, body = IssueDetail), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn issue(
    State(state): State<AppState>,
    _who: Caller,
    Path((owner, repo, number)): Path<(String, String, String)>,
) -> ApiResult<IssueDetail> {
    Ok(Json(state.issue_detail(&owner, &repo, &number).await?))
}

/// Approval requests: pending, then decided.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "decisions",
    responses((status = 200, body = ApprovalsView), (status = 401, body = ApiError)))]
async fn approvals(State(state): State<AppState>, _who: Caller) -> ApiResult<ApprovalsView> {
    Ok(Json(state.approvals_view().await?))
}

/// Approves or denies an approval request.
#[utoipa::path(post, path = "/api/v1/approvals/{id}", tag = "decisions",
    params(("id" = String, Path, description = "The request id")),
    request_body = DecisionBody,
    responses((status = 200, body = Decided), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
async fn decide_approval(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    payload: Body<DecisionBody>,
) -> ApiResult<Decided> {
    decide(&state, &who, payload, |b: &DecisionBody| {
        let approve = Decision::verdict(&b.decision)?;
        Ok((Decision::Approval { id, approve }, b.reason.as_str()))
    })
    .await
}

/// Proposals: pending (with their diffs), then decided.
#[utoipa::path(get, path = "/api/v1/proposals", tag = "decisions",
    responses((status = 200, body = ProposalsView), (status = 401, body = ApiError)))]
async fn proposals(State(state): State<AppState>, _who: Caller) -> ApiResult<ProposalsView> {
    Ok(Json(state.proposals_view().await?))
}

/// Approves (merges into the applied branch) or denies a proposal.
#[utoipa::path(post, path = "/api/v1/proposals/{id}", tag = "decisions",
    params(("id" = String, Path, description = "The proposal id")),
    request_body = DecisionBody,
    responses((status = 200, body = Decided), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
async fn decide_proposal(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    payload: Body<DecisionBody>,
) -> ApiResult<Decided> {
    decide(&state, &who, payload, |b: &DecisionBody| {
        let approve = Decision::verdict(&b.decision)?;
        Ok((Decision::Proposal { id, approve }, b.reason.as_str()))
    })
    .await
}

/// The newest 200 audit rows matching the filters, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditRow>), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn audit(
    State(state): State<AppState>,
    _who: Caller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<AuditRow>> {
    Ok(Json(state.audit_search(&query(q)?, AUDIT_ROWS).await?))
}

/// Up to 10,000 matching audit rows as JSON lines, oldest first.
#[utoipa::path(get, path = "/api/v1/audit.jsonl", tag = "audit", params(AuditQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = String),
        (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn audit_export(
    State(state): State<AppState>,
    _who: Caller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    Ok(crate::pages::jsonl(state.audit_jsonl(&query(q)?).await?))
}

/// Deliveries, newest first, 20 a page; `stuck=1` for those not processed.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "operations", params(DeliveriesQuery),
    responses((status = 200, body = DeliveriesPage), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn deliveries(
    State(state): State<AppState>,
    _who: Caller,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<DeliveriesPage> {
    Ok(Json(state.deliveries_page(&query(q)?).await?))
}

/// Puts a dead letter back in line (as `issueops deliveries retry`).
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/retry", tag = "operations",
    params(("id" = String, Path, description = "The delivery id")),
    request_body = ReasonBody,
    responses((status = 200, body = Decided), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 503, body = ApiError)))]
async fn retry_delivery(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    payload: Body<ReasonBody>,
) -> ApiResult<Decided> {
    decide(&state, &who, payload, |b: &ReasonBody| {
        Ok((Decision::RetryDelivery { delivery: id }, b.reason.as_str()))
    })
    .await
}

/// Runs per day by outcome (14 days), label → started and duration
/// percentiles, the queue: what the dashboard draws.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "operations",
    responses((status = 200, body = crate::dashboard::DashboardView), (status = 401, body = ApiError)))]
async fn dashboard(
    State(state): State<AppState>,
    _who: Caller,
) -> ApiResult<crate::dashboard::DashboardView> {
    Ok(Json(state.dashboard_view().await?))
}

/// The reconciler, the inbox and the audit trail.
#[utoipa::path(get, path = "/api/v1/health", tag = "operations",
    responses((status = 200, body = HealthView), (status = 401, body = ApiError)))]
async fn health(State(state): State<AppState>, _who: Caller) -> ApiResult<HealthView> {
    Ok(Json(state.health_view().await?))
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is the document the code generates: a change to a
    /// handler or a type shows up in review as a change to the contract.
    /// `ISSUEOPS_WRITE_OPENAPI=1 cargo test -p issueops-ui openapi` rewrites it.
    #[test]
    fn the_openapi_document_in_the_repository_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let generated = format!("{}\n", super::openapi_json());
        if std::env::var_os("ISSUEOPS_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let kept = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            kept == generated,
            "docs/openapi.json is not what the code generates: run \
             `ISSUEOPS_WRITE_OPENAPI=1 cargo test -p issueops-ui openapi` and commit it"
        );
        let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/v1/runs",
            "/api/v1/runs/{id}",
            "/api/v1/approvals/{id}",
            "/api/v1/health",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} is documented");
        }
    }
}

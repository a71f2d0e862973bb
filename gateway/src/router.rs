//! HTTP routes of the gateway: `POST /webhooks/github`, `/healthz`, `/readyz`.
//!
//! Invariant: a delivery is answered 2xx only once it is durably in the inbox
//! (or was already there). Anything refused is counted, audited at most once
//! per reason, source and window (`guard`), and changes nothing else. Every
//! answer comes within `DB_DEADLINE` plus the time to read the body, even with
//! the database down (GitHub gives up after 10 s).

use crate::group_commit::GroupCommit;
use crate::guard::Guard;
use crate::signature::Secrets;
use crate::source::Sources;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use issueops_core::audit::AuditEvent;
use issueops_core::event::Envelope;
use issueops_core::store::inbox::{Inserted, NewDelivery};
use issueops_core::Store;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// Default bound on a webhook body. GitHub caps payloads at 25 MB; issue events
/// are a few KB, so 1 MiB is generous while limiting what an attacker can send.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Longest delivery id accepted (GitHub sends a 36-character UUID).
const MAX_DELIVERY_ID_LEN: usize = 128;
/// How long the gateway waits for the database before answering 503.
pub const DB_DEADLINE: Duration = Duration::from_millis(1500);

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub secrets: Secrets,
    /// Woken after each new delivery so an in-process control plane starts at once.
    pub stored: Arc<Notify>,
    pub body_limit: usize,
    pub guard: Arc<Guard>,
    /// Whom a refused request counts against.
    pub sources: Arc<Sources>,
    /// Stores deliveries, grouped into shared commits.
    pub inbox: GroupCommit,
}

impl AppState {
    pub fn new(
        store: Store,
        secrets: Secrets,
        stored: Arc<Notify>,
        body_limit: usize,
        config: &issueops_core::config::GatewayConfig,
    ) -> Self {
        Self {
            inbox: GroupCommit::start(store.clone()),
            store,
            secrets,
            stored,
            body_limit,
            guard: Arc::new(Guard::new(config)),
            sources: Arc::new(Sources::new(&config.trusted_proxies)),
        }
    }
}

/// Serves the gateway until `shutdown` resolves, then finishes the requests
/// in flight and writes the refusal summaries still open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (guard, store) = (state.guard.clone(), state.store.clone());
    let flusher = tokio::spawn({
        let (guard, store) = (guard.clone(), store.clone());
        async move {
            let mut tick = tokio::time::interval(guard.window() / 2);
            loop {
                tick.tick().await;
                write_summaries(&store, guard.flush(false)).await;
            }
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    flusher.abort();
    write_summaries(&store, guard.flush(true)).await;
    served
}

async fn write_summaries(store: &Store, rows: Vec<AuditEvent>) {
    for row in rows {
        if let Err(e) = store.append_audit(&row).await {
            tracing::warn!(error = %e, "could not write a refusal summary");
        }
    }
}

/// Whether the database answers, within the deadline.
pub async fn database_ready(store: &Store) -> Result<(), String> {
    match tokio::time::timeout(DB_DEADLINE, store.ensure_migrated()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the database did not answer within {} ms",
            DB_DEADLINE.as_millis()
        )),
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.body_limit;
    Router::new()
        .route("/webhooks/github", post(receive))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> Response {
    match database_ready(&state.store).await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

/// Why a delivery was refused; each maps to one status code.
#[derive(Debug)]
enum Refusal {
    Signature(String),
    TooLarge,
    BadRequest(String),
    Unavailable(String),
    RateLimited,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Signature(_) => StatusCode::UNAUTHORIZED,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }
    fn reason(&self) -> String {
        match self {
            Refusal::Signature(r) | Refusal::BadRequest(r) | Refusal::Unavailable(r) => r.clone(),
            Refusal::TooLarge => "body exceeds the configured limit".into(),
            Refusal::RateLimited => "too many requests from this address; slow down".into(),
        }
    }
    /// The metric label and summary key.
    fn class(&self) -> &'static str {
        match self {
            Refusal::Signature(_) => "signature",
            Refusal::TooLarge => "too_large",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Unavailable(_) => "unavailable",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A delivery id fit to store: GitHub's are UUIDs; anything odd is refused.
fn valid_delivery_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DELIVERY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

async fn receive(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Without connection info (a router served without it) every caller
    // shares one bucket: stricter, never looser.
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let source = state.sources.key(peer, &headers);
    let raw_id = header(&headers, "x-github-delivery").unwrap_or("");
    let delivery_id = valid_delivery_id(raw_id).then(|| raw_id.to_string());
    let span = tracing::info_span!(
        "delivery",
        delivery_id = delivery_id.as_deref().unwrap_or("-")
    );
    async move {
        // The signature first (an HMAC over at most the body limit costs
        // microseconds): a signed delivery is never throttled, whatever else
        // came from its address. The throttle spares only the database and
        // the audit work of refusals.
        let verified = verify(&state, &headers, body);
        let signed = verified.is_ok();
        let result = match verified {
            Ok(body) => accept(&state, &headers, body, delivery_id.as_deref()).await,
            Err(refusal) if state.guard.admit(source) => Err(refusal),
            Err(_) => Err(Refusal::RateLimited),
        };
        match result {
            Ok(response) => response,
            Err(refusal) => {
                let reason = refusal.reason();
                let status = refusal.status();
                if matches!(refusal, Refusal::Unavailable(_)) {
                    tracing::error!(%reason, "delivery not stored; GitHub may redeliver");
                } else {
                    // Only unauthenticated refusals spend the budget: a
                    // signed but malformed delivery is the secret holder's.
                    if !signed && !matches!(refusal, Refusal::RateLimited) {
                        state.guard.charge(source);
                    }
                    tracing::debug!(status = status.as_u16(), %reason, source = %crate::source::describe(source), "delivery refused");
                }
                issueops_core::metrics::delivery_outcome("refused");
                // With the database unavailable, a row could not be written
                // either (and trying would double the wait): log and count.
                let audit = state
                    .guard
                    .refused(refusal.class(), source, status.as_u16(), &reason)
                    .filter(|_| !matches!(refusal, Refusal::Unavailable(_)));
                if let Some(mut event) = audit {
                    tracing::warn!(status = status.as_u16(), %reason, source = %crate::source::describe(source), "delivery refused (further ones like it are counted)");
                    event.detail["event"] = json!(header(&headers, "x-github-event")
                        .map(|e| e.chars().take(64).collect::<String>()));
                    // An unauthenticated request's delivery id is only a claim: keep it
                    // out of the linking column so it cannot attach itself to a real run
                    // (its timeline in the staff UI). Only a signed one is linked.
                    match &delivery_id {
                        Some(id) if signed => event = event.delivery(id.clone()),
                        Some(id) => event.detail["claimed_delivery_id"] = json!(id),
                        None => {}
                    }
                    let audited = tokio::time::timeout(DB_DEADLINE, state.store.append_audit(&event));
                    if !matches!(audited.await, Ok(Ok(_))) {
                        tracing::error!("could not audit a refused delivery");
                    }
                }
                (status, Json(json!({ "error": reason }))).into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// The body, read whole and signed with one of our secrets.
fn verify(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Refusal> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::TooLarge
        } else {
            Refusal::BadRequest(rejection.body_text())
        }
    })?;
    state
        .secrets
        .verify(
            headers.get("x-hub-signature-256").map(|v| v.as_bytes()),
            &body,
        )
        .map_err(|e| Refusal::Signature(e.to_string()))?;
    Ok(body)
}

/// What the gateway reads of a delivery's body: that it is one JSON object,
/// and its action, repository and sender (absent when missing or of another
/// shape). Checked and read without building the payload as a tree: it is
/// stored as received. `Err` says why the body is refused.
pub fn decode(body: &[u8]) -> Result<Envelope, String> {
    // JSON is UTF-8 (RFC 8259). Checked first: serde_json skips strings it
    // ignores without checking them, so a body with a stray byte inside a
    // string passed, and was then stored with that byte replaced, not as
    // received (found by the webhook_payload fuzz target).
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| format!("body is not JSON: {e}"))?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err("body is not a JSON object".into());
    }
    Ok(serde_json::from_str(text).unwrap_or_default())
}

/// Stores a verified delivery, or says why not.
async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    delivery_id: Option<&str>,
) -> Result<Response, Refusal> {
    let event = header(headers, "x-github-event")
        .filter(|e| !e.is_empty() && e.len() <= 64)
        .ok_or_else(|| Refusal::BadRequest("missing or invalid X-GitHub-Event header".into()))?;
    let delivery_id = delivery_id
        .ok_or_else(|| Refusal::BadRequest("missing or invalid X-GitHub-Delivery header".into()))?;
    let envelope = decode(&body).map_err(Refusal::BadRequest)?;
    let delivery = NewDelivery {
        delivery_id: delivery_id.to_string(),
        event: event.to_string(),
        action: envelope.action.clone(),
        repo: envelope.repo(),
        sender: envelope.sender(),
        // Stored as received, so the audit trail holds exactly what GitHub sent.
        payload: String::from_utf8_lossy(&body).into_owned(),
    };
    let (repo, sender) = (delivery.repo.clone(), delivery.sender.clone());
    let inserted = tokio::time::timeout(DB_DEADLINE, state.inbox.store(delivery))
        .await
        .map_err(|_| {
            Refusal::Unavailable(format!(
                "the database did not answer within {} ms; GitHub may redeliver",
                DB_DEADLINE.as_millis()
            ))
        })?
        .map_err(|e| Refusal::Unavailable(format!("could not store the delivery: {e}")))?;
    match inserted {
        Inserted::Duplicate => {
            issueops_core::metrics::delivery_outcome("duplicate");
            tracing::info!(event, "duplicate delivery; already in the inbox");
            Ok((
                StatusCode::OK,
                Json(json!({ "status": "duplicate", "delivery": delivery_id })),
            )
                .into_response())
        }
        Inserted::Stored { seq } => {
            // Its audit row was written in the same transaction.
            issueops_core::metrics::delivery_outcome("stored");
            state.stored.notify_one();
            tracing::info!(event, seq, repo = ?repo, sender = ?sender, "delivery stored");
            let status = if event == "ping" { "pong" } else { "accepted" };
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "status": status, "delivery": delivery_id })),
            )
                .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_delivery_id;

    #[test]
    fn delivery_ids_are_bounded_and_plain() {
        assert!(valid_delivery_id("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(!valid_delivery_id(""));
        assert!(!valid_delivery_id("a b"));
        assert!(!valid_delivery_id("x\ny"));
        assert!(!valid_delivery_id(&"a".repeat(129)));
    }
}

//! HTTP routes of the gateway: `POST /webhooks/github`, `/healthz`, `/readyz`.
//!
//! Invariant: a delivery is answered 2xx only once it is durably in the inbox
//! (or was already there). Anything refused is audited and changes nothing else.

use crate::signature::Secrets;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::event::Envelope;
use issueops_core::store::inbox::{Inserted, NewDelivery};
use issueops_core::Store;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::Instrument;

/// Default bound on a webhook body. GitHub caps payloads at 25 MB; issue events
/// are a few KB, so 1 MiB is generous while limiting what an attacker can send.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Longest delivery id accepted (GitHub sends a 36-character UUID).
const MAX_DELIVERY_ID_LEN: usize = 128;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub secrets: Secrets,
    /// Woken after each new delivery so an in-process control plane starts at once.
    pub stored: Arc<Notify>,
    pub body_limit: usize,
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
    match state.store.ensure_migrated().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Why a delivery was refused; each maps to one status code.
#[derive(Debug)]
enum Refusal {
    Signature(String),
    TooLarge,
    BadRequest(String),
    Unavailable(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Signature(_) => StatusCode::UNAUTHORIZED,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn reason(&self) -> String {
        match self {
            Refusal::Signature(r) | Refusal::BadRequest(r) | Refusal::Unavailable(r) => r.clone(),
            Refusal::TooLarge => "body exceeds the configured limit".into(),
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let raw_id = header(&headers, "x-github-delivery").unwrap_or("");
    let delivery_id = valid_delivery_id(raw_id).then(|| raw_id.to_string());
    let span = tracing::info_span!(
        "delivery",
        delivery_id = delivery_id.as_deref().unwrap_or("-")
    );
    async move {
        match accept(&state, &headers, body, delivery_id.as_deref()).await {
            Ok(response) => response,
            Err(refusal) => {
                let reason = refusal.reason();
                tracing::warn!(status = refusal.status().as_u16(), %reason, "delivery refused");
                let mut event = AuditEvent::new(kind::DELIVERY_REJECTED, "rejected").detail(json!({
                    "status": refusal.status().as_u16(),
                    "reason": reason,
                    "event": header(&headers, "x-github-event").map(|e| e.chars().take(64).collect::<String>()),
                }));
                // An unauthenticated request's delivery id is only a claim: keep it
                // out of the linking column so it cannot attach itself to a real run.
                match (&delivery_id, &refusal) {
                    (Some(id), Refusal::BadRequest(_) | Refusal::Unavailable(_)) => event = event.delivery(id.clone()),
                    (Some(id), _) => event.detail["claimed_delivery_id"] = json!(id),
                    (None, _) => {}
                }
                if let Err(e) = state.store.append_audit(&event).await {
                    tracing::error!(error = %e, "could not audit a refused delivery");
                }
                (refusal.status(), Json(json!({ "error": reason }))).into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    delivery_id: Option<&str>,
) -> Result<Response, Refusal> {
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
    let event = header(headers, "x-github-event")
        .filter(|e| !e.is_empty() && e.len() <= 64)
        .ok_or_else(|| Refusal::BadRequest("missing or invalid X-GitHub-Event header".into()))?;
    let delivery_id = delivery_id
        .ok_or_else(|| Refusal::BadRequest("missing or invalid X-GitHub-Delivery header".into()))?;
    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Refusal::BadRequest(format!("body is not JSON: {e}")))?;
    if !payload.is_object() {
        return Err(Refusal::BadRequest("body is not a JSON object".into()));
    }
    let envelope: Envelope = serde_json::from_value(payload).unwrap_or_default();
    let delivery = NewDelivery {
        delivery_id: delivery_id.to_string(),
        event: event.to_string(),
        action: envelope.action.clone(),
        repo: envelope.repo(),
        sender: envelope.sender(),
        // Stored as received, so the audit trail holds exactly what GitHub sent.
        payload: String::from_utf8_lossy(&body).into_owned(),
    };
    let inserted = state
        .store
        .insert_delivery(&delivery)
        .await
        .map_err(|e| Refusal::Unavailable(format!("could not store the delivery: {e}")))?;
    match inserted {
        Inserted::Duplicate => {
            tracing::info!(event, "duplicate delivery; already in the inbox");
            Ok((
                StatusCode::OK,
                Json(json!({ "status": "duplicate", "delivery": delivery_id })),
            )
                .into_response())
        }
        Inserted::Stored { seq } => {
            let mut audit = AuditEvent::new(kind::DELIVERY_RECEIVED, "stored")
                .delivery(delivery_id)
                .detail(json!({ "event": event, "action": envelope.action, "repo": delivery.repo, "inbox_seq": seq }));
            if let Some(sender) = &delivery.sender {
                audit = audit.actor(sender.clone());
            }
            if let Err(e) = state.store.append_audit(&audit).await {
                // The delivery is safely stored; losing this row must not make
                // GitHub think the delivery failed.
                tracing::error!(error = %e, "could not audit a stored delivery");
            }
            state.stored.notify_one();
            tracing::info!(event, seq, "delivery stored");
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

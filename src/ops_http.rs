//! The operations endpoint of every long-running role (`--metrics-listen`):
//! `/metrics` in Prometheus text format, `/healthz` (the process answers) and
//! `/readyz` (the database answers, within the gateway's deadline).

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use issueops_core::Store;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Binds `address` (failing clearly when it is taken) and serves until `stop`.
pub async fn serve(address: SocketAddr, store: Store, stop: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("cannot listen on {address} for metrics (--metrics-listen; port 0 picks a free one)")
        })?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "metrics and health: GET /metrics, /healthz, /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(store);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("metrics server failed")
}

async fn metrics(State(store): State<Store>) -> Response {
    // Runs by state are read at scrape time; a slow database leaves the last
    // values rather than holding the scrape.
    if let Ok(Ok(counts)) = tokio::time::timeout(
        issueops_gateway::router::DB_DEADLINE,
        store.count_runs_by_state(),
    )
    .await
    {
        for state in issueops_core::store::runs::RunState::all() {
            let n = counts.get(state.as_str()).copied().unwrap_or(0);
            issueops_core::metrics::runs_in_state(state.as_str(), n);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        issueops_core::metrics::render(),
    )
        .into_response()
}

async fn ready(State(store): State<Store>) -> Response {
    match issueops_gateway::router::database_ready(&store).await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

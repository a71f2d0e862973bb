//! `serve`, `gateway` and `reconciler`: the long-running roles.

use crate::cli::{ClusterArgs, Common, GatewayArgs};
use crate::settings::cluster_client;
use anyhow::{Context, Result};
use issueops_control_plane::ControlPlane;
use issueops_core::store::redact_url;
use issueops_core::Store;
use issueops_gateway::{router, AppState, Secrets};
use issueops_reconciler::{PruneSafety, Reconciler};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often the control plane looks at the inbox when nothing wakes it (a
/// gateway in another process cannot wake it).
const INBOX_POLL: Duration = Duration::from_secs(1);

fn secrets(args: &GatewayArgs) -> Result<Secrets> {
    let env = std::env::var("ISSUEOPS_WEBHOOK_SECRET").ok();
    Ok(Secrets::load(
        env.as_deref(),
        args.webhook_secret_file.as_deref(),
    )?)
}

async fn run_gateway(
    store: Store,
    args: &GatewayArgs,
    secrets: Secrets,
    stored: Arc<Notify>,
) -> Result<()> {
    let app = router(AppState {
        store,
        secrets,
        stored,
        body_limit: args.body_limit,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, "gateway listening: POST /webhooks/github, GET /healthz, /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("gateway server failed")
}

pub struct Backend {
    pub control_plane: ControlPlane,
    pub reconciler: Reconciler,
}

pub async fn backend(common: &Common, store: &Store, cluster: &ClusterArgs) -> Result<Backend> {
    let config = Arc::new(common.load_config()?);
    if config.repos.is_empty() {
        tracing::warn!("no repos configured: every event is recorded and ignored; add --repo owner/name or ISSUEOPS_REPOS");
    }
    let repo = common.state_repo()?;
    let cluster = cluster_client(cluster.cluster).await?;
    tracing::info!(state_repo = %repo.location(), cluster = %cluster.description, repos = ?config.repos, "backend ready");
    let github = crate::settings::github_from_env(&config)?.map(Arc::new);
    let mut reconciler = Reconciler::new(store.clone(), repo, cluster.client)
        .with_state_key(cluster.state_key)
        .with_instance(config.instance.clone())
        .with_job_watch(cluster.real)
        .with_safety(PruneSafety::from_config(&config.lifecycle));
    if let Some(key) = crate::settings::agent_api_key_from_env()? {
        reconciler = reconciler.with_agent_api_key(key);
    }
    match &github {
        Some(g) if g.can_mint_tokens() => {
            reconciler =
                reconciler.with_credentials(g.clone(), config.job.github_token_secret.clone())
        }
        Some(_) => tracing::warn!(
            "agent tokens need a GitHub App; with a personal token the Job gets no token file (GITHUB_TOKEN_FILE stays empty)"
        ),
        None => {}
    }
    Ok(Backend {
        control_plane: common.control_plane(store, config.clone(), github)?,
        reconciler,
    })
}

fn intervals(cluster: &ClusterArgs) -> (Duration, Duration) {
    (
        Duration::from_secs(cluster.poll_seconds.max(1)),
        Duration::from_secs(cluster.resync_seconds.max(1)),
    )
}

pub async fn serve(common: &Common, gateway: &GatewayArgs, cluster: &ClusterArgs) -> Result<()> {
    let secrets = secrets(gateway)?;
    let store = common.store().await?;
    store.migrate().await?;
    tracing::info!(database = %redact_url(&common.database_url()), "database migrated");
    let backend = backend(common, &store, cluster).await?;
    let stored = Arc::new(Notify::new());
    let committed = Arc::new(Notify::new());
    let (poll, resync) = intervals(cluster);
    tokio::select! {
        r = run_gateway(store, gateway, secrets, stored.clone()) => r,
        _ = backend.control_plane.run(stored, committed.clone(), INBOX_POLL) => Ok(()),
        _ = backend.reconciler.run(committed, poll, resync) => Ok(()),
    }
}

pub async fn gateway_only(common: &Common, gateway: &GatewayArgs) -> Result<()> {
    let secrets = secrets(gateway)?;
    let store = common.store().await?;
    store.ensure_migrated().await?;
    run_gateway(store, gateway, secrets, Arc::new(Notify::new())).await
}

pub async fn reconciler_only(common: &Common, cluster: &ClusterArgs) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let backend = backend(common, &store, cluster).await?;
    let committed = Arc::new(Notify::new());
    let (poll, resync) = intervals(cluster);
    tokio::select! {
        _ = backend.control_plane.run(Arc::new(Notify::new()), committed.clone(), INBOX_POLL) => Ok(()),
        _ = backend.reconciler.run(committed, poll, resync) => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

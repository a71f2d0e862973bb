//! `serve`, `gateway` and `reconciler`: the long-running roles.

use crate::cli::{ClusterArgs, Common, GatewayArgs, OpsArgs, UiArgs};
use crate::leader::{lead, Gate};
use crate::settings::{cluster_client, Cluster};
use anyhow::{bail, Context, Result};
use issueops_control_plane::ControlPlane;
use issueops_core::store::redact_url;
use issueops_core::Store;
use issueops_gateway::{AppState, Secrets};
use issueops_reconciler::{PruneSafety, Reconciler};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the control plane looks at the inbox when nothing wakes it (a
/// gateway in another process cannot wake it).
const INBOX_POLL: Duration = Duration::from_secs(1);
/// Longest wait for work in progress after SIGTERM (Kubernetes kills after 30 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

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
    config: &issueops_core::config::GatewayConfig,
    secrets: Secrets,
    stored: Arc<Notify>,
    stop: CancellationToken,
) -> Result<()> {
    let state = AppState::new(store, secrets, stored, args.body_limit, config);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, "gateway listening: POST /webhooks/github, GET /healthz, /readyz");
    // In-flight requests finish after `stop`; new connections are refused.
    issueops_gateway::serve(listener, state, stop.cancelled_owned())
        .await
        .context("gateway server failed")
}

pub struct Backend {
    pub control_plane: ControlPlane,
    pub reconciler: Reconciler,
    pub config: Arc<issueops_core::Config>,
    pub github: Option<Arc<issueops_github::GitHub>>,
    /// The cluster the reconciler applies to (a clone of its client).
    pub cluster: Cluster,
}

pub async fn backend(common: &Common, store: &Store, cluster: &ClusterArgs) -> Result<Backend> {
    let mut config = common.load_config()?;
    if config.repos.is_empty() {
        tracing::warn!("no repos configured: every event is recorded and ignored; add --repo owner/name or ISSUEOPS_REPOS");
    }
    let repo = common.state_repo()?;
    let cluster = cluster_client(cluster.cluster, &common.data_dir).await?;
    if !cluster.real && config.standin.job_seconds > 0 {
        config.lifecycle.run_retention_seconds = config.standin.run_retention_seconds;
        tracing::warn!(
            job_seconds = config.standin.job_seconds,
            run_retention_seconds = config.standin.run_retention_seconds,
            "stand-in cluster: Jobs are SIMULATED (succeed after standin.job_seconds, no agent runs); finished runs are pruned after standin.run_retention_seconds"
        );
    }
    let config = Arc::new(config);
    tracing::info!(state_repo = %repo.location(), cluster = %cluster.description, repos = ?config.repos, "backend ready");
    let github = crate::settings::github_from_env(&config)?.map(Arc::new);
    let mut reconciler = Reconciler::new(store.clone(), repo, cluster.client.clone())
        .with_state_key(cluster.state_key.clone())
        .with_instance(config.instance.clone())
        .with_cluster(&config.cluster)
        .with_job_watch(cluster.real)
        .with_safety(PruneSafety::from_config(&config.lifecycle))
        .with_trusted_keys(common.trusted_keys()?);
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
        control_plane: common.control_plane(store, config.clone(), github.clone())?,
        reconciler,
        config,
        github,
        cluster,
    })
}

/// The stand-in's upkeep (saving, simulated Jobs) when the backend uses it;
/// otherwise never finishes.
fn standin_upkeep(
    common: &Common,
    store: &Store,
    backend: &Backend,
) -> impl std::future::Future<Output = ()> + use<> {
    let upkeep = (!backend.cluster.real).then(|| {
        let seconds = backend.config.standin.job_seconds;
        crate::standin::run(
            backend.cluster.client.clone(),
            store.clone(),
            common.data_dir.clone(),
            backend.cluster.state_key.clone(),
            (seconds > 0).then_some(seconds),
        )
    });
    async move {
        match upkeep {
            Some(upkeep) => upkeep.await,
            None => std::future::pending().await,
        }
    }
}

/// Binds the staff UI and prints how to sign in; `None` with `--no-ui`.
async fn staff_ui(
    common: &Common,
    store: &Store,
    backend: &Backend,
    args: &UiArgs,
    webhook: Option<std::net::SocketAddr>,
) -> Result<Option<(tokio::net::TcpListener, issueops_ui::AppState)>> {
    if args.no_ui {
        return Ok(None);
    }
    if webhook.is_some_and(|w| w.port() == args.ui_listen.port()) {
        bail!(
            "the staff UI must not share the webhook's port {}: choose another --ui-listen (or --no-ui)",
            args.ui_listen.port()
        );
    }
    let config = &backend.config;
    let github_sign_in = match &config.ui.github_oauth {
        Some(oauth) => {
            let file = std::env::var("ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE")
                .ok()
                .filter(|v| !v.is_empty())
                .context("ui.github_oauth needs its client secret in the file named by ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE")?;
            let secret = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the OAuth client secret {file}"))?;
            Some((oauth.clone(), secret.trim().to_string()))
        }
        None if !args.ui_listen.ip().is_loopback() => bail!(
            "without GitHub sign-in (ui.github_oauth) the staff UI listens on loopback only, not {}",
            args.ui_listen
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.ui_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the staff UI (--ui-listen)",
                args.ui_listen
            )
        })?;
    let bound = listener.local_addr()?;
    let public_url = config
        .ui
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"))
        .trim_end_matches('/')
        .to_string();
    let github_sign_in = match github_sign_in {
        Some((oauth, secret)) => Some(issueops_ui::oauth::GitHubSignIn::new(
            oauth,
            secret,
            config.github.api_url.clone(),
            format!("{public_url}/signin/github/callback"),
        )?),
        None => None,
    };
    let key_file = std::env::var("ISSUEOPS_UI_COOKIE_KEY_FILE")
        .ok()
        .filter(|v| !v.is_empty());
    let cookie_key =
        issueops_ui::session::cookie_key(key_file.as_deref().map(std::path::Path::new))
            .map_err(anyhow::Error::msg)?;
    let state = issueops_ui::AppState::new(issueops_ui::UiParts {
        store: store.clone(),
        repo: common.state_repo()?,
        control_plane: common.control_plane(store, config.clone(), backend.github.clone())?,
        config: config.clone(),
        cluster: backend.cluster.client.clone(),
        cluster_description: backend.cluster.description.clone(),
        simulated: !backend.cluster.real && config.standin.job_seconds > 0,
        state_key: backend.cluster.state_key.clone(),
        public_url: public_url.clone(),
        cookie_key,
        github_sign_in,
        local_login: std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "operator".into()),
    });
    match state.sign_in_link() {
        Some(link) => {
            tracing::info!(address = %bound, "staff UI listening");
            println!(
                "staff UI: {public_url}
  sign in (one-time link): {link}"
            );
        }
        None => {
            tracing::info!(address = %bound, "staff UI listening (GitHub sign-in)");
            println!("staff UI: {public_url} (sign in with GitHub)");
        }
    }
    Ok(Some((listener, state)))
}

async fn run_ui(
    ui: Option<(tokio::net::TcpListener, issueops_ui::AppState)>,
    stop: CancellationToken,
) -> Result<()> {
    match ui {
        Some((listener, state)) => issueops_ui::serve(listener, state, stop.cancelled_owned())
            .await
            .context("staff UI server failed"),
        None => {
            stop.cancelled().await;
            Ok(())
        }
    }
}

fn intervals(cluster: &ClusterArgs) -> (Duration, Duration) {
    (
        Duration::from_secs(cluster.poll_seconds.max(1)),
        Duration::from_secs(cluster.resync_seconds.max(1)),
    )
}

/// The control plane and the reconciler, each run while this replica leads
/// its role, until `stop`.
async fn run_backend(
    store: &Store,
    backend: &Backend,
    wake: Arc<Notify>,
    (poll, resync): (Duration, Duration),
    stop: CancellationToken,
) -> Result<()> {
    let config = &backend.config;
    let committed = Arc::new(Notify::new());
    let control_plane_gate = Gate::Database {
        store: store.clone(),
        role: issueops_control_plane::WRITER_ROLE,
    };
    let reconciler_gate = if backend.cluster.real {
        let client = &backend.cluster.client;
        let namespace = config
            .cluster
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Gate::Lease(Box::new(issueops_reconciler::lease::LeaseLock::new(
            client.clone(),
            &namespace,
            &format!("issueops-reconciler-{}", config.instance),
            &crate::leader::holder_identity(),
            Duration::from_secs(config.cluster.lease_seconds),
        )))
    } else {
        Gate::Database {
            store: store.clone(),
            role: issueops_reconciler::WRITER_ROLE,
        }
    };
    let control_plane = lead(control_plane_gate, stop.clone(), |lost| {
        backend
            .control_plane
            .run(wake.clone(), committed.clone(), INBOX_POLL, lost)
    });
    let reconciler = lead(reconciler_gate, stop.clone(), |lost| {
        backend
            .reconciler
            .run(committed.clone(), poll, resync, lost)
    });
    tokio::join!(control_plane, reconciler);
    Ok(())
}

/// Runs the parts of a role side by side until a signal or the first
/// failure, which stops the others (each finishing what it is doing).
async fn until_stopped(stop: CancellationToken, parts: Vec<Part<'_>>) -> Result<()> {
    let all = futures::future::join_all(parts.into_iter().map(|part| {
        let stop = stop.clone();
        async move {
            let result = part.await;
            stop.cancel();
            result
        }
    }));
    // Open connections that never end (the UI's live updates) must not keep
    // the process past Kubernetes' grace period.
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        results = all => results.into_iter().collect::<Result<Vec<()>>>().map(|_| ()),
        _ = deadline => {
            tracing::warn!(limit = ?DRAIN_LIMIT, "draining took too long; stopping anyway");
            Ok(())
        }
    }
}

type Part<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// The parts `serve` and `reconciler` share: the operations endpoint, the
/// staff UI, the stand-in's upkeep, and the control plane with the reconciler.
fn backend_parts<'a>(
    common: &'a Common,
    store: &'a Store,
    backend: &'a Backend,
    ui: Option<(tokio::net::TcpListener, issueops_ui::AppState)>,
    (ops, cluster): (&'a OpsArgs, &'a ClusterArgs),
    wake: Arc<Notify>,
    stop: &CancellationToken,
) -> Vec<Part<'a>> {
    let upkeep = standin_upkeep(common, store, backend);
    let stopped = stop.clone();
    vec![
        Box::pin(crate::ops_http::serve(
            ops.metrics_listen,
            store.clone(),
            stop.clone(),
        )),
        Box::pin(run_ui(ui, stop.clone())),
        Box::pin(async move {
            tokio::select! {
                _ = upkeep => {}
                _ = stopped.cancelled() => {}
            }
            Ok(())
        }),
        Box::pin(run_backend(
            store,
            backend,
            wake,
            intervals(cluster),
            stop.clone(),
        )),
    ]
}

pub async fn serve(
    common: &Common,
    gateway: &GatewayArgs,
    cluster: &ClusterArgs,
    ui: &UiArgs,
    ops: &OpsArgs,
) -> Result<()> {
    let secrets = secrets(gateway)?;
    // A bad config file is said before anything is created or migrated.
    common.load_config()?;
    let store = common.service_store().await?;
    store.migrate().await?;
    tracing::info!(database = %redact_url(&common.database_url()), "database migrated");
    let backend = backend(common, &store, cluster).await?;
    let ui = staff_ui(common, &store, &backend, ui, Some(gateway.listen)).await?;
    let stop = crate::shutdown::on_signal();
    let stored = Arc::new(Notify::new());
    let mut parts = backend_parts(
        common,
        &store,
        &backend,
        ui,
        (ops, cluster),
        stored.clone(),
        &stop,
    );
    parts.push(Box::pin(run_gateway(
        store.clone(),
        gateway,
        &backend.config.gateway,
        secrets,
        stored,
        stop.clone(),
    )));
    until_stopped(stop, parts).await
}

pub async fn gateway_only(common: &Common, gateway: &GatewayArgs, ops: &OpsArgs) -> Result<()> {
    let secrets = secrets(gateway)?;
    let config = common.load_config()?;
    let store = common.service_store().await?;
    store.ensure_migrated().await?;
    let stop = crate::shutdown::on_signal();
    until_stopped(
        stop.clone(),
        vec![
            Box::pin(crate::ops_http::serve(
                ops.metrics_listen,
                store.clone(),
                stop.clone(),
            )),
            Box::pin(run_gateway(
                store.clone(),
                gateway,
                &config.gateway,
                secrets,
                Arc::new(Notify::new()),
                stop.clone(),
            )),
        ],
    )
    .await
}

pub async fn reconciler_only(
    common: &Common,
    cluster: &ClusterArgs,
    ui: &UiArgs,
    ops: &OpsArgs,
) -> Result<()> {
    let store = common.service_store().await?;
    store.ensure_migrated().await?;
    let backend = backend(common, &store, cluster).await?;
    let ui = staff_ui(common, &store, &backend, ui, None).await?;
    let stop = crate::shutdown::on_signal();
    // Without a gateway in this process, nothing wakes the control plane: it
    // polls the inbox.
    let parts = backend_parts(
        common,
        &store,
        &backend,
        ui,
        (ops, cluster),
        Arc::new(Notify::new()),
        &stop,
    );
    until_stopped(stop, parts).await
}

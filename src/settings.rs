//! Builds the shared parts (config, store, state repo, templates, cluster
//! client) from the command line. Decides nothing about events.

use crate::cli::{ClusterMode, Common};
use anyhow::{bail, Context, Result};
use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::signing::{Signer, TrustedKeys};
use issueops_core::state_repo::StateRepo;
use issueops_core::{Config, Store};
use issueops_github::{Credentials, GitHub, Settings};
use std::time::Duration;

impl Common {
    pub fn load_config(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config.repos.extend(
            self.repos
                .iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty()),
        );
        config.github.trigger_allowlist.extend(
            self.allow
                .iter()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
        config.validate()?;
        Ok(config)
    }

    fn ensure_data_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data dir {}", self.data_dir.display()))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("issueops.db").display()))
    }

    pub async fn store(&self) -> Result<Store> {
        self.ensure_data_dir()?;
        Ok(Store::connect(&self.database_url()).await?)
    }

    /// The store of a long-running service: an unreachable database is
    /// tried again for `--database-wait-seconds`, each failure logged with
    /// its cause and the time of the next try (1 s, doubling, at most 30 s).
    pub async fn service_store(&self) -> Result<Store> {
        self.ensure_data_dir()?;
        let give_up =
            std::time::Instant::now() + std::time::Duration::from_secs(self.database_wait_seconds);
        let mut pause = std::time::Duration::from_secs(1);
        loop {
            match Store::connect(&self.database_url()).await {
                Err(e @ issueops_core::store::StoreError::Connect { .. }) => {
                    let left = give_up.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(e.into());
                    }
                    let wait = pause.min(left);
                    tracing::warn!(
                        error = %e,
                        "database unreachable; trying again in {}s (giving up in {}s, --database-wait-seconds)",
                        wait.as_secs().max(1),
                        left.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                }
                other => return Ok(other?),
            }
        }
    }

    pub fn state_repo(&self) -> Result<StateRepo> {
        self.ensure_data_dir()?;
        let repo = match &self.state_repo {
            Some(url) if url.contains("://") || url.starts_with("git@") => StateRepo::remote(
                url,
                &self.data_dir.join("state-cache.git"),
                &self.state_branch,
                std::env::var("ISSUEOPS_STATE_REPO_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
            )?,
            Some(path) => StateRepo::local(std::path::Path::new(path), &self.state_branch)?,
            None => StateRepo::local(&self.data_dir.join("state.git"), &self.state_branch)?,
        };
        Ok(match self.signer()? {
            Some(signer) => repo.with_signer(signer),
            None => repo,
        })
    }

    /// issueops's signing key: `ISSUEOPS_SIGNING_KEY_FILE`, else the config's
    /// `review.signing_key_file`; `None` when neither is set.
    pub fn signer(&self) -> Result<Option<std::sync::Arc<Signer>>> {
        let path = match std::env::var("ISSUEOPS_SIGNING_KEY_FILE")
            .ok()
            .filter(|p| !p.is_empty())
        {
            Some(p) => Some(p),
            None => self.load_config()?.review.signing_key_file,
        };
        path.map(|p| {
            Ok(std::sync::Arc::new(Signer::from_file(
                std::path::Path::new(&p),
            )?))
        })
        .transpose()
    }

    /// The keys whose commits the reconciler applies: issueops's own and the
    /// reviewers'. Empty (nothing checked) when issueops does not sign.
    pub fn trusted_keys(&self) -> Result<TrustedKeys> {
        let Some(signer) = self.signer()? else {
            return Ok(TrustedKeys::default());
        };
        Ok(TrustedKeys::new(
            Some(&signer),
            &self.load_config()?.review.trusted_keys,
        )?)
    }

    /// The control plane for the configured store, repo and templates, with
    /// `github` when it is configured.
    pub fn control_plane(
        &self,
        store: &Store,
        config: std::sync::Arc<Config>,
        github: Option<std::sync::Arc<GitHub>>,
    ) -> Result<ControlPlane> {
        let control_plane =
            ControlPlane::new(store.clone(), self.state_repo()?, config, self.templates()?);
        Ok(match github {
            Some(github) => control_plane.with_github(github),
            None => control_plane,
        })
    }

    pub fn templates(&self) -> Result<Templates> {
        Ok(match &self.templates_dir {
            Some(dir) => Templates::from_dir(dir)?,
            None => Templates::embedded(),
        })
    }
}

/// The agents' model API key, from the file `ISSUEOPS_AGENT_API_KEY_FILE`
/// (never a flag or an environment value of its own: those show in process
/// listings and crash dumps).
pub fn agent_api_key_from_env() -> Result<Option<issueops_reconciler::credentials::AgentApiKey>> {
    let Some(path) = std::env::var("ISSUEOPS_AGENT_API_KEY_FILE")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the agent API key file {path}"))?;
    let key = key.trim();
    if key.is_empty() {
        bail!("the agent API key file {path} is empty");
    }
    Ok(Some(issueops_reconciler::credentials::AgentApiKey(
        key.to_string(),
    )))
}

/// GitHub credentials from the environment (never from flags or files that
/// get committed): a token, or an App id with its private key file.
pub fn github_from_env(config: &Config) -> Result<Option<GitHub>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let credentials = match (
        env("ISSUEOPS_GITHUB_TOKEN"),
        env("ISSUEOPS_GITHUB_APP_ID"),
        env("ISSUEOPS_GITHUB_APP_KEY_FILE"),
    ) {
        (Some(token), None, _) => Credentials::Token(token),
        (None, Some(id), Some(key_file)) => Credentials::App {
            app_id: id
                .parse()
                .context("ISSUEOPS_GITHUB_APP_ID must be a number")?,
            private_key_pem: std::fs::read_to_string(&key_file)
                .with_context(|| format!("cannot read the GitHub App key {key_file}"))?,
        },
        (None, None, None) => {
            tracing::warn!(
                "GitHub not configured (ISSUEOPS_GITHUB_TOKEN, or ISSUEOPS_GITHUB_APP_ID and ISSUEOPS_GITHUB_APP_KEY_FILE): \
                 no GitHub calls; triggers are checked only against the allowlist (--allow), when one is set; nothing is reported on issues"
            );
            return Ok(None);
        }
        (Some(_), Some(_), _) => {
            bail!("set either ISSUEOPS_GITHUB_TOKEN or the GitHub App variables, not both")
        }
        _ => {
            bail!("a GitHub App needs both ISSUEOPS_GITHUB_APP_ID and ISSUEOPS_GITHUB_APP_KEY_FILE")
        }
    };
    match &credentials {
        Credentials::App { app_id, .. } => {
            tracing::info!(app_id, api = %config.github.api_url, "GitHub: as GitHub App {app_id}")
        }
        Credentials::Token(_) => {
            tracing::info!(api = %config.github.api_url, "GitHub: with a personal token")
        }
    }
    Ok(Some(GitHub::new(Settings {
        api_url: config.github.api_url.clone(),
        credentials,
        max_attempts: config.github.max_attempts.max(1),
        max_wait: Duration::from_secs(config.github.max_wait_seconds),
        timeout: Duration::from_secs(10),
    })?))
}

/// The Kubernetes API the reconciler applies to.
pub struct Cluster {
    pub client: kube::Client,
    /// For people: which API this is.
    pub description: String,
    /// Key for the reconciler's last applied commit: each saved stand-in
    /// cluster has its own, so a new (empty) one gets a full apply.
    pub state_key: String,
    /// A real API server: watch Jobs as well as listing them.
    pub real: bool,
}

/// Picks the Kubernetes API the reconciler applies to; the stand-in keeps
/// its objects in `data_dir`.
pub async fn cluster_client(mode: ClusterMode, data_dir: &std::path::Path) -> Result<Cluster> {
    if mode != ClusterMode::InMemory {
        match reachable_cluster().await {
            Ok(client) => {
                return Ok(Cluster {
                    client,
                    description: "the cluster of the current kubeconfig / in-cluster config".into(),
                    state_key: issueops_reconciler::DEFAULT_STATE_KEY.into(),
                    real: true,
                })
            }
            Err(e) if mode == ClusterMode::Kube => {
                return Err(e.context(
                    "no Kubernetes cluster reachable (set KUBECONFIG, or use --cluster in-memory)",
                ))
            }
            Err(e) => tracing::warn!(
                reason = %e,
                "NO CLUSTER REACHABLE: applying to an in-process Kubernetes API stand-in; no agent will run"
            ),
        }
    }
    let (client, state_key) = crate::standin::open(data_dir).await?;
    Ok(Cluster {
        client,
        description: format!(
            "an in-process Kubernetes API stand-in (kube-fake-client, saved in {}): objects are stored, no agent runs",
            data_dir.join(crate::standin::FILE).display()
        ),
        state_key,
        real: false,
    })
}

async fn reachable_cluster() -> Result<kube::Client> {
    let client = kube::Client::try_default()
        .await
        .context("no kubeconfig or in-cluster config")?;
    tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
        .await
        .context("the API server did not answer within 5 s")?
        .context("the API server refused the version request")?;
    Ok(client)
}

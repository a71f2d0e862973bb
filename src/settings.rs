//! Builds the shared parts (config, store, state repo, templates, cluster
//! client) from the command line. Decides nothing about events.

use crate::cli::{ClusterMode, Common};
use anyhow::{Context, Result};
use issueops_control_plane::render::Templates;
use issueops_core::state_repo::StateRepo;
use issueops_core::{Config, Store};
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
        Ok(repo)
    }

    pub fn templates(&self) -> Result<Templates> {
        Ok(match &self.templates_dir {
            Some(dir) => Templates::from_dir(dir)?,
            None => Templates::embedded(),
        })
    }
}

/// The Kubernetes API the reconciler applies to.
pub struct Cluster {
    pub client: kube::Client,
    /// For people: which API this is.
    pub description: String,
    /// Key for the reconciler's last applied commit: the stand-in starts empty
    /// at every start, so it gets a fresh key and a full apply.
    pub state_key: String,
    /// A real API server: watch Jobs as well as listing them.
    pub real: bool,
}

/// Picks the Kubernetes API the reconciler applies to.
pub async fn cluster_client(mode: ClusterMode) -> Result<Cluster> {
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
                "NO CLUSTER REACHABLE: applying to an in-process Kubernetes API stand-in; nothing will run"
            ),
        }
    }
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .context("cannot start the in-process Kubernetes API stand-in")?;
    Ok(Cluster {
        client,
        description: "an in-process Kubernetes API stand-in (kube-fake-client): objects are stored, nothing runs".into(),
        state_key: format!("in-memory-{}", hex::encode(rand::random::<[u8; 8]>())),
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

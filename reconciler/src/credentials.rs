//! Agent credentials: a short-lived GitHub token, limited to the run's repo,
//! written straight into the run's namespace as a Secret — never into git,
//! never into a log line or an audit row. Refreshed before it expires while
//! the run is active; deleted when the run ends. The Job only names the Secret.

use crate::Reconciler;
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::store::runs::RunState;
use issueops_core::{FIELD_MANAGER, INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeMap;

/// The agent's model API key (say OpenAI's); `Debug` never shows it.
#[derive(Clone)]
pub struct AgentApiKey(pub String);

impl std::fmt::Debug for AgentApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentApiKey(***)")
    }
}

/// A token is replaced when it has less than this left (GitHub's last one hour).
const REFRESH_MARGIN_SECS: i64 = 15 * 60;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Store(#[from] issueops_core::store::StoreError),
    #[error("GitHub: {0}")]
    GitHub(String),
    #[error("writing the agent Secret in {namespace}: {source}")]
    Kube {
        namespace: String,
        source: kube::Error,
    },
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CredentialsReport {
    pub minted: Vec<String>,
    pub deleted: Vec<String>,
}

impl Reconciler {
    /// Writes, refreshes and deletes the agent token Secrets. `now` in epoch
    /// seconds. Does nothing without GitHub App credentials.
    pub async fn refresh_credentials(
        &self,
        now: i64,
    ) -> Result<CredentialsReport, CredentialsError> {
        let mut report = CredentialsReport::default();
        let Some((github, secret_name)) = &self.credentials else {
            return Ok(report);
        };
        let written: BTreeMap<String, (String, i64)> = self
            .store
            .agent_secrets()
            .await?
            .into_iter()
            .map(|(ns, run, exp)| (ns, (run, exp)))
            .collect();
        let runs = self.store.list_runs().await?;
        for run in runs
            .iter()
            .filter(|r| matches!(r.run_state(), Some(RunState::Applied | RunState::Running)))
        {
            let fresh = written
                .get(&run.namespace)
                .is_some_and(|(id, exp)| *id == run.run_id && exp - now > REFRESH_MARGIN_SECS);
            if fresh {
                continue;
            }
            self.write_token(github, secret_name, run).await?;
            report.minted.push(run.namespace.clone());
        }
        for (namespace, (run_id, _)) in &written {
            let active = runs
                .iter()
                .any(|r| r.run_id == *run_id && r.run_state().is_some_and(|s| s.is_active()));
            if active {
                continue;
            }
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let params = DeleteParams::default();
            match crate::apply::with_backoff("agent Secret", || api.delete(secret_name, &params))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(CredentialsError::Kube {
                        namespace: namespace.clone(),
                        source,
                    })
                }
            }
            self.store.forget_agent_secret(namespace).await?;
            let audit = AuditEvent::new(kind::CREDENTIALS, "deleted")
                .run(run_id.clone())
                .object(format!("Secret/{namespace}/{secret_name}"));
            self.store.append_audit(&audit).await?;
            report.deleted.push(namespace.clone());
        }
        Ok(report)
    }
}

impl Reconciler {
    /// Mints a token for `run`'s repo and writes it as the agent Secret in the
    /// run's namespace, recorded and audited (expiry only, never the token).
    async fn write_token(
        &self,
        github: &issueops_github::GitHub,
        secret_name: &str,
        run: &issueops_core::store::runs::Run,
    ) -> Result<(), CredentialsError> {
        let token = github
            .mint_repo_token(&run.repo)
            .await
            .map_err(|e| CredentialsError::GitHub(e.to_string()))?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(secret_name.to_string()),
                namespace: Some(run.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                    (INSTANCE_LABEL.to_string(), self.instance.clone()),
                    (crate::RUN_LABEL.to_string(), run.run_id.clone()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "issueops.dev/expires-at".to_string(),
                    token.expires_at.to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some({
                let mut data =
                    BTreeMap::from([("token".to_string(), ByteString(token.token.into_bytes()))]);
                if let Some(key) = &self.agent_api_key {
                    data.insert(
                        "agent-api-key".to_string(),
                        ByteString(key.0.clone().into_bytes()),
                    );
                }
                data
            }),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &run.namespace);
        let (params, patch) = (
            PatchParams::apply(FIELD_MANAGER).force(),
            Patch::Apply(&secret),
        );
        crate::apply::with_backoff("agent Secret", || api.patch(secret_name, &params, &patch))
            .await
            .map_err(|source| CredentialsError::Kube {
                namespace: run.namespace.clone(),
                source,
            })?;
        self.store
            .record_agent_secret(&run.namespace, &run.run_id, token.expires_at)
            .await?;
        let audit = AuditEvent::new(kind::CREDENTIALS, "written")
            .run(run.run_id.clone())
            .object(format!("Secret/{}/{secret_name}", run.namespace))
            .detail(json!({ "repo": run.repo, "expires_at": token.expires_at }));
        self.store.append_audit(&audit).await?;
        tracing::info!(run_id = %run.run_id, namespace = %run.namespace, expires_at = token.expires_at, "agent token written");
        Ok(())
    }

    /// Before a run's Job is applied: its token Secret exists, so the pod
    /// never starts without it. Nothing to do without a GitHub App.
    pub(crate) async fn token_before_job(&self, run_id: &str) -> Result<(), CredentialsError> {
        let Some((github, secret_name)) = &self.credentials else {
            return Ok(());
        };
        let Some(run) = self.store.get_run(run_id).await? else {
            return Ok(());
        };
        let now = (issueops_core::now_ms() / 1000) as i64;
        let fresh = self
            .store
            .agent_secrets()
            .await?
            .into_iter()
            .any(|(ns, id, exp)| {
                ns == run.namespace && id == run.run_id && exp - now > REFRESH_MARGIN_SECS
            });
        if fresh {
            return Ok(());
        }
        self.write_token(github, secret_name, &run).await
    }
}

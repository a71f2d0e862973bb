//! What the cluster says about a run right now: its namespace, its Job and
//! the Job's pods (exists or not, conditions, every container), a snapshot
//! of the newest pod's log tail per container, and whether the agent token
//! Secret exists (never its value). Every call is bounded, and a failure is
//! shown, not hidden.

use issueops_core::store::views::RunView;
use issueops_reconciler::agent_result::container_statuses;
use issueops_reconciler::RUN_LABEL;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

/// The longest the UI waits for one answer from the API server.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines and bytes in the snapshot.
const LOG_LINES: i64 = 40;
const LOG_BYTES: i64 = 16 * 1024;

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// `None` when the API could not be asked.
    pub namespace_exists: Option<bool>,
    pub namespace_phase: Option<String>,
    pub jobs: Vec<JobView>,
    pub pods: Vec<PodView>,
    /// The newest pod's log tail, per step container that has started.
    pub logs: Vec<LogView>,
    /// `Some(true)` present, `Some(false)` absent, `None` unknown.
    pub token_secret: Option<bool>,
    /// How the Secret's presence was learnt.
    pub token_secret_source: String,
    /// Calls that failed, for people.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub name: String,
    pub active: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub start_time: Option<String>,
    pub completion_time: Option<String>,
    pub conditions: Vec<ConditionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConditionView {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PodView {
    pub name: String,
    pub phase: String,
    pub containers: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogView {
    pub pod: String,
    pub container: String,
    pub text: String,
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    call: impl Future<Output = Result<T, E>>,
    errors: &mut Vec<String>,
) -> Option<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            // API errors repeat their message in their debug form: the first
            // few hundred characters say it.
            let mut message = format!("{what}: {e}");
            if message.len() > 300 {
                let mut cut = 300;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push('…');
            }
            errors.push(message);
            None
        }
        Err(_) => {
            errors.push(format!("{what}: no answer within {CALL_TIMEOUT:?}"));
            None
        }
    }
}

/// Reads the run's live state. `token_secret` is the Secret's name;
/// `recorded_secret` what the reconciler recorded about writing it.
pub async fn run_cluster(
    client: &kube::Client,
    run: &RunView,
    token_secret: &str,
    recorded_secret: Option<bool>,
) -> ClusterView {
    let mut view = ClusterView::default();
    let errors = &mut view.errors;
    let ns = run.namespace.as_str();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(found) = bounded("namespace", namespaces.get_opt(ns), errors).await {
        view.namespace_exists = Some(found.is_some());
        view.namespace_phase = found.and_then(|n| n.status).and_then(|s| s.phase);
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let by_run = ListParams::default().labels(&format!("{RUN_LABEL}={}", run.run_id));
    if let Some(list) = bounded("jobs", jobs.list(&by_run), errors).await {
        view.jobs = list.items.into_iter().map(job_view).collect();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Some(list) = bounded("pods", pods.list(&by_run), errors).await {
        let mut items = list.items;
        items.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
        view.pods = items.iter().map(pod_view).collect();
        if let Some(newest) = items.last() {
            let name = newest.metadata.name.clone().unwrap_or_default();
            for container in started_containers(newest) {
                let params = LogParams {
                    container: Some(container.clone()),
                    tail_lines: Some(LOG_LINES),
                    limit_bytes: Some(LOG_BYTES),
                    ..LogParams::default()
                };
                let what = format!("log of {container}");
                if let Some(text) = bounded(&what, pods.logs(&name, &params), errors).await {
                    // What the agent printed is hostile data: no
                    // credential it echoed reaches a page.
                    view.logs.push(LogView {
                        pod: name.clone(),
                        container,
                        text: issueops_core::transcript::redact(&text, &[]),
                    });
                }
            }
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    match tokio::time::timeout(CALL_TIMEOUT, secrets.get_metadata_opt(token_secret)).await {
        Ok(Ok(found)) => {
            view.token_secret = Some(found.is_some());
            view.token_secret_source = "the cluster (metadata only)".into();
        }
        // The reconciler may write Secrets but not read them (least
        // privilege): then its own record is what we know.
        _ => {
            view.token_secret = recorded_secret;
            view.token_secret_source = "the reconciler's record".into();
        }
    }
    view
}

fn job_view(job: Job) -> JobView {
    let status = job.status.unwrap_or_default();
    JobView {
        name: job.metadata.name.unwrap_or_default(),
        active: status.active.unwrap_or(0),
        succeeded: status.succeeded.unwrap_or(0),
        failed: status.failed.unwrap_or(0),
        start_time: status.start_time.map(|t| t.0.to_string()),
        completion_time: status.completion_time.map(|t| t.0.to_string()),
        conditions: status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| ConditionView {
                type_: c.type_,
                status: c.status,
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
            })
            .collect(),
    }
}

/// The containers that have a log: running or terminated.
fn started_containers(pod: &Pod) -> Vec<String> {
    container_statuses(pod)
        .filter(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
        .map(|c| c.name.clone())
        .collect()
}

fn pod_view(pod: &Pod) -> PodView {
    let containers = container_statuses(pod)
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let what = if let Some(t) = state.terminated {
                format!(
                    "terminated (exit {}{})",
                    t.exit_code,
                    t.reason.map(|r| format!(", {r}")).unwrap_or_default()
                )
            } else if let Some(w) = state.waiting {
                format!("waiting ({})", w.reason.unwrap_or_default())
            } else if state.running.is_some() {
                "running".to_string()
            } else {
                "unknown".to_string()
            };
            format!("{}: {what}", c.name)
        })
        .collect();
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        containers,
    }
}

//! Is it healthy: each run's Job status, read from the cluster, moves the run
//! through `applied → running → succeeded | failed`.
//!
//! Two observers share one handler ([`record_job`]): a kube-runtime watcher for
//! a real cluster ([`watch_jobs`], events as they happen) and a periodic list
//! ([`observe_jobs`], one paged LIST by label selector per pass, never a GET
//! per Job) that runs everywhere as the fallback and in tests. Run states only
//! move forward, so a late, repeated or doubled observation changes nothing.

use crate::{agent_result, RUN_LABEL};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::store::runs::RunState;
use issueops_core::store::StoreError;
use issueops_core::Store;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde_json::json;

/// Jobs per LIST page.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listing Jobs failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("watching Jobs failed: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
}

/// The reason on the Complete condition of a Job that the in-process
/// stand-in simulated (no agent ran): carried onto the run, so a simulated
/// success is never mistaken for a real one.
pub const SIMULATED_REASON: &str = "Simulated";

/// The run state a Job's status means, with the reason for a failure (or for
/// a simulated success).
pub fn job_phase(job: &Job) -> (RunState, Option<String>) {
    let Some(status) = &job.status else {
        return (RunState::Applied, None);
    };
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => {
                let simulated = (c.reason.as_deref() == Some(SIMULATED_REASON)).then(|| {
                    format!(
                        "simulated: {}",
                        c.message.as_deref().unwrap_or("no agent ran")
                    )
                });
                return (RunState::Succeeded, simulated);
            }
            "Failed" | "FailureTarget" => {
                let reason = [c.reason.as_deref(), c.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                return (RunState::Failed, Some(reason).filter(|r| !r.is_empty()));
            }
            _ => {}
        }
    }
    if status.active.unwrap_or(0) > 0 || status.start_time.is_some() {
        return (RunState::Running, None);
    }
    (RunState::Applied, None)
}

/// What one pass saw and changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObserveReport {
    pub jobs_seen: usize,
    /// `(run id, new state)` for every run that moved.
    pub moved: Vec<(String, RunState)>,
    /// LIST calls made (pages).
    pub list_calls: usize,
}

/// Moves the run of `job` to what its status says, auditing the move. When
/// the Job has ended, the agent runner's result (the pod's termination
/// message) is recorded and decides success or failure.
/// Returns the new state when the run moved.
pub async fn record_job(
    client: &kube::Client,
    job: &Job,
    store: &Store,
) -> Result<Option<(String, RunState)>, StoreError> {
    let Some(run_id) = job.metadata.labels.as_ref().and_then(|l| l.get(RUN_LABEL)) else {
        return Ok(None);
    };
    let (mut state, mut reason) = job_phase(job);
    if state <= RunState::Applied {
        return Ok(None);
    }
    if state.is_finished() {
        let current = store.get_run(run_id).await?;
        if current.is_some_and(|r| r.run_state().is_some_and(|s| s.is_finished())) {
            return Ok(None); // already recorded: no second pod read
        }
        (state, reason) = record_result(client, job, run_id, state, reason, store).await?;
    }
    if !store
        .advance_run(run_id, state, None, reason.as_deref())
        .await?
    {
        return Ok(None);
    }
    tracing::info!(run_id = %run_id, state = state.as_str(), "run moved");
    let audit = AuditEvent::new(kind::JOB_STATUS, state.as_str())
        .run(run_id.clone())
        .object(format!(
            "Job/{}/{}",
            job.metadata.namespace.as_deref().unwrap_or_default(),
            job.metadata.name.as_deref().unwrap_or_default()
        ))
        .detail(json!({ "reason": reason }));
    store.append_audit(&audit).await?;
    Ok(Some((run_id.clone(), state)))
}

/// Reads and records the runner's result for an ended Job; returns the run's
/// end state and reason. Without a readable result the Job's verdict stands.
async fn record_result(
    client: &kube::Client,
    job: &Job,
    run_id: &str,
    state: RunState,
    reason: Option<String>,
    store: &Store,
) -> Result<(RunState, Option<String>), StoreError> {
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let ended = match agent_result::read(client, namespace, name).await {
        Ok(ended) => ended,
        Err(e) => {
            tracing::warn!(run_id, error = %e, "cannot read the agent's result; the Job's verdict stands");
            agent_result::Ended::default()
        }
    };
    if let Some(pod) = &ended.pod {
        // What the agent said outlives its pod (the run page shows it).
        if let Err(e) =
            crate::transcript::keep(client, store, namespace, pod, &ended.logged_steps, run_id)
                .await
        {
            tracing::warn!(run_id, error = %e, "cannot keep the agent's transcript");
        }
    }
    let message = ended.message;
    if let Some(result) = message
        .as_ref()
        .and_then(|m| agent_result::record(run_id, m))
    {
        if store.record_run_result(&result).await? {
            let audit = AuditEvent::new(kind::AGENT_RESULT, &result.outcome)
                .run(run_id.to_string())
                .object(format!("Job/{namespace}/{name}"))
                .detail(json!({
                    "pr_number": result.pr_number, "pr_url": result.pr_url,
                    "head_commit": result.head_commit, "reason": result.reason,
                    "resumed_session": result.resumed_session,
                    // Which image ran the agent, and where: the runtime's digest.
                    "node": ended.node, "agent_image_id": ended.agent_image_id,
                }));
            store.append_audit(&audit).await?;
            tracing::info!(run_id, outcome = %result.outcome, pr = ?result.pr_number, "agent result recorded");
        }
    }
    Ok(agent_result::verdict(state, reason, message.as_ref()))
}

/// Lists the managed Jobs of install `instance` and moves their runs forward.
/// A run whose Job was applied but is gone (deleted by a person or a tool) is
/// cancelled with that reason: its Job is never created again, and the issue
/// is free for the next run.
pub async fn observe_jobs(
    client: &kube::Client,
    store: &Store,
    instance: &str,
) -> Result<ObserveReport, ObserveError> {
    let api: Api<Job> = Api::all(client.clone());
    let mut params = ListParams::default()
        .labels(&issueops_core::managed_selector(instance))
        .limit(PAGE);
    let mut report = ObserveReport::default();
    // Read before listing: a run applied after this read is not judged missing.
    let expected: Vec<_> = store
        .list_runs()
        .await?
        .into_iter()
        .filter(|r| matches!(r.run_state(), Some(RunState::Applied | RunState::Running)))
        .collect();
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = crate::apply::with_backoff("list Jobs", || api.list(&params)).await?;
        report.list_calls += 1;
        for job in &page.items {
            report.jobs_seen += 1;
            if let Some(run) = job.metadata.labels.as_ref().and_then(|l| l.get(RUN_LABEL)) {
                seen.insert(run.clone());
            }
            if let Some(moved) = record_job(client, job, store).await? {
                report.moved.push(moved);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let missing: Vec<_> = expected
        .into_iter()
        .filter(|r| !seen.contains(&r.run_id))
        .collect();
    end_missing(client, store, &missing, &mut report).await?;
    Ok(report)
}

/// Ends the runs of `missing` whose Job is gone: each is looked up by name
/// once (a Job labelled before instance labels existed is still there), and
/// only a 404 means gone.
async fn end_missing(
    client: &kube::Client,
    store: &Store,
    missing: &[issueops_core::store::runs::Run],
    report: &mut ObserveReport,
) -> Result<(), ObserveError> {
    for run in missing {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &run.namespace);
        let name = format!("run-{}", run.run_id);
        if let Some(job) = crate::apply::with_backoff("get Job", || jobs.get_opt(&name)).await? {
            if let Some(moved) = record_job(client, &job, store).await? {
                report.moved.push(moved);
            }
            continue;
        }
        let reason = format!(
            "Job {}/{name} was deleted outside issueops; it is not re-created",
            run.namespace
        );
        if store
            .advance_run(&run.run_id, RunState::Cancelled, None, Some(&reason))
            .await?
        {
            tracing::warn!(run_id = %run.run_id, %reason, "run cancelled");
            let audit = AuditEvent::new(kind::JOB_STATUS, RunState::Cancelled.as_str())
                .run(run.run_id.clone())
                .object(format!("Job/{}/{name}", run.namespace))
                .detail(json!({ "reason": reason }));
            store.append_audit(&audit).await?;
            report.moved.push((run.run_id.clone(), RunState::Cancelled));
        }
    }
    Ok(())
}

/// What [`observe_jobs`] does when watches keep Jobs and the inventory
/// current: the watch moves runs as their Jobs change, so only runs whose
/// Job the inventory does not hold are looked at (no API call otherwise).
pub async fn end_runs_without_jobs(
    client: &kube::Client,
    store: &Store,
    inventory: &crate::inventory::Inventory,
) -> Result<ObserveReport, ObserveError> {
    let mut report = ObserveReport::default();
    let missing: Vec<_> = store
        .list_runs()
        .await?
        .into_iter()
        .filter(|r| matches!(r.run_state(), Some(RunState::Applied | RunState::Running)))
        .filter(|r| {
            let job = format!("Job/{}/run-{}", r.namespace, r.run_id);
            !inventory.contains(&job)
        })
        .collect();
    end_missing(client, store, &missing, &mut report).await?;
    Ok(report)
}

/// Watches the managed Jobs (kube-runtime watcher, with its backoff) and
/// moves runs as events arrive. Returns only when the stream ends or a store
/// error stops it; watch errors are logged and retried by the watcher.
pub async fn watch_jobs(
    client: kube::Client,
    store: Store,
    instance: &str,
) -> Result<(), ObserveError> {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let api: Api<Job> = Api::all(client.clone());
    let selector = issueops_core::managed_selector(instance);
    let stream = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(job) => {
                record_job(&client, &job, &store).await?;
            }
            Err(e) => tracing::warn!(error = %e, "Job watch interrupted; the watcher retries"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn job_with(status: JobStatus) -> Job {
        Job {
            status: Some(status),
            ..Default::default()
        }
    }

    fn condition(type_: &str, reason: &str) -> JobCondition {
        JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some("details".into()),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_the_job_status() {
        assert_eq!(job_phase(&Job::default()).0, RunState::Applied);
        let running = job_with(JobStatus {
            active: Some(1),
            ..Default::default()
        });
        assert_eq!(job_phase(&running).0, RunState::Running);
        let done = job_with(JobStatus {
            conditions: Some(vec![condition("Complete", "")]),
            ..Default::default()
        });
        assert_eq!(job_phase(&done).0, RunState::Succeeded);
        let failed = job_with(JobStatus {
            conditions: Some(vec![condition("Failed", "DeadlineExceeded")]),
            ..Default::default()
        });
        assert_eq!(
            job_phase(&failed),
            (RunState::Failed, Some("DeadlineExceeded: details".into()))
        );
    }
}

//! The agent runner's result, read from the termination message of the
//! run's pod when its Job ends, and what it means for the run.
//!
//! The message is a JSON document written by `issueops-runner` (the format is
//! documented in `agent/README.md`). A pod that died before the runner could
//! write it (OOM, image pull, node loss) has no such document: the Job's own
//! verdict stands, and any text the kubelet kept (the log tail, under
//! `FallbackToLogsOnError`) joins the reason.

use issueops_core::store::results::RunResult;
use issueops_core::store::runs::RunState;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use serde::Deserialize;

/// The run's steps, one container each, in the order they run (the Job
/// template names them; `clone` and `agent` are init containers). The last
/// one that terminated left the run's result.
pub const STEP_CONTAINERS: [&str; 3] = ["clone", "agent", "publish"];
/// Longest reason kept from free text.
const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Reported {
    pub outcome: String,
    pub pr_number: Option<i64>,
    pub pr_url: Option<String>,
    pub head_commit: Option<String>,
    pub reason: Option<String>,
    pub log_tail: Option<String>,
    #[serde(default)]
    pub resumed_session: bool,
}

/// What a terminated agent container left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Result(Reported),
    /// Not the runner's document: the kubelet's fallback (log tail) or other text.
    Text(String),
}

pub fn parse(message: &str) -> Option<Message> {
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return None;
    }
    match serde_json::from_str::<Reported>(trimmed) {
        Ok(r)
            if matches!(
                r.outcome.as_str(),
                "pr-opened" | "pr-updated" | "no-changes" | "failed"
            ) =>
        {
            Some(Message::Result(r))
        }
        _ => Some(Message::Text(
            trimmed.chars().take(MAX_REASON_CHARS).collect(),
        )),
    }
}

/// The run's end state and reason, from the Job's verdict and the message.
/// The runner knows best: `no-changes` is a success even though its exit
/// code failed the Job (so it is not retried).
pub fn verdict(
    job_state: RunState,
    job_reason: Option<String>,
    message: Option<&Message>,
) -> (RunState, Option<String>) {
    match message {
        Some(Message::Result(r)) => match r.outcome.as_str() {
            "failed" => {
                let reason = r
                    .reason
                    .clone()
                    .or(job_reason)
                    .unwrap_or_else(|| "the agent run failed".into());
                (RunState::Failed, Some(reason))
            }
            _ => (RunState::Succeeded, None),
        },
        Some(Message::Text(text)) if job_state == RunState::Failed => {
            let reason = match job_reason {
                Some(r) => format!("{r}; last output: {text}"),
                None => format!("last output: {text}"),
            };
            (RunState::Failed, Some(reason))
        }
        _ => (job_state, job_reason),
    }
}

/// The record to store for `run_id`, when the message is the runner's.
pub fn record(run_id: &str, message: &Message) -> Option<RunResult> {
    let Message::Result(r) = message else {
        return None;
    };
    Some(RunResult {
        run_id: run_id.to_string(),
        outcome: r.outcome.clone(),
        pr_number: r.pr_number,
        pr_url: r.pr_url.clone(),
        head_commit: r.head_commit.clone(),
        reason: r.reason.clone(),
        resumed_session: r.resumed_session,
    })
}

/// What the Job's newest pod left: the termination message of the step that
/// ended it (the last of [`STEP_CONTAINERS`] that terminated; a failed step
/// stops the pod), and where the agent step ran.
#[derive(Debug, Default)]
pub struct Ended {
    pub message: Option<Message>,
    /// The node the pod ran on.
    pub node: Option<String>,
    /// The image the agent step ran, as the runtime reports it (`imageID`:
    /// the digest that ran, not the tag the Job named).
    pub agent_image_id: Option<String>,
    /// The pod that ran the steps, and the steps that have a log.
    pub pod: Option<String>,
    pub logged_steps: Vec<String>,
}

/// Reads [`Ended`] for a Job that has ended: one LIST by the Job's label.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    job_name: &str,
) -> Result<Ended, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}"));
    let list = crate::apply::with_backoff("list the run's pods", || pods.list(&params)).await?;
    let newest = list
        .items
        .iter()
        .filter_map(|p| last_step(p).map(|t| (p, t)))
        .max_by_key(|(_, t)| t.finished_at.as_ref().map(|f| f.0));
    let Some((pod, step)) = newest else {
        return Ok(Ended::default());
    };
    let agent_image_id = container_statuses(pod)
        .find(|c| c.name == "agent")
        .map(|c| c.image_id.clone())
        .filter(|i| !i.is_empty());
    let logged_steps = container_statuses(pod)
        .filter(|c| STEP_CONTAINERS.contains(&c.name.as_str()))
        .filter(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
        .map(|c| c.name.clone())
        .collect();
    Ok(Ended {
        pod: pod.metadata.name.clone(),
        logged_steps,
        message: step.message.as_deref().and_then(parse),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        agent_image_id,
    })
}

/// Every container status of the pod, init containers first, in the order
/// they run.
pub fn container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status.iter().flat_map(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
    })
}

/// The terminated state of the pod's last step that ran to an end.
fn last_step(pod: &Pod) -> Option<&ContainerStateTerminated> {
    let all: Vec<&ContainerStatus> = container_statuses(pod).collect();
    STEP_CONTAINERS.iter().rev().find_map(|step| {
        all.iter()
            .find(|c| c.name == *step)
            .and_then(|c| c.state.as_ref()?.terminated.as_ref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runners_document_decides_the_run() {
        let msg = parse(r#"{"outcome":"no-changes","head_commit":"abc","resumed_session":false}"#)
            .unwrap();
        assert_eq!(
            verdict(
                RunState::Failed,
                Some("PodFailurePolicy".into()),
                Some(&msg)
            ),
            (RunState::Succeeded, None)
        );
        let msg = parse(r#"{"outcome":"failed","reason":"the agent exited with status 7","resumed_session":false}"#)
            .unwrap();
        assert_eq!(
            verdict(RunState::Failed, None, Some(&msg)).1.as_deref(),
            Some("the agent exited with status 7")
        );
        let opened =
            parse(r#"{"outcome":"pr-opened","pr_number":4,"pr_url":"u","resumed_session":true}"#)
                .unwrap();
        let rec = record("r", &opened).unwrap();
        assert_eq!((rec.pr_number, rec.resumed_session), (Some(4), true));
    }

    fn pod(init: serde_json::Value, main: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p" },
            "status": { "initContainerStatuses": init, "containerStatuses": main },
        }))
        .unwrap()
    }

    fn status(name: &str, state: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "name": name, "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": state })
    }

    fn ended(code: i32, message: &str) -> serde_json::Value {
        serde_json::json!({ "terminated": { "exitCode": code, "message": message } })
    }

    /// The step that stopped the pod speaks for it: a failed `agent` when
    /// `publish` never started, `publish` when it ran, even though the init
    /// containers before it terminated too.
    #[test]
    fn the_last_step_that_ended_gives_the_result() {
        let waiting = serde_json::json!({ "waiting": { "reason": "PodInitializing" } });
        let failed_agent = pod(
            serde_json::json!([
                status("clone", ended(0, "")),
                status("agent", ended(1, "agent broke"))
            ]),
            serde_json::json!([status("publish", waiting)]),
        );
        assert_eq!(
            last_step(&failed_agent).and_then(|t| t.message.as_deref()),
            Some("agent broke")
        );
        let published = pod(
            serde_json::json!([status("clone", ended(0, "")), status("agent", ended(0, ""))]),
            serde_json::json!([status("publish", ended(0, "the result"))]),
        );
        assert_eq!(
            last_step(&published).and_then(|t| t.message.as_deref()),
            Some("the result")
        );
        let cloning = pod(
            serde_json::json!([status("clone", serde_json::json!({ "running": {} }))]),
            serde_json::json!([]),
        );
        assert!(last_step(&cloning).is_none());
    }

    #[test]
    fn other_text_joins_the_jobs_reason() {
        let msg = parse("panic: out of memory\n").unwrap();
        assert_eq!(msg, Message::Text("panic: out of memory".into()));
        assert_eq!(
            verdict(
                RunState::Failed,
                Some("BackoffLimitExceeded".into()),
                Some(&msg)
            )
            .1
            .as_deref(),
            Some("BackoffLimitExceeded; last output: panic: out of memory")
        );
        assert!(record("r", &msg).is_none());
        assert_eq!(parse("  "), None);
        assert!(matches!(
            parse(r#"{"outcome":"exploded"}"#),
            Some(Message::Text(_))
        ));
    }
}

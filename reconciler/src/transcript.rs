//! Keeps the agent's transcript when its Job ends: the end of each step's
//! log (clone, agent, publish), read through `pods/log` while the pod still
//! exists, redacted and compressed into the store (`core::transcript`), so
//! the run stays reviewable after it is pruned.

use issueops_core::store::Store;
use issueops_core::transcript;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

/// Lines read per step: the transcript keeps the end of the output.
const TAIL_LINES: i64 = 20_000;

/// Reads the steps' logs of `pod` and keeps them as run `run_id`'s
/// transcript. A log that cannot be read is named in the transcript; the
/// run's outcome never depends on this.
pub async fn keep(
    client: &kube::Client,
    store: &Store,
    namespace: &str,
    pod: &str,
    steps: &[String],
    run_id: &str,
) -> Result<bool, issueops_core::store::StoreError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut text = String::new();
    for step in steps {
        let params = LogParams {
            container: Some(step.clone()),
            tail_lines: Some(TAIL_LINES),
            limit_bytes: Some(transcript::MAX_BYTES as i64),
            ..LogParams::default()
        };
        text.push_str(&format!("===== {step} =====\n"));
        match pods.logs(pod, &params).await {
            Ok(log) => text.push_str(&log),
            Err(e) => text.push_str(&format!("(its log could not be read: {e})")),
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    if text.is_empty() {
        return Ok(false);
    }
    let packed = transcript::pack(&text, &[], transcript::MAX_BYTES);
    let kept = store
        .save_transcript(run_id, &packed, issueops_core::now_ms())
        .await?;
    if kept {
        tracing::info!(
            run_id,
            bytes = packed.size,
            truncated = packed.truncated,
            "agent transcript kept"
        );
    }
    Ok(kept)
}

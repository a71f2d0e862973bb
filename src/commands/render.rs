//! `render`: a webhook payload file → the manifests it would commit, offline.

use crate::cli::Common;
use anyhow::{bail, Context, Result};
use issueops_control_plane::decide::{decide, Decision};
use issueops_control_plane::plan_run;

pub fn render(
    common: &Common,
    payload: &std::path::Path,
    delivery_id: &str,
    label: Option<&str>,
) -> Result<()> {
    let config = common.load_config()?;
    let templates = common.templates()?;
    let text = std::fs::read_to_string(payload)
        .with_context(|| format!("cannot read {}", payload.display()))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", payload.display()))?;
    if let Some(label) = label {
        json["label"] = serde_json::json!({ "name": label });
    }
    match decide(&config, "issues", &json.to_string(), false) {
        Decision::StartRun { event, mode } => {
            // Offline there is no earlier run: a revision renders on the issue's branch.
            let branch = issueops_core::naming::branch_for_issue(event.issue.number);
            let plan = plan_run(&config, &templates, delivery_id, &event, mode, &branch, None)?;
            for file in plan.files {
                println!("---\n# Source: {}\n{}", file.path, file.content);
            }
            Ok(())
        }
        Decision::RefuseTrigger { reason, .. } => bail!("this trigger would be refused: {reason}"),
        Decision::CloseIssue { .. }
        | Decision::CancelActive { .. }
        | Decision::ApproveByLabel { .. }
        | Decision::Hold { .. }
        | Decision::Release { .. } => bail!(
            "nothing to render: this event renders no manifests. Use --label {} to render as a trigger",
            config.trigger_label
        ),
        Decision::Ignore { reason } => bail!(
            "nothing to render: {reason}. Use --label {} to render as a trigger",
            config.trigger_label
        ),
    }
}

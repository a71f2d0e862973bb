//! Catch-up for missed deliveries. GitHub never retries a failed delivery, so
//! a trigger label added while the gateway was down would be lost. A periodic
//! sync lists the open issues that carry a trigger label in each configured
//! repo and turns every trigger issueops has no record of (no delivery, run or
//! approval request for that issue and label) into an intent in the inbox.
//!
//! Invariant: exactly once. The intent's delivery id is derived from the repo,
//! issue and label, so the inbox's dedupe absorbs a second sync; the sender is
//! the actor of the issue's latest matching `labeled` event, so the normal
//! permission check applies.
//! Known limit: a label removed and added again while the gateway was down, on
//! an issue that already had runs, is not caught (the label was already there).

use crate::{ControlPlane, ControlPlaneError};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::store::inbox::{Inserted, NewDelivery};
use issueops_github::{GitHub, Method};
use serde_json::{json, Value};

const PAGE: usize = 100;
const MAX_PAGES: usize = 50;

async fn get_all(github: &GitHub, repo: &str, path: &str) -> Result<Vec<Value>, ControlPlaneError> {
    let mut out = Vec::new();
    for page in 1..=MAX_PAGES {
        let sep = if path.contains('?') { '&' } else { '?' };
        let answer = github
            .request(
                repo,
                Method::Get,
                &format!("{path}{sep}per_page={PAGE}&page={page}"),
                None,
            )
            .await?;
        if answer.status != 200 {
            return Err(ControlPlaneError::GitHub(format!(
                "GET {path}: answered {}",
                answer.status
            )));
        }
        let items = answer.body.as_array().cloned().unwrap_or_default();
        let last = items.len() < PAGE;
        out.extend(items);
        if last {
            break;
        }
    }
    Ok(out)
}

impl ControlPlane {
    /// One catch-up sync over the configured repos. Returns the intents added.
    pub async fn catch_up(&self) -> Result<usize, ControlPlaneError> {
        let Some(github) = &self.github else {
            return Ok(0);
        };
        let mut added = 0;
        for repo in &self.config.repos {
            for label in [&self.config.trigger_label, &self.config.revise_label] {
                let issues = get_all(
                    github,
                    repo,
                    &format!("/repos/{repo}/issues?state=open&labels={label}"),
                )
                .await?;
                for issue in issues.iter().filter(|i| i.get("pull_request").is_none()) {
                    let Some(number) = issue.get("number").and_then(Value::as_i64) else {
                        continue;
                    };
                    if self.knows_trigger(repo, number, label).await? {
                        continue;
                    }
                    if self.add_intent(github, repo, issue, number, label).await? {
                        added += 1;
                    }
                }
            }
        }
        Ok(added)
    }

    async fn knows_trigger(
        &self,
        repo: &str,
        issue: i64,
        label: &str,
    ) -> Result<bool, ControlPlaneError> {
        Ok(self.store.has_issue_trigger(repo, issue, label).await?
            || !self.store.runs_for_issue(repo, issue).await?.is_empty())
    }

    async fn add_intent(
        &self,
        github: &GitHub,
        repo: &str,
        issue: &Value,
        number: i64,
        label: &str,
    ) -> Result<bool, ControlPlaneError> {
        let events = get_all(
            github,
            repo,
            &format!("/repos/{repo}/issues/{number}/events"),
        )
        .await?;
        let actor = events
            .iter()
            .rev()
            .find(|e| {
                e.get("event").and_then(Value::as_str) == Some("labeled")
                    && e.pointer("/label/name").and_then(Value::as_str) == Some(label)
            })
            .and_then(|e| e.pointer("/actor/login").and_then(Value::as_str))
            .unwrap_or("unknown")
            .to_string();
        let delivery_id = format!(
            "catchup-{}",
            &issueops_core::naming::run_id_for_delivery(&format!("{repo}#{number}:{label}"))[1..]
        );
        let payload = json!({
            "action": "labeled",
            "issue": { "number": number, "title": issue.get("title").cloned().unwrap_or_default(), "state": "open" },
            "label": { "name": label },
            "repository": { "full_name": repo },
            "sender": { "login": actor },
        });
        let inserted = self
            .store
            .insert_delivery(&NewDelivery {
                delivery_id: delivery_id.clone(),
                event: "issues".into(),
                action: Some("labeled".into()),
                repo: Some(repo.into()),
                sender: Some(actor.clone()),
                payload: payload.to_string(),
            })
            .await?;
        if inserted == Inserted::Duplicate {
            return Ok(false);
        }
        let audit = AuditEvent::new(kind::DELIVERY_RECEIVED, "caught-up")
            .delivery(delivery_id)
            .actor(actor)
            .detail(
                json!({ "repo": repo, "issue": number, "label": label, "source": "catch-up sync" }),
            );
        self.store.append_audit(&audit).await?;
        tracing::info!(%repo, issue = number, %label, "missed trigger caught up");
        Ok(true)
    }
}

//! The labels issueops reads and writes on GitHub: the catalogue that
//! `issueops labels sync` creates or updates on each configured repo, and the
//! removal of a run's trigger label once the run has ended (so the issue shows
//! no run in progress, and adding the label again starts the next one).

use crate::{ControlPlane, ControlPlaneError};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::Config;
use issueops_github::{GitHub, Method};
use serde_json::{json, Value};

/// One label of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabelSpec {
    pub name: String,
    /// Six hex digits, no `#` (GitHub's form).
    pub color: String,
    pub description: String,
}

fn spec(name: &str, color: &str, description: &str) -> LabelSpec {
    LabelSpec {
        name: name.to_string(),
        color: color.to_string(),
        // GitHub refuses descriptions over 100 characters.
        description: description.chars().take(100).collect(),
    }
}

/// Every label issueops gives meaning to, from the config.
pub fn catalogue(config: &Config) -> Vec<LabelSpec> {
    let l = &config.labels;
    let mut all = vec![
        spec(
            &config.trigger_label,
            "1d76db",
            "issueops: start a development run for this issue",
        ),
        spec(
            &config.revise_label,
            "5319e7",
            "issueops: revise the run's pull request (review feedback)",
        ),
        spec(
            &config.github.approval_label,
            "0e8a16",
            "issueops: an approver approves this issue's pending runs",
        ),
        spec(
            &l.debug,
            "fbca04",
            "issueops: keep the namespace after the run, for inspection",
        ),
        spec(
            &l.in_review,
            "c5def5",
            "issueops: the agent's pull request waits for review",
        ),
    ];
    for model in &config.agent.models {
        all.push(spec(
            &format!("{}{model}", l.model_prefix),
            "bfdadc",
            &format!("issueops: the agent uses model {model}"),
        ));
    }
    for level in &config.agent.reasoning_levels {
        all.push(spec(
            &format!("{}{level}", l.reasoning_prefix),
            "d4c5f9",
            &format!("issueops: the agent reasons at level {level}"),
        ));
    }
    all
}

/// What sync did to one label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Synced {
    pub repo: String,
    pub name: String,
    /// `created`, `updated` or `unchanged`.
    pub action: &'static str,
}

/// A label name as one URL path segment.
pub fn path_segment(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    // RFC 3986 unreserved characters stay as they are.
    const SEGMENT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// Creates the catalogue's missing labels on `repo` and updates those whose
/// colour or description differ; labels not in the catalogue are left alone.
pub async fn sync(
    github: &GitHub,
    repo: &str,
    wanted: &[LabelSpec],
) -> Result<Vec<Synced>, ControlPlaneError> {
    let mut done = Vec::new();
    for label in wanted {
        let path = format!("/repos/{repo}/labels/{}", path_segment(&label.name));
        let current = github.request(repo, Method::Get, &path, None).await?;
        let body =
            json!({ "name": label.name, "color": label.color, "description": label.description });
        let action = match current.status {
            404 => {
                let created = github
                    .request(
                        repo,
                        Method::Post,
                        &format!("/repos/{repo}/labels"),
                        Some(&body),
                    )
                    .await?;
                expect(created.status, 201, &label.name, "creating")?;
                "created"
            }
            200 => {
                let same = |k: &str, v: &str| {
                    current
                        .body
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .eq_ignore_ascii_case(v)
                };
                if same("color", &label.color) && same("description", &label.description) {
                    "unchanged"
                } else {
                    let updated = github
                        .request(repo, Method::Patch, &path, Some(&body))
                        .await?;
                    expect(updated.status, 200, &label.name, "updating")?;
                    "updated"
                }
            }
            status => {
                return Err(ControlPlaneError::GitHub(format!(
                    "reading label {:?} of {repo}: answered {status}",
                    label.name
                )))
            }
        };
        done.push(Synced {
            repo: repo.to_string(),
            name: label.name.clone(),
            action,
        });
    }
    Ok(done)
}

fn expect(status: u16, wanted: u16, name: &str, doing: &str) -> Result<(), ControlPlaneError> {
    if status == wanted {
        Ok(())
    } else {
        Err(ControlPlaneError::GitHub(format!(
            "{doing} label {name:?}: answered {status}"
        )))
    }
}

impl ControlPlane {
    /// Removes the trigger label of every ended run from its issue, once
    /// (`labels.remove_trigger_when_done`). A label already gone counts as
    /// removed. Without GitHub it does nothing. Returns how many it removed.
    pub async fn remove_trigger_labels(&self) -> Result<usize, ControlPlaneError> {
        let Some(github) = &self.github else {
            return Ok(0);
        };
        if !self.config.labels.remove_trigger_when_done {
            return Ok(0);
        }
        let mut removed = 0;
        for (run_id, repo, issue, mode) in self.store.runs_awaiting_label_removal().await? {
            let label = match mode.as_str() {
                "revise" => &self.config.revise_label,
                _ => &self.config.trigger_label,
            };
            // A newer run of the issue owns the label now: leave it.
            let runs = self.store.runs_for_issue(&repo, issue).await?;
            let newer_active = runs
                .iter()
                .skip_while(|r| r.run_id != run_id)
                .skip(1)
                .any(|r| r.mode == mode && r.run_state().is_some_and(|s| !s.is_finished()));
            // A simulated run did no work: the label stays asking for it.
            let simulated = runs
                .iter()
                .find(|r| r.run_id == run_id)
                .is_some_and(|r| r.is_simulated());
            if simulated {
                let audit = AuditEvent::new(kind::LABELS, "trigger-kept")
                    .run(run_id.clone())
                    .actor(crate::SYSTEM_ACTOR)
                    .detail(json!({ "issue": format!("{repo}#{issue}"), "label": label, "why": "the run was simulated: no agent ran" }));
                self.store.append_audit(&audit).await?;
            } else if !newer_active {
                let path = format!(
                    "/repos/{repo}/issues/{issue}/labels/{}",
                    path_segment(label)
                );
                let answer = github.request(&repo, Method::Delete, &path, None).await?;
                if !matches!(answer.status, 200 | 204 | 404) {
                    return Err(ControlPlaneError::GitHub(format!(
                        "removing label {label:?} from {repo}#{issue}: answered {}",
                        answer.status
                    )));
                }
                let audit = AuditEvent::new(kind::LABELS, "trigger-removed")
                    .run(run_id.clone())
                    .actor(crate::SYSTEM_ACTOR)
                    .detail(json!({ "issue": format!("{repo}#{issue}"), "label": label, "status": answer.status }));
                self.store.append_audit(&audit).await?;
                removed += 1;
            }
            self.store.mark_label_removed(&run_id).await?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_covers_every_label_with_meaning() {
        let names: Vec<String> = catalogue(&Config::default())
            .into_iter()
            .map(|l| l.name)
            .collect();
        for wanted in [
            "run:dev",
            "run:dev:revise",
            "run:approved",
            "run:debug",
            "state:in-review",
            "ai-model:gpt-5.1-codex",
            "ai-reasoning:high",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} missing from {names:?}"
            );
        }
        assert!(catalogue(&Config::default())
            .iter()
            .all(|l| l.color.len() == 6 && l.description.len() <= 100));
    }

    #[test]
    fn label_names_are_escaped_as_one_path_segment() {
        assert_eq!(path_segment("run:dev"), "run%3Adev");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}

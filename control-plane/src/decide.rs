//! The decisions on one inbox event: plain functions over values, no I/O.
//!
//! [`decide`] reads only the event; [`admit`] then weighs a trigger against the
//! issue's existing runs (one active run per issue; a revision needs an
//! earlier run).

use issueops_core::config::ActiveRunPolicy;
use issueops_core::event::{IssuesEvent, Label, PullRequestReviewEvent};
use issueops_core::naming;
use issueops_core::store::runs::Run;
use issueops_core::Config;

/// What the control plane does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start a run for the issue (subject to [`admit`]).
    StartRun { event: IssuesEvent, mode: RunMode },
    /// The issue was closed: cancel its active run and prune its namespace.
    CloseIssue { event: IssuesEvent },
    /// The trigger label was removed and the config says that cancels.
    CancelActive { event: IssuesEvent },
    /// The approval label was added: approve the issue's pending requests if
    /// the sender is an approver.
    ApproveByLabel { event: IssuesEvent },
    /// The debug label was added: keep the issue's namespace after its runs.
    Hold { event: IssuesEvent },
    /// The debug label was removed: prune the issue as usual again.
    Release { event: IssuesEvent },
    /// A trigger refused before any run exists (conflicting labels), with
    /// the reason, said on the issue.
    RefuseTrigger { event: IssuesEvent, reason: String },
    /// Record and do nothing else, with the reason.
    Ignore { reason: String },
}

/// The agent's model and reasoning level for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentChoice {
    pub model: String,
    pub reasoning: String,
}

/// The model and reasoning the issue's labels choose, else the config's
/// defaults. Two labels of one group, or a value outside the catalogue, is an
/// error saying what to fix.
pub fn agent_choice(config: &Config, labels: &[Label]) -> Result<AgentChoice, String> {
    let pick = |prefix: &str, allowed: &[String], default: &str, what: &str| {
        let chosen: Vec<&str> = labels
            .iter()
            .filter_map(|l| l.name.strip_prefix(prefix))
            .collect();
        match chosen.as_slice() {
            [] => Ok(default.to_string()),
            [one] if allowed.iter().any(|a| a == one) => Ok(one.to_string()),
            [one] => Err(format!(
                "label {prefix}{one} names no known {what}; use one of: {}",
                allowed
                    .iter()
                    .map(|a| format!("{prefix}{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            many => Err(format!(
                "the issue has {} {what} labels ({}); keep one",
                many.len(),
                many.iter()
                    .map(|m| format!("{prefix}{m}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    };
    let a = &config.agent;
    Ok(AgentChoice {
        model: pick(
            &config.labels.model_prefix,
            &a.models,
            &a.default_model,
            "model",
        )?,
        reasoning: pick(
            &config.labels.reasoning_prefix,
            &a.reasoning_levels,
            &a.default_reasoning,
            "reasoning",
        )?,
    })
}

/// Why a trigger on an issue with these labels must be refused, if it must:
/// more than one run label, or conflicting model or reasoning labels.
pub fn label_conflict(config: &Config, labels: &[Label]) -> Option<String> {
    let run_labels: Vec<&str> = labels
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| config.run_labels().contains(n))
        .collect();
    if run_labels.len() > 1 {
        return Some(format!(
            "only one run label may be on an issue at a time, and it has {}; remove all but one",
            run_labels.join(" and ")
        ));
    }
    agent_choice(config, labels).err()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Dev,
    Revise,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Dev => "dev",
            RunMode::Revise => "revise",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dev" => Some(RunMode::Dev),
            "revise" => Some(RunMode::Revise),
            _ => None,
        }
    }
}

fn ignore(reason: impl Into<String>) -> Decision {
    Decision::Ignore {
        reason: reason.into(),
    }
}

/// Decides on a delivery of GitHub event `event` with JSON body `payload`.
/// `check_repo` is false for offline rendering (`issueops render`), which
/// renders whatever repo the payload names.
pub fn decide(config: &Config, event: &str, payload: &str, check_repo: bool) -> Decision {
    if event == "pull_request_review" {
        return decide_review(config, payload, check_repo);
    }
    if event != "issues" {
        return ignore(format!("event {event:?} is not acted on"));
    }
    let parsed: IssuesEvent = match serde_json::from_str(payload) {
        Ok(p) => p,
        Err(e) => return ignore(format!("payload is not a valid issues event: {e}")),
    };
    if check_repo && !config.watches(&parsed.repository.full_name) {
        return ignore(format!(
            "repo {} is not configured (add it to `repos` in the config)",
            parsed.repository.full_name
        ));
    }
    let label = parsed.label.as_ref().map(|l| l.name.clone());
    let label = label.as_deref();
    let start = |event: IssuesEvent, mode| match label_conflict(config, &event.issue.labels) {
        Some(reason) => Decision::RefuseTrigger { event, reason },
        None => Decision::StartRun { event, mode },
    };
    match parsed.action.as_str() {
        "labeled" if label == Some(config.trigger_label.as_str()) => start(parsed, RunMode::Dev),
        "labeled" if label == Some(config.revise_label.as_str()) => start(parsed, RunMode::Revise),
        "labeled" if label == Some(config.github.approval_label.as_str()) => {
            Decision::ApproveByLabel { event: parsed }
        }
        "labeled" if label == Some(config.labels.debug.as_str()) => {
            Decision::Hold { event: parsed }
        }
        "unlabeled" if label == Some(config.labels.debug.as_str()) => {
            Decision::Release { event: parsed }
        }
        "labeled" => ignore(format!("label {:?} is not a trigger", label.unwrap_or(""))),
        "closed" => Decision::CloseIssue { event: parsed },
        "unlabeled" if label == Some(config.trigger_label.as_str()) => {
            if config.lifecycle.cancel_on_unlabel {
                Decision::CancelActive { event: parsed }
            } else {
                ignore("trigger label removed; the active run continues (lifecycle.cancel_on_unlabel is off)")
            }
        }
        "reopened" => ignore("issue reopened; new triggers start runs again"),
        action => ignore(format!("issues.{action} is not acted on")),
    }
}

/// A review asking for changes on a run's pull request starts a revise run
/// of its issue, when the config allows it. The trigger is the reviewer's,
/// weighed like a label added by them.
fn decide_review(config: &Config, payload: &str, check_repo: bool) -> Decision {
    let review: PullRequestReviewEvent = match serde_json::from_str(payload) {
        Ok(r) => r,
        Err(e) => {
            return ignore(format!(
                "payload is not a valid pull_request_review event: {e}"
            ))
        }
    };
    if check_repo && !config.watches(&review.repository.full_name) {
        return ignore(format!(
            "repo {} is not configured (add it to `repos` in the config)",
            review.repository.full_name
        ));
    }
    if review.action != "submitted" || review.review.state != "changes_requested" {
        return ignore(format!(
            "pull_request_review.{} ({}) is not acted on",
            review.action, review.review.state
        ));
    }
    // Only our own branch is a run's: a fork can name a branch
    // `issueops/issue-42` too (and put its title into our commit).
    let same_repo = review.pull_request.head.repo.as_ref().is_some_and(|r| {
        r.full_name
            .eq_ignore_ascii_case(&review.repository.full_name)
    });
    if !same_repo {
        return ignore(format!(
            "pull request #{} comes from another repository (a fork), not from a run branch",
            review.pull_request.number
        ));
    }
    let Some(issue) = naming::issue_for_branch(&review.pull_request.head.ref_) else {
        return ignore(format!(
            "pull request #{} is not from a run branch",
            review.pull_request.number
        ));
    };
    if !config.labels.revise_on_changes_requested {
        return ignore(
            "changes requested on a run's pull request; labels.revise_on_changes_requested is off",
        );
    }
    let event = IssuesEvent {
        action: "labeled".into(),
        issue: issueops_core::event::Issue {
            number: issue,
            title: review.pull_request.title,
            state: None,
            labels: Vec::new(),
        },
        label: Some(Label {
            name: config.revise_label.clone(),
        }),
        repository: review.repository,
        sender: review.sender,
    };
    Decision::StartRun {
        event,
        mode: RunMode::Revise,
    }
}

/// Whether a trigger may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Start at once, working on `branch`.
    Start {
        branch: String,
    },
    /// Wait until the active run finishes.
    Queue {
        active_run: String,
    },
    Refuse {
        reason: String,
    },
}

/// Weighs a trigger of `mode` against `runs`, the issue's runs oldest first.
pub fn admit(config: &Config, issue: u64, mode: RunMode, runs: &[Run]) -> Admission {
    let branch = match mode {
        RunMode::Dev => naming::branch_for_issue(issue),
        RunMode::Revise => match runs.iter().rev().find(|r| {
            r.run_state()
                .is_some_and(|s| s > issueops_core::store::runs::RunState::Queued)
        }) {
            Some(earlier) => earlier.branch.clone(),
            None => {
                return Admission::Refuse {
                    reason: format!(
                        "{} needs an earlier run on this issue to revise; add {} first",
                        config.revise_label, config.trigger_label
                    ),
                }
            }
        },
    };
    let active = runs
        .iter()
        .find(|r| r.run_state().is_some_and(|s| s.is_active()))
        .or_else(|| runs.iter().find(|r| r.state == "queued"));
    match (active, config.lifecycle.on_active_run) {
        (None, _) => Admission::Start { branch },
        (Some(a), ActiveRunPolicy::Queue) => Admission::Queue {
            active_run: a.run_id.clone(),
        },
        (Some(a), ActiveRunPolicy::Refuse) => Admission::Refuse {
            reason: format!(
                "run {} is still {} on this issue; one run at a time (lifecycle.on_active_run: refuse)",
                a.run_id, a.state
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELED: &str = include_str!("../../tests/data/github/issues/labeled.payload.json");

    fn config() -> Config {
        Config {
            repos: vec!["Codertocat/Hello-World".into()],
            ..Config::default()
        }
    }

    fn with(action: &str, label: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(LABELED).unwrap();
        v["action"] = action.into();
        v["label"]["name"] = label.into();
        v.to_string()
    }

    fn run(id: &str, state: &str) -> Run {
        Run {
            run_id: id.into(),
            delivery_id: id.into(),
            repo: "a/b".into(),
            issue_number: 1,
            namespace: "ns".into(),
            mode: "dev".into(),
            branch: "issueops/issue-1".into(),
            actor: "x".into(),
            state: state.into(),
            commit_sha: None,
            finished_at: None,
            reason: None,
            pull_request: None,
        }
    }

    #[test]
    fn trigger_labels_start_dev_and_revise_runs() {
        let d = decide(&config(), "issues", &with("labeled", "run:dev"), true);
        assert!(
            matches!(
                d,
                Decision::StartRun {
                    mode: RunMode::Dev,
                    ..
                }
            ),
            "{d:?}"
        );
        let d = decide(
            &config(),
            "issues",
            &with("labeled", "run:dev:revise"),
            true,
        );
        assert!(
            matches!(
                d,
                Decision::StartRun {
                    mode: RunMode::Revise,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn the_fixture_label_is_not_a_trigger() {
        assert!(matches!(
            decide(&config(), "issues", LABELED, true),
            Decision::Ignore { .. }
        ));
    }

    #[test]
    fn closing_and_unlabeling_follow_the_config() {
        assert!(matches!(
            decide(&config(), "issues", &with("closed", "x"), true),
            Decision::CloseIssue { .. }
        ));
        let unlabel = with("unlabeled", "run:dev");
        assert!(matches!(
            decide(&config(), "issues", &unlabel, true),
            Decision::Ignore { .. }
        ));
        let mut c = config();
        c.lifecycle.cancel_on_unlabel = true;
        assert!(matches!(
            decide(&c, "issues", &unlabel, true),
            Decision::CancelActive { .. }
        ));
    }

    #[test]
    fn unconfigured_repo_is_ignored_unless_rendering_offline() {
        let payload = with("labeled", "run:dev");
        let d = decide(&Config::default(), "issues", &payload, true);
        assert!(matches!(d, Decision::Ignore { ref reason } if reason.contains("not configured")));
        assert!(matches!(
            decide(&Config::default(), "issues", &payload, false),
            Decision::StartRun { .. }
        ));
    }

    #[test]
    fn other_events_and_bad_payloads_are_ignored() {
        assert!(matches!(
            decide(&config(), "ping", "{}", true),
            Decision::Ignore { .. }
        ));
        assert!(matches!(
            decide(&config(), "issues", "{\"action\":1}", true),
            Decision::Ignore { .. }
        ));
    }

    fn with_labels(label: &str, on_issue: &[&str]) -> String {
        let mut v: serde_json::Value = serde_json::from_str(&with("labeled", label)).unwrap();
        v["issue"]["labels"] = on_issue
            .iter()
            .map(|n| serde_json::json!({ "name": n, "color": "ededed" }))
            .collect();
        v.to_string()
    }

    #[test]
    fn a_second_run_label_refuses_the_trigger() {
        let d = decide(
            &config(),
            "issues",
            &with_labels("run:dev:revise", &["run:dev", "run:dev:revise", "bug"]),
            true,
        );
        assert!(
            matches!(d, Decision::RefuseTrigger { ref reason, .. } if reason.contains("only one run label")),
            "{d:?}"
        );
        let d = decide(
            &config(),
            "issues",
            &with_labels("run:dev", &["run:dev", "run:debug"]),
            true,
        );
        assert!(matches!(d, Decision::StartRun { .. }), "{d:?}");
    }

    #[test]
    fn model_and_reasoning_come_from_labels_within_the_catalogue() {
        let c = config();
        let labels = |names: &[&str]| -> Vec<Label> {
            names
                .iter()
                .map(|n| Label {
                    name: n.to_string(),
                })
                .collect()
        };
        assert_eq!(
            agent_choice(&c, &labels(&["bug"])).unwrap(),
            AgentChoice {
                model: c.agent.default_model.clone(),
                reasoning: c.agent.default_reasoning.clone()
            }
        );
        let chosen = agent_choice(
            &c,
            &labels(&["ai-model:gpt-5.1-codex-mini", "ai-reasoning:high"]),
        )
        .unwrap();
        assert_eq!(
            (chosen.model.as_str(), chosen.reasoning.as_str()),
            ("gpt-5.1-codex-mini", "high")
        );
        let two = agent_choice(
            &c,
            &labels(&["ai-model:gpt-5.1-codex-mini", "ai-model:gpt-5.1-codex"]),
        );
        assert!(two.unwrap_err().contains("2 model labels"));
        let unknown = agent_choice(&c, &labels(&["ai-reasoning:extreme"])).unwrap_err();
        assert!(unknown.contains("ai-reasoning:low"), "{unknown}");
        let d = decide(
            &c,
            "issues",
            &with_labels("run:dev", &["run:dev", "ai-reasoning:extreme"]),
            true,
        );
        assert!(matches!(d, Decision::RefuseTrigger { .. }), "{d:?}");
    }

    /// GitHub's `pull_request_review.submitted` shape: the pull request object
    /// of the `pull_request` example, plus the review.
    fn review(state: &str, head: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/data/github/pull_request/opened.payload.json"
        ))
        .unwrap();
        v["action"] = "submitted".into();
        v["pull_request"]["head"]["ref"] = head.into();
        v["review"] = serde_json::json!({
            "id": 1, "user": { "login": "reviewer" }, "body": "please rename", "state": state,
            "html_url": "https://github.com/Codertocat/Hello-World/pull/2#pullrequestreview-1",
        });
        v.to_string()
    }

    #[test]
    fn changes_requested_on_a_run_pull_request_starts_a_revise_when_allowed() {
        let mut c = config();
        let payload = review("changes_requested", "issueops/issue-42");
        assert!(matches!(
            decide(&c, "pull_request_review", &payload, true),
            Decision::Ignore { ref reason } if reason.contains("revise_on_changes_requested")
        ));
        c.labels.revise_on_changes_requested = true;
        match decide(&c, "pull_request_review", &payload, true) {
            Decision::StartRun { event, mode } => {
                assert_eq!(mode, RunMode::Revise);
                assert_eq!(event.issue.number, 42);
                assert_eq!(event.label.unwrap().name, "run:dev:revise");
            }
            d => panic!("{d:?}"),
        }
        for (state, head) in [
            ("approved", "issueops/issue-42"),
            ("changes_requested", "feature/x"),
        ] {
            assert!(matches!(
                decide(&c, "pull_request_review", &review(state, head), true),
                Decision::Ignore { .. }
            ));
        }
    }

    /// A fork's pull request whose branch is named like a run's starts
    /// nothing, and neither does one whose fork is gone (`head.repo: null`).
    #[test]
    fn changes_requested_on_a_forks_pull_request_start_nothing() {
        let mut c = config();
        c.labels.revise_on_changes_requested = true;
        for repo in [
            serde_json::json!({ "full_name": "mallory/Hello-World" }),
            serde_json::Value::Null,
        ] {
            let mut v: serde_json::Value =
                serde_json::from_str(&review("changes_requested", "issueops/issue-42")).unwrap();
            v["pull_request"]["head"]["repo"] = repo;
            match decide(&c, "pull_request_review", &v.to_string(), true) {
                Decision::Ignore { reason } => assert!(reason.contains("fork"), "{reason}"),
                d => panic!("{d:?}"),
            }
        }
    }

    #[test]
    fn the_debug_label_holds_and_releases() {
        assert!(matches!(
            decide(&config(), "issues", &with("labeled", "run:debug"), true),
            Decision::Hold { .. }
        ));
        assert!(matches!(
            decide(&config(), "issues", &with("unlabeled", "run:debug"), true),
            Decision::Release { .. }
        ));
    }

    #[test]
    fn one_active_run_per_issue() {
        let c = config();
        assert!(matches!(
            admit(&c, 1, RunMode::Dev, &[run("a", "succeeded")]),
            Admission::Start { .. }
        ));
        assert!(matches!(
            admit(&c, 1, RunMode::Dev, &[run("a", "running")]),
            Admission::Refuse { .. }
        ));
        let mut q = config();
        q.lifecycle.on_active_run = ActiveRunPolicy::Queue;
        assert_eq!(
            admit(&q, 1, RunMode::Dev, &[run("a", "applied")]),
            Admission::Queue {
                active_run: "a".into()
            }
        );
        // A queued run holds the line too: FIFO, no overtaking.
        assert!(matches!(
            admit(
                &q,
                1,
                RunMode::Dev,
                &[run("a", "succeeded"), run("b", "queued")]
            ),
            Admission::Queue { .. }
        ));
    }

    #[test]
    fn revise_needs_an_earlier_run_and_keeps_its_branch() {
        let c = config();
        assert!(
            matches!(admit(&c, 1, RunMode::Revise, &[]), Admission::Refuse { ref reason } if reason.contains("earlier run"))
        );
        let mut earlier = run("a", "succeeded");
        earlier.branch = "issueops/issue-1-custom".into();
        assert_eq!(
            admit(&c, 1, RunMode::Revise, &[earlier]),
            Admission::Start {
                branch: "issueops/issue-1-custom".into()
            }
        );
    }
}

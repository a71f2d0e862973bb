//! The decisions on one inbox event: plain functions over values, no I/O.
//!
//! [`decide`] reads only the event; [`admit`] then weighs a trigger against the
//! issue's existing runs (one active run per issue; a revision needs an
//! earlier run).

use issueops_core::config::ActiveRunPolicy;
use issueops_core::event::IssuesEvent;
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
    /// Record and do nothing else, with the reason.
    Ignore { reason: String },
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
    match parsed.action.as_str() {
        "labeled" if label == Some(config.trigger_label.as_str()) => Decision::StartRun {
            event: parsed,
            mode: RunMode::Dev,
        },
        "labeled" if label == Some(config.revise_label.as_str()) => Decision::StartRun {
            event: parsed,
            mode: RunMode::Revise,
        },
        "labeled" if label == Some(config.github.approval_label.as_str()) => {
            Decision::ApproveByLabel { event: parsed }
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

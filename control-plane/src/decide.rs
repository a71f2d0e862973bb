//! The decision on one inbox event: a plain function over values, no I/O.

use issueops_core::event::IssuesEvent;
use issueops_core::Config;

/// What the control plane does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start a run for the issue.
    StartRun { event: IssuesEvent, mode: RunMode },
    /// Record and do nothing else, with the reason.
    Ignore { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Dev,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Dev => "dev",
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
    let label = parsed.label.as_ref().map(|l| l.name.as_str());
    match (parsed.action.as_str(), label) {
        ("labeled", Some(l)) if l == config.trigger_label => Decision::StartRun {
            event: parsed,
            mode: RunMode::Dev,
        },
        ("labeled", Some(l)) if l == config.revise_label => {
            ignore(format!("label {l:?}: revision runs are not handled yet"))
        }
        ("labeled", Some(l)) => ignore(format!("label {l:?} is not a trigger")),
        (action, _) => ignore(format!("issues.{action} is not acted on")),
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

    fn with_label(label: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(LABELED).unwrap();
        v["label"]["name"] = label.into();
        v.to_string()
    }

    #[test]
    fn trigger_label_on_configured_repo_starts_a_run() {
        let d = decide(&config(), "issues", &with_label("run:dev"), true);
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
    }

    #[test]
    fn the_fixture_label_is_not_a_trigger() {
        assert!(matches!(
            decide(&config(), "issues", LABELED, true),
            Decision::Ignore { .. }
        ));
    }

    #[test]
    fn unconfigured_repo_is_ignored_unless_rendering_offline() {
        let payload = with_label("run:dev");
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
}

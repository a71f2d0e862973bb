//! The run's result: a small JSON document written as the container's
//! termination message, which the reconciler reads from the pod status.
//!
//! The format is a contract with the reconciler (`reconciler/src/agent_result.rs`)
//! and is documented in `agent/README.md`. Kubernetes keeps at most 4096 bytes
//! of a termination message, so [`RunResult::to_message`] shortens the free
//! text (reason, log tail) until the document fits, never the fields.

use serde::{Deserialize, Serialize};

/// Kubernetes' limit for one container's termination message.
pub const MAX_MESSAGE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    PrOpened,
    PrUpdated,
    NoChanges,
    Failed,
}

impl Outcome {
    /// The process exit code: 0 for a pull request, 3 for no changes, 1 for a
    /// failure, so the pod status alone tells them apart.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::PrOpened | Outcome::PrUpdated => 0,
            Outcome::NoChanges => 3,
            Outcome::Failed => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last lines the agent printed, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// Whether the agent's home held a session from an earlier run.
    pub resumed_session: bool,
}

impl RunResult {
    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            pr_number: None,
            pr_url: None,
            head_commit: None,
            reason: Some(reason.into()),
            log_tail: None,
            resumed_session: false,
        }
    }

    /// The JSON document, at most [`MAX_MESSAGE_BYTES`] long.
    pub fn to_message(&self) -> String {
        let mut shown = self.clone();
        loop {
            let text = serde_json::to_string(&shown).unwrap_or_default();
            if text.len() <= MAX_MESSAGE_BYTES {
                return text;
            }
            let over = text.len() - MAX_MESSAGE_BYTES;
            // The log tail gives way first (keeping its end), then the reason.
            if let Some(tail) = shown.log_tail.as_mut().filter(|t| !t.is_empty()) {
                *tail = keep_end(tail, over + 16);
            } else if let Some(reason) = shown.reason.as_mut().filter(|r| !r.is_empty()) {
                *reason = keep_start(reason, over + 16);
            } else {
                shown.pr_url = None;
                shown.log_tail = None;
                shown.reason = None;
            }
        }
    }
}

/// `text` less at least `cut` bytes from its start, on a char boundary.
fn keep_end(text: &str, cut: usize) -> String {
    let mut start = cut.min(text.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// `text` less at least `cut` bytes from its end, on a char boundary.
fn keep_start(text: &str, cut: usize) -> String {
    let mut end = text.len().saturating_sub(cut);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_have_distinct_exit_codes_and_kebab_names() {
        assert_eq!(Outcome::PrOpened.exit_code(), 0);
        assert_ne!(Outcome::NoChanges.exit_code(), Outcome::Failed.exit_code());
        assert_ne!(Outcome::NoChanges.exit_code(), 0);
        let json = serde_json::to_string(&RunResult::failed("x")).unwrap();
        assert!(json.contains(r#""outcome":"failed""#), "{json}");
    }

    #[test]
    fn a_long_tail_is_cut_to_fit_and_stays_valid_json() {
        let mut r = RunResult::failed("agent exited with status 2");
        r.log_tail = Some("é".repeat(10_000) + "the last line");
        let message = r.to_message();
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        let back: RunResult = serde_json::from_str(&message).unwrap();
        assert!(back.log_tail.unwrap().ends_with("the last line"));
        assert_eq!(back.reason.as_deref(), Some("agent exited with status 2"));
        let mut r = RunResult::failed("ü".repeat(5_000));
        r.pr_number = Some(3);
        let back: RunResult = serde_json::from_str(&r.to_message()).unwrap();
        assert_eq!(back.pr_number, Some(3));
    }
}

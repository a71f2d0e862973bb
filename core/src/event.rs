//! The parts of GitHub webhook payloads that issueops acts on.
//!
//! Only the fields the control plane needs are read; everything else in the
//! payload is kept verbatim in the inbox for the audit trail.

use serde::Deserialize;

/// Repository as GitHub sends it in every repository-scoped event.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Repository {
    pub full_name: String,
}

/// The user who caused the event.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Issue {
    #[serde(deserialize_with = "github_number")]
    pub number: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub state: Option<String>,
    /// The issue's labels after the event (GitHub sends them all).
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// An `issues` event (`labeled`, `unlabeled`, `closed`, ...).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct IssuesEvent {
    pub action: String,
    pub issue: Issue,
    #[serde(default)]
    pub label: Option<Label>,
    pub repository: Repository,
    pub sender: User,
}

/// A `pull_request_review` event: only what a review-triggered revise needs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PullRequestReviewEvent {
    pub action: String,
    pub review: Review,
    pub pull_request: PullRequestRef,
    pub repository: Repository,
    pub sender: User,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Review {
    /// `approved`, `changes_requested`, `commented` (GitHub sends lower case).
    pub state: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PullRequestRef {
    #[serde(deserialize_with = "github_number")]
    pub number: u64,
    #[serde(default)]
    pub title: String,
    pub head: BranchRef,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct BranchRef {
    #[serde(rename = "ref")]
    pub ref_: String,
    /// The repository the branch lives in: a fork's for a pull request from
    /// a fork; `null` when that fork was deleted.
    #[serde(default)]
    pub repo: Option<Repository>,
}

/// Fields the gateway records beside every delivery so operators can query the
/// inbox without parsing payloads. Every field is optional: `ping` has no action,
/// `installation` has no repository.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    pub action: Option<String>,
    pub repository: Option<Repository>,
    pub sender: Option<User>,
}

impl Envelope {
    pub fn repo(&self) -> Option<String> {
        self.repository.as_ref().map(|r| r.full_name.clone())
    }
    pub fn sender(&self) -> Option<String> {
        self.sender.as_ref().map(|s| s.login.clone())
    }
}

/// Largest issue or pull request number accepted: numbers are stored as
/// signed 64-bit integers, so anything larger would wrap.
pub const MAX_NUMBER: u64 = i64::MAX as u64;

/// An issue or pull request number: 1 to [`MAX_NUMBER`]; anything else makes
/// the payload malformed (refused, never stored wrapped).
fn github_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n == 0 || n > MAX_NUMBER {
        return Err(serde::de::Error::custom(format!(
            "number {n} is out of range (1 to {MAX_NUMBER})"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_numbers_make_the_payload_malformed() {
        let with = |n: &str| {
            format!(
                r#"{{"action":"labeled","issue":{{"number":{n}}},"repository":{{"full_name":"o/r"}},"sender":{{"login":"u"}}}}"#
            )
        };
        for bad in [
            "0",
            "9223372036854775808",
            "18446744073709551615",
            "-1",
            "1.5",
            "1e3",
        ] {
            let err = serde_json::from_str::<IssuesEvent>(&with(bad));
            assert!(err.is_err(), "{bad} was accepted");
        }
        let ok: IssuesEvent = serde_json::from_str(&with("9223372036854775807")).unwrap();
        assert_eq!(ok.issue.number as i64, i64::MAX);
    }

    #[test]
    fn envelope_tolerates_missing_fields() {
        let env: Envelope = serde_json::from_str(r#"{"zen":"hi"}"#).unwrap();
        assert_eq!(env.repo(), None);
        assert_eq!(env.action, None);
    }

    #[test]
    fn issues_event_requires_issue_and_repo() {
        assert!(serde_json::from_str::<IssuesEvent>(r#"{"action":"labeled"}"#).is_err());
    }
}

//! The GitHub App issueops needs, as a GitHub App manifest (GitHub's
//! "registering a GitHub App from a manifest" flow): the one list of
//! permissions and events, used by `issueops github-app create` and checked
//! against docs/install.md by a test.

use serde_json::{json, Value};

/// Repository permissions, each with why issueops needs it.
pub const PERMISSIONS: &[(&str, &str, &str)] = &[
    ("issues", "write", "status comments, the trigger labels, the label catalogue"),
    ("pull_requests", "write", "the agent's pull request, opened or updated by the run's publish step"),
    ("contents", "write", "pushing the agent's branch (only from the publish step, with a token scoped to the issue's repository)"),
    ("metadata", "read", "repository lookups, a sender's permission on the repository"),
    ("members", "read", "staff UI sign-in: the organization and team checks of ui.viewers / ui.approvers"),
];

/// Webhook events issueops acts on.
pub const EVENTS: &[(&str, &str)] = &[
    (
        "issues",
        "labels that start, revise, approve or cancel runs; closing an issue",
    ),
    (
        "pull_request_review",
        "a review asking for changes revises the pull request",
    ),
];

/// The manifest for an App named `name`, sending webhooks to `webhook_url`,
/// redirecting back to `redirect_url` after it is created, with
/// `callback_url` as its OAuth callback (the staff UI's sign-in).
pub fn manifest(
    name: &str,
    homepage: &str,
    webhook_url: &str,
    redirect_url: &str,
    callback_url: &str,
) -> Value {
    let permissions: serde_json::Map<String, Value> = PERMISSIONS
        .iter()
        .map(|(name, level, _)| (name.to_string(), Value::from(*level)))
        .collect();
    json!({
        "name": name,
        "url": homepage,
        "description": "issueops: GitHub issue labels become isolated Kubernetes runs of an agent, reviewed and audited in git.",
        "hook_attributes": { "url": webhook_url, "active": true },
        "redirect_url": redirect_url,
        "callback_urls": [callback_url],
        "request_oauth_on_install": false,
        "public": false,
        "default_permissions": permissions,
        "default_events": EVENTS.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    /// docs/install.md lists exactly these permissions and events, with the
    /// access level: the guide and the App the CLI creates never disagree.
    #[test]
    fn the_install_guide_lists_the_same_permissions_and_events() {
        let guide = include_str!("../../docs/install.md");
        for (name, level, _) in super::PERMISSIONS {
            assert!(
                guide.contains(&format!("| `{name}` | {level} |")),
                "docs/install.md does not list permission {name}: {level}"
            );
        }
        for (event, _) in super::EVENTS {
            assert!(
                guide.contains(&format!("| `{event}` | event |")),
                "docs/install.md does not list event {event}"
            );
        }
    }
}

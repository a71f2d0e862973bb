//! The agent's prompt, rendered from the run's template
//! (`manifests-templates/prompts/<mode>.md`, mounted from the run's
//! ConfigMap) with the issue's text as data.
//!
//! Invariant: issue and review text are values, never template source and
//! never shell input: minijinja does not evaluate `{{ }}` inside a value, and
//! the prompt reaches the agent as a file and on standard input.

use crate::forge::{Comment, IssueText, PullRequest};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("prompt template {name}: {source}")]
pub struct PromptError {
    name: String,
    source: minijinja::Error,
}

/// Everything a prompt template may use.
#[derive(Debug, Clone, Serialize)]
pub struct PromptInput<'a> {
    pub repo: &'a str,
    pub issue_number: u64,
    pub issue: &'a IssueText,
    pub mode: &'a str,
    pub branch: &'a str,
    pub run_id: &'a str,
    pub pull_request: Option<&'a PullRequest>,
    pub review_comments: &'a [Comment],
}

/// Renders `template` (named `name` in errors) with `input`.
pub fn render(name: &str, template: &str, input: &PromptInput<'_>) -> Result<String, PromptError> {
    let wrap = |source| PromptError {
        name: name.to_string(),
        source,
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template("prompt", template).map_err(wrap)?;
    env.get_template("prompt")
        .and_then(|t| t.render(input))
        .map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = include_str!("../../manifests-templates/prompts/dev.md");
    const REVISE: &str = include_str!("../../manifests-templates/prompts/revise.md");

    fn issue(title: &str, body: &str) -> IssueText {
        IssueText {
            title: title.into(),
            body: body.into(),
            comments: vec![Comment {
                author: "octocat".into(),
                body: "{{ 7*7 }} and {% raw %}".into(),
                location: None,
            }],
        }
    }

    #[test]
    fn template_syntax_inside_issue_text_stays_text() {
        let hostile = issue(
            "{{ issue }} $(rm -rf /)",
            "`id`; echo \"pwned\"\n{% for x in y %}",
        );
        let out = render(
            "dev.md",
            DEV,
            &PromptInput {
                repo: "o/r",
                issue_number: 3,
                issue: &hostile,
                mode: "dev",
                branch: "issueops/issue-3",
                run_id: "r",
                pull_request: None,
                review_comments: &[],
            },
        )
        .unwrap();
        assert!(out.contains("{{ issue }} $(rm -rf /)"), "{out}");
        assert!(out.contains("`id`; echo \"pwned\"\n{% for x in y %}"));
        assert!(out.contains("{{ 7*7 }} and {% raw %}"));
    }

    #[test]
    fn revise_shows_the_pull_request_and_its_review() {
        let pr = PullRequest {
            number: 12,
            url: "https://github.com/o/r/pull/12".into(),
            head: "issueops/issue-3".into(),
            open: true,
        };
        let review = [Comment {
            author: "reviewer".into(),
            body: "rename this".into(),
            location: Some("src/lib.rs:4".into()),
        }];
        let out = render(
            "revise.md",
            REVISE,
            &PromptInput {
                repo: "o/r",
                issue_number: 3,
                issue: &issue("t", "b"),
                mode: "revise",
                branch: "issueops/issue-3",
                run_id: "r",
                pull_request: Some(&pr),
                review_comments: &review,
            },
        )
        .unwrap();
        assert!(out.contains("#12") && out.contains("src/lib.rs:4") && out.contains("rename this"));
    }

    #[test]
    fn an_unknown_variable_is_an_error() {
        let empty = issue("t", "b");
        let input = PromptInput {
            repo: "o/r",
            issue_number: 1,
            issue: &empty,
            mode: "dev",
            branch: "b",
            run_id: "r",
            pull_request: None,
            review_comments: &[],
        };
        assert!(render("x.md", "{{ nope }}", &input).is_err());
    }
}

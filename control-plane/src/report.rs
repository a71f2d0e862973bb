//! Reporting back: one status comment per trigger on its issue, edited in
//! place as the run moves.
//!
//! The wanted body is kept in the `reports` outbox; [`ControlPlane::report_pass`]
//! posts until GitHub has it. Every body carries a hidden marker naming its
//! trigger, so a crash between creating a comment and recording its id is
//! repaired by finding the comment, never by posting a second one.

use crate::{ControlPlane, ControlPlaneError};
use issueops_core::store::reports::Report;
use issueops_core::store::results::RunResult;
use issueops_core::store::runs::{Run, RunState};
use issueops_github::{GitHub, Method};
use serde_json::{json, Value};

/// Reports posted per pass (the rest wait for the next pass).
const BATCH: i64 = 50;
const PAGE: usize = 100;

/// The hidden marker that ties a comment to its trigger.
pub fn marker(subject: &str) -> String {
    format!("<!-- issueops:subject={subject} -->")
}

fn with_marker(subject: &str, text: &str) -> String {
    format!("{}\n{text}", marker(subject))
}

/// A notice for a trigger that did not start a run (yet).
pub fn notice_body(subject: &str, text: &str) -> String {
    with_marker(subject, &format!("**issueops**: {text}"))
}

/// What a succeeded run did, from the runner's result when there is one,
/// else the pull request found for its branch.
fn success_line(result: Option<&RunResult>, pull_request: Option<&str>) -> String {
    let pr = |verb: &str, r: &RunResult| match (&r.pr_number, &r.pr_url) {
        (Some(n), Some(url)) => format!("succeeded and {verb} pull request #{n}: {url}"),
        (Some(n), None) => format!("succeeded and {verb} pull request #{n}"),
        _ => format!("succeeded and {verb} its pull request"),
    };
    match result {
        Some(r) if r.outcome == "pr-opened" => pr("opened", r),
        Some(r) if r.outcome == "pr-updated" => pr("updated", r),
        Some(r) if r.outcome == "no-changes" => {
            "finished without changes; no pull request was opened or updated".into()
        }
        _ => match pull_request {
            Some(pr) => format!("succeeded: {pr}"),
            None => "succeeded".into(),
        },
    }
}

/// The status comment of a run, from its row and the runner's result. Pure.
pub fn run_body(
    run: &Run,
    result: Option<&RunResult>,
    commit_url: Option<&str>,
    pull_request: Option<&str>,
    queue: Option<(usize, usize)>,
) -> String {
    let commit = match (&run.commit_sha, commit_url) {
        (Some(sha), Some(url)) => format!(
            "[`{}`]({})",
            &sha[..12.min(sha.len())],
            url.replace("{sha}", sha)
        ),
        (Some(sha), None) => format!("`{}`", &sha[..12.min(sha.len())]),
        (None, _) => "not yet".into(),
    };
    let state = RunState::parse(&run.state);
    // The in-process stand-in ran no agent: say so, never "succeeded".
    let simulated = run.is_simulated().then(|| {
        format!(
            "was only simulated: the cluster is issueops' in-process stand-in, so no agent ran and nothing was changed ({})",
            run.reason.as_deref().unwrap_or_default()
        )
    });
    let headline = match state {
        Some(RunState::Queued) => match queue {
            Some((position, of)) => format!(
                "is queued, position {position} of {of}; it starts by itself when its issue and a slot are free"
            ),
            None => "is queued; it starts by itself when its issue and a slot are free".into(),
        },
        Some(RunState::Proposed) => format!(
            "is proposed for review on the state repo's branch `proposals/{0}`; nothing is applied until a reviewer approves it (`issueops proposals approve {0}`, or the staff UI)",
            run.run_id
        ),
        Some(RunState::Accepted | RunState::Committed) => {
            "was accepted and is being applied".into()
        }
        Some(RunState::Applied) => "is applied; its Job is starting".into(),
        Some(RunState::Running) => "is running".into(),
        Some(RunState::Succeeded) => match simulated {
            Some(line) => line,
            None => success_line(result, pull_request),
        },
        Some(RunState::Failed) => format!(
            "failed: {}",
            run.reason.as_deref().unwrap_or("no reason given")
        ),
        Some(RunState::Cancelled) => format!(
            "was cancelled: {}",
            run.reason.as_deref().unwrap_or("no reason given")
        ),
        // Pruning must not hide what the run did, or why it failed.
        Some(RunState::Pruned) => match result {
            Some(r) if r.outcome == "failed" => format!(
                "failed: {}; it was pruned, its history stays in the state repo",
                r.reason.as_deref().unwrap_or("no reason given")
            ),
            Some(r) => format!(
                "{}; it was pruned, its history stays in the state repo",
                success_line(Some(r), pull_request)
            ),
            None if simulated.is_some() => format!(
                "{}; it was pruned",
                simulated.unwrap_or_default()
            ),
            // A cancelled run's reason (denied, expired, closed) stays said.
            None => format!(
                "has finished and was pruned{}; its history stays in the state repo",
                run.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        },
        None => format!("is {}", run.state),
    };
    let agent = match result {
        Some(r) => {
            let head = r
                .head_commit
                .as_deref()
                .map(|c| format!(" · head commit `{}`", &c[..12.min(c.len())]))
                .unwrap_or_default();
            let session = if r.resumed_session {
                " · resumed the agent's earlier session"
            } else {
                ""
            };
            format!("{head}{session}")
        }
        None => String::new(),
    };
    with_marker(
        &run.delivery_id,
        &format!(
            "**issueops** {} run `{}` {headline}.\n\nNamespace `{}` · branch `{}` · state repo commit {commit}{agent}",
            run.mode, run.run_id, run.namespace, run.branch
        ),
    )
}

impl ControlPlane {
    /// Says `text` on the issue, once, as the comment of trigger `delivery_id`.
    pub(crate) async fn notify(
        &self,
        delivery_id: &str,
        repo: &str,
        issue: i64,
        text: &str,
    ) -> Result<(), ControlPlaneError> {
        let body = notice_body(delivery_id, text);
        self.store
            .set_report(delivery_id, repo, issue, &body)
            .await?;
        Ok(())
    }

    /// Refreshes the wanted comment of every run and posts what GitHub does
    /// not have yet. Without GitHub configured it only records. Returns how
    /// many comments were created or edited.
    pub async fn report_pass(&self) -> Result<usize, ControlPlaneError> {
        let commit_url = self.config.github.commit_url.as_deref();
        let wanted = self.store.report_bodies().await?;
        let results = self.store.run_results().await?;
        let queue = self.queue_positions().await?;
        for run in self.store.list_runs().await? {
            let current = wanted.get(&run.delivery_id);
            let result = results.get(&run.run_id);
            let pr = match (&self.github, run.run_state(), result) {
                // The runner said what it did: no lookup.
                (_, _, Some(_)) => None,
                // Otherwise the pull request is looked up once, when the run
                // succeeds, not on every pass.
                (Some(_), Some(RunState::Succeeded), None)
                    if current.is_some_and(|b| {
                        b.contains(&format!("run `{}` succeeded", run.run_id))
                    }) =>
                {
                    continue
                }
                (Some(_), Some(RunState::Succeeded), None) if run.is_simulated() => None,
                (Some(github), Some(RunState::Succeeded), None) => self
                    .pull_request_for(github, &run.repo, &run.branch)
                    .await?
                    .map(|(_, url)| url),
                _ => None,
            };
            let body = run_body(
                &run,
                result,
                commit_url,
                pr.as_deref(),
                queue.get(&run.run_id).copied(),
            );
            if current != Some(&body) {
                self.store
                    .set_report(&run.delivery_id, &run.repo, run.issue_number, &body)
                    .await?;
            }
        }
        let Some(github) = &self.github else {
            return Ok(0);
        };
        let mut posted = 0;
        for report in self.store.unposted_reports(BATCH).await? {
            let id = self.post(github, &report).await?;
            self.store
                .mark_reported(&report.subject, id, &report.body)
                .await?;
            posted += 1;
        }
        Ok(posted)
    }

    /// Edits the report's comment, or finds it by its marker, or creates it.
    async fn post(&self, github: &GitHub, report: &Report) -> Result<i64, ControlPlaneError> {
        let repo = &report.repo;
        let body = json!({ "body": report.body });
        let existing = match report.comment_id {
            Some(id) => Some(id),
            None => self.find_comment(github, report).await?,
        };
        if let Some(id) = existing {
            let answer = github
                .request(
                    repo,
                    Method::Patch,
                    &format!("/repos/{repo}/issues/comments/{id}"),
                    Some(&body),
                )
                .await?;
            match answer.status {
                200 => return Ok(id),
                404 => {} // deleted by someone: create it again below
                status => {
                    return Err(ControlPlaneError::GitHub(format!(
                        "editing comment {id}: answered {status}"
                    )))
                }
            }
        }
        let path = format!("/repos/{repo}/issues/{}/comments", report.issue_number);
        let answer = github
            .request(repo, Method::Post, &path, Some(&body))
            .await?;
        match (answer.status, answer.body.get("id").and_then(Value::as_i64)) {
            (201, Some(id)) => Ok(id),
            (status, _) => Err(ControlPlaneError::GitHub(format!(
                "creating a comment: answered {status}"
            ))),
        }
    }

    /// The comment that carries the report's marker, if a crash left one.
    async fn find_comment(
        &self,
        github: &GitHub,
        report: &Report,
    ) -> Result<Option<i64>, ControlPlaneError> {
        let wanted = marker(&report.subject);
        for page in 1..=20 {
            let path = format!(
                "/repos/{}/issues/{}/comments?per_page={PAGE}&page={page}",
                report.repo, report.issue_number
            );
            let answer = github
                .request(&report.repo, Method::Get, &path, None)
                .await?;
            let Some(comments) = answer.body.as_array() else {
                return Ok(None);
            };
            if let Some(found) = comments.iter().find(|c| {
                c.get("body")
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.starts_with(&wanted))
            }) {
                return Ok(found.get("id").and_then(Value::as_i64));
            }
            if comments.len() < PAGE {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The open pull request whose head is `branch`, as a link.
    pub(crate) async fn pull_request_for(
        &self,
        github: &GitHub,
        repo: &str,
        branch: &str,
    ) -> Result<Option<(i64, String)>, ControlPlaneError> {
        let owner = repo.split('/').next().unwrap_or_default();
        let path = format!("/repos/{repo}/pulls?state=open&head={owner}:{branch}");
        let answer = github.request(repo, Method::Get, &path, None).await?;
        let first = answer.body.as_array().and_then(|prs| prs.first());
        Ok(first.and_then(|pr| {
            let number = pr.get("number").and_then(Value::as_i64)?;
            let url = pr.get("html_url").and_then(Value::as_str)?;
            Some((number, url.to_string()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &str) -> Run {
        Run {
            run_id: "r1".into(),
            delivery_id: "d1".into(),
            repo: "o/r".into(),
            issue_number: 1,
            namespace: "ns".into(),
            mode: "dev".into(),
            branch: "issueops/issue-1".into(),
            actor: "a".into(),
            state: state.into(),
            commit_sha: Some("0123456789abcdef".into()),
            finished_at: None,
            reason: Some("DeadlineExceeded".into()),
            pull_request: None,
        }
    }

    #[test]
    fn bodies_carry_the_marker_and_the_state() {
        let queued = run_body(&run("queued"), None, None, None, Some((3, 7)));
        assert!(queued.contains("is queued, position 3 of 7"), "{queued}");
        let b = run_body(&run("running"), None, None, None, None);
        assert!(b.starts_with("<!-- issueops:subject=d1 -->"));
        assert!(b.contains("is running") && b.contains("`0123456789ab`"));
        assert!(
            run_body(&run("failed"), None, None, None, None).contains("failed: DeadlineExceeded")
        );
        // A failed run keeps saying why once it is pruned.
        let failed = RunResult {
            run_id: "r1".into(),
            outcome: "failed".into(),
            pr_number: None,
            pr_url: None,
            head_commit: None,
            reason: Some("not published: the change adds a symbolic link".into()),
            resumed_session: false,
        };
        let pruned = run_body(&run("pruned"), Some(&failed), None, None, None);
        assert!(
            pruned
                .contains("failed: not published: the change adds a symbolic link; it was pruned"),
            "{pruned}"
        );
        assert!(run_body(&run("pruned"), None, None, None, None)
            .contains("has finished and was pruned (DeadlineExceeded)"));
        // So does one that changed nothing.
        let nothing = RunResult {
            outcome: "no-changes".into(),
            reason: None,
            ..failed.clone()
        };
        let pruned = run_body(&run("pruned"), Some(&nothing), None, None, None);
        assert!(
            pruned.contains(
                "finished without changes; no pull request was opened or updated; it was pruned"
            ),
            "{pruned}"
        );
        let done = run_body(
            &run("succeeded"),
            None,
            Some("https://x/commit/{sha}"),
            Some("https://github.com/o/r/pull/9"),
            None,
        );
        assert!(
            done.contains("https://github.com/o/r/pull/9")
                && done.contains("https://x/commit/0123456789abcdef")
        );
    }

    #[test]
    fn the_runners_result_names_the_pull_request_and_commit() {
        let mut result = RunResult {
            run_id: "r1".into(),
            outcome: "pr-opened".into(),
            pr_number: Some(12),
            pr_url: Some("https://github.com/o/r/pull/12".into()),
            head_commit: Some("fedcba9876543210".into()),
            reason: None,
            resumed_session: false,
        };
        let b = run_body(&run("succeeded"), Some(&result), None, None, None);
        assert!(
            b.contains("succeeded and opened pull request #12: https://github.com/o/r/pull/12")
                && b.contains("head commit `fedcba987654`"),
            "{b}"
        );
        result.outcome = "pr-updated".into();
        result.resumed_session = true;
        let b = run_body(&run("succeeded"), Some(&result), None, None, None);
        assert!(
            b.contains("updated pull request #12")
                && b.contains("resumed the agent's earlier session")
        );
        result.outcome = "no-changes".into();
        let b = run_body(&run("succeeded"), Some(&result), None, None, None);
        assert!(b.contains("without changes; no pull request"), "{b}");
    }
}

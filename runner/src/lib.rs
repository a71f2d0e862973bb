//! The agent runner: the entrypoint of the agent image. One run, start to
//! end: read the issue, clone, check out the run's branch, render the prompt,
//! run the coding agent, commit, push, open or update the pull request, label
//! it, and leave a [`RunResult`] as the container's termination message.
//!
//! It depends on `issueops-github` and nothing else of issueops: it talks to
//! the rest only through what the Job gives it (environment, mounted files)
//! and what it leaves (the result, the branch, the pull request).
//! See `agent/README.md` for the contract.

pub mod agent;
pub mod forge;
pub mod git;
pub mod prompt;
pub mod publish;
pub mod result;
pub mod session;
pub mod spec;
pub mod token;

use forge::{Forge, PullRequest};
use result::{Outcome, RunResult};
use spec::{Mode, RunSpec};
use std::collections::BTreeMap;
use token::TokenFile;

/// Why a run failed, in words for the issue's status comment.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Forge(#[from] forge::ForgeError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Prompt(#[from] prompt::PromptError),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.display().to_string();
    move |source| RunError::Io { what, path, source }
}

/// Runs `spec` to its result. Never panics on bad input; every failure
/// becomes a `failed` result with its reason (the token redacted).
pub async fn execute(spec: &RunSpec) -> RunResult {
    let token = TokenFile::new(&spec.token_file);
    match run(spec, &token).await {
        Ok(result) => result,
        Err(RunFailure { error, tail }) => {
            let mut result = RunResult::failed(token.redact(&error.to_string()));
            result.log_tail = tail.map(|t| token.redact(&t));
            result
        }
    }
}

struct RunFailure {
    error: RunError,
    tail: Option<String>,
}

impl<E: Into<RunError>> From<E> for RunFailure {
    fn from(e: E) -> Self {
        Self {
            error: e.into(),
            tail: None,
        }
    }
}

async fn run(spec: &RunSpec, token: &TokenFile) -> Result<RunResult, RunFailure> {
    let forge = Forge::new(&spec.api_url, token, &spec.repo);
    let issue = forge.issue(spec.issue).await?;
    // A revise run continues an open pull request; without one it opens none.
    let pull = match spec.mode {
        Mode::Dev => None,
        Mode::Revise => Some(revised_pull(spec, &forge).await?),
    };
    let review = match &pull {
        Some(p) => forge.review_feedback(p.number).await?,
        None => Vec::new(),
    };
    let base = forge.default_branch().await?;
    let dir = spec.clone_dir();
    tracing::info!(repo = %spec.repo, branch = %spec.branch, "cloning");
    let work = git::Workspace::clone(&spec.git_url, &dir, token)?;
    match &pull {
        Some(p) => work.checkout_existing(&p.head)?,
        None => work.checkout_or_create(&spec.branch, &base)?,
    }
    let start = work.head()?;

    let template = std::fs::read_to_string(&spec.prompt_template)
        .map_err(io("reading the prompt template", &spec.prompt_template))?;
    let prompt = prompt::render(
        &spec.prompt_template.display().to_string(),
        &template,
        &prompt::PromptInput {
            repo: &spec.repo,
            issue_number: spec.issue,
            issue: &issue,
            mode: spec.mode.as_str(),
            branch: &spec.branch,
            run_id: &spec.run_id,
            pull_request: pull.as_ref(),
            review_comments: &review,
        },
    )?;
    let prompt_file = spec.prompt_file();
    std::fs::write(&prompt_file, &prompt).map_err(io("writing the prompt", &prompt_file))?;

    let resumed = session::begin(&spec.agent_home, &spec.run_id, spec.mode)
        .map_err(io("preparing the agent home", &spec.agent_home))?;
    let vars = BTreeMap::from([
        ("model", spec.model.clone()),
        ("reasoning", spec.reasoning.clone()),
        ("prompt_file", prompt_file.display().to_string()),
    ]);
    let ran = agent::run(agent::Invocation {
        argv: agent::substitute(&spec.agent_command, &vars),
        cwd: &dir,
        env: agent_env(spec, &prompt_file),
        prompt: &prompt,
        timeout: spec.agent_timeout,
    })
    .await?;
    let failure = match &ran.exit {
        agent::Exit::Success => None,
        agent::Exit::Status(Some(code)) => Some(format!("the agent exited with status {code}")),
        agent::Exit::Status(None) => Some("the agent was killed by a signal".to_string()),
        agent::Exit::TimedOut(after) => Some(format!(
            "the agent did not finish within {} s and was stopped",
            after.as_secs()
        )),
    };
    if let Some(reason) = failure {
        return Err(RunFailure {
            error: RunError::Refused(reason),
            tail: Some(ran.tail),
        });
    }

    if work.is_dirty()? {
        let message = commit_message(spec, &issue.title);
        work.commit_all(&message, &spec.author_name, &spec.author_email)?;
    }
    let head = work.head()?;
    let mut result = RunResult {
        outcome: Outcome::NoChanges,
        pr_number: pull.as_ref().map(|p| p.number),
        pr_url: pull.as_ref().map(|p| p.url.clone()),
        head_commit: Some(head.to_string()),
        reason: None,
        log_tail: None,
        resumed_session: resumed,
    };
    if head == start {
        result.reason = Some("the agent changed nothing; no pull request was opened".into());
        return Ok(result);
    }
    let branch = pull.as_ref().map_or(spec.branch.as_str(), |p| &p.head);
    publish::publish(&publish::Publish {
        worktree: &dir,
        branch,
        base: start,
        url: &spec.git_url,
        token,
        max_bytes: spec.max_push_bytes,
        scratch: &spec.workspace.join("publish"),
    })?;
    tracing::info!(%branch, commit = %head, "pushed");
    let (pr, outcome) = match pull {
        Some(p) => (p, Outcome::PrUpdated),
        None => match forge.open_pull_for(branch).await? {
            Some(p) => (p, Outcome::PrUpdated),
            None => {
                let body = pull_body(spec);
                (
                    forge.open_pull(&issue.title, branch, &base, &body).await?,
                    Outcome::PrOpened,
                )
            }
        },
    };
    forge.add_label(pr.number, &spec.in_review_label).await?;
    result.outcome = outcome;
    result.pr_number = Some(pr.number);
    result.pr_url = Some(pr.url);
    Ok(result)
}

/// The pull request a revise run continues: the one the Job names, else the
/// open one from the run's branch. Refused when there is none open.
async fn revised_pull(spec: &RunSpec, forge: &Forge) -> Result<PullRequest, RunFailure> {
    let found = match spec.pull_request {
        Some(n) => forge.pull(n).await?,
        None => forge.open_pull_for(&spec.branch).await?,
    };
    match found {
        Some(p) if p.open => Ok(p),
        Some(p) => Err(RunError::Refused(format!(
            "pull request #{} is closed; a revise run updates an open pull request and opens none",
            p.number
        ))
        .into()),
        None => Err(RunError::Refused(format!(
            "no open pull request from branch {}; a revise run updates one and opens none (start with a dev run)",
            spec.branch
        ))
        .into()),
    }
}

/// The agent's environment: its home (where it keeps its session), the
/// prompt's path, the run's identity, and its model API key when given.
fn agent_env(spec: &RunSpec, prompt_file: &std::path::Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("HOME".to_string(), spec.agent_home.display().to_string()),
        (
            "ISSUEOPS_PROMPT_FILE".to_string(),
            prompt_file.display().to_string(),
        ),
        ("ISSUEOPS_REPO".to_string(), spec.repo.clone()),
        ("ISSUEOPS_ISSUE".to_string(), spec.issue.to_string()),
        ("ISSUEOPS_RUN_ID".to_string(), spec.run_id.clone()),
        ("ISSUEOPS_MODE".to_string(), spec.mode.as_str().to_string()),
        ("ISSUEOPS_MODEL".to_string(), spec.model.clone()),
        ("ISSUEOPS_REASONING".to_string(), spec.reasoning.clone()),
    ]);
    if let Some(path) = &spec.api_key_file {
        // Optional: without a key file the agent uses whatever login its home holds.
        if let Ok(key) = std::fs::read_to_string(path) {
            env.insert(spec.api_key_env.clone(), key.trim().to_string());
        }
    }
    env
}

/// The commit message: names the issue; trailers tie it to the run.
pub fn commit_message(spec: &RunSpec, title: &str) -> String {
    let title: String = title
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(60)
        .collect();
    format!(
        "issueops {} run for #{}: {title}\n\nMade by the coding agent for {}#{}.\n\nRun-Id: {}\nIssue: {}#{}\n",
        spec.mode.as_str(),
        spec.issue,
        spec.repo,
        spec.issue,
        spec.run_id,
        spec.repo,
        spec.issue
    )
}

fn pull_body(spec: &RunSpec) -> String {
    format!(
        "Closes #{}\n\nOpened by issueops run `{}` (branch `{}`); the coding agent's changes for the issue above.",
        spec.issue, spec.run_id, spec.branch
    )
}

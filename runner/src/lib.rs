//! The agent runner: the entrypoint of the agent image. A run is three
//! steps, each in its own container of the Job's pod, so the agent never
//! shares a filesystem, a process or an environment with the push token:
//!
//! - `clone` (init container, has the token): reads the issue (and the pull
//!   request a revise run continues), clones, checks out the run's branch,
//!   renders the prompt, and leaves a [`handoff::Handoff`] for `publish`
//!   where the agent cannot write;
//! - `agent` (init container, no token; the model API key only here): runs
//!   the coding agent on the workspace and commits what it changed;
//! - `publish` (has the token): reads the agent's commits as data, checks
//!   them, pushes the run's branch, opens or updates the pull request, labels
//!   it, and leaves the [`RunResult`] as the termination message.
//!
//! A step that fails leaves a `failed` result as its own termination
//! message and exits non-zero, so the pod stops there.
//!
//! It depends on `issueops-github` and nothing else of issueops: it talks to
//! the rest only through what the Job gives it (environment, mounted files)
//! and what it leaves (the result, the branch, the pull request).
//! See `agent/README.md` for the contract.

pub mod agent;
pub mod forge;
pub mod git;
pub mod handoff;
pub mod prompt;
pub mod publish;
pub mod result;
pub mod session;
pub mod spec;
pub mod token;

use forge::{Forge, PullRequest};
use handoff::{AgentNotes, Handoff};
use result::{Outcome, RunResult};
use spec::{Mode, RunSpec};
use std::collections::BTreeMap;
use token::TokenFile;

/// One step of a run: one container of the Job's pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Clone,
    Agent,
    Publish,
}

impl Step {
    pub const ALL: [Step; 3] = [Step::Clone, Step::Agent, Step::Publish];

    pub fn name(self) -> &'static str {
        match self {
            Step::Clone => "clone",
            Step::Agent => "agent",
            Step::Publish => "publish",
        }
    }

    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How a step ended: `Continue` lets the next step run (the container exits
/// 0 and leaves no result); `Done` is the run's result.
#[derive(Debug)]
pub enum StepEnd {
    Continue,
    Done(RunResult),
}

impl StepEnd {
    /// The container's exit code: 0 to go on, else the result's.
    pub fn exit_code(&self) -> u8 {
        match self {
            StepEnd::Continue => 0,
            StepEnd::Done(r) => r.outcome.exit_code(),
        }
    }
}

/// Why a run failed, in words for the issue's status comment.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
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

/// Runs one step of `spec`. Never panics on bad input; every failure
/// becomes a `failed` result with its reason (the token redacted).
pub async fn execute(step: Step, spec: &RunSpec) -> StepEnd {
    let token = spec.token_file.as_deref().map(TokenFile::new);
    let outcome = match step {
        Step::Clone => clone_step(spec).await,
        Step::Agent => agent_step(spec).await,
        Step::Publish => publish_step(spec).await,
    };
    match outcome {
        Ok(end) => end,
        Err(RunFailure { error, tail }) => {
            let redact = |text: &str| match &token {
                Some(t) => t.redact(text),
                None => text.to_string(),
            };
            let mut result = RunResult::failed(redact(&error.to_string()));
            result.log_tail = tail.map(|t| redact(&t));
            StepEnd::Done(result)
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

/// `clone`: everything that needs GitHub before the agent runs.
async fn clone_step(spec: &RunSpec) -> Result<StepEnd, RunFailure> {
    let token = spec.token()?;
    let forge = Forge::new(&spec.api_url, &token, &spec.repo);
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
    let work = git::Workspace::clone(&spec.git_url, &dir, &token)?;
    let branch = pull
        .as_ref()
        .map_or(spec.branch.clone(), |p| p.head.clone());
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
    let message_file = spec.workspace.join(handoff::COMMIT_MESSAGE_FILE);
    std::fs::write(&message_file, commit_message(spec, &issue.title))
        .map_err(io("writing the commit message", &message_file))?;
    let handoff_file = spec.handoff.join(handoff::HANDOFF_FILE);
    handoff::write(
        &handoff_file,
        &Handoff {
            start: start.to_string(),
            branch,
            base_branch: base,
            pull,
            issue_title: issue.title,
        },
    )
    .map_err(io("writing the handoff", &handoff_file))?;
    tracing::info!(commit = %start, "cloned; the agent step is next");
    Ok(StepEnd::Continue)
}

/// `agent`: runs the coding agent on the clone and commits what it left.
/// This container has no token: nothing here is trusted by `publish`.
async fn agent_step(spec: &RunSpec) -> Result<StepEnd, RunFailure> {
    let dir = spec.clone_dir();
    let prompt_file = spec.prompt_file();
    let prompt = std::fs::read_to_string(&prompt_file)
        .map_err(io("reading the prompt the clone step wrote", &prompt_file))?;
    let message_file = spec.workspace.join(handoff::COMMIT_MESSAGE_FILE);
    let message = std::fs::read_to_string(&message_file)
        .map_err(io("reading the commit message", &message_file))?;
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
    let work = git::Workspace::open(&dir)?;
    if work.is_dirty()? {
        work.commit_all(&message, &spec.author_name, &spec.author_email)?;
    }
    let notes_file = spec.workspace.join(handoff::AGENT_NOTES_FILE);
    handoff::write(
        &notes_file,
        &AgentNotes {
            resumed_session: resumed,
        },
    )
    .map_err(io("writing the agent step's notes", &notes_file))?;
    Ok(StepEnd::Continue)
}

/// `publish`: the agent's commits, read as data and checked, pushed to the
/// run's remote and branch; the pull request opened or updated.
async fn publish_step(spec: &RunSpec) -> Result<StepEnd, RunFailure> {
    let token = spec.token()?;
    let handoff_file = spec.handoff.join(handoff::HANDOFF_FILE);
    let plan: Handoff = handoff::read(&handoff_file)
        .map_err(io("reading what the clone step left", &handoff_file))?;
    let start = git2::Oid::from_str(&plan.start)
        .map_err(|e| RunError::Refused(format!("the clone step's start commit: {e}")))?;
    // The agent's claim; a lie changes only this flag.
    let notes: AgentNotes =
        handoff::read(&spec.workspace.join(handoff::AGENT_NOTES_FILE)).unwrap_or_default();
    let published = publish::publish(&publish::Publish {
        worktree: &spec.clone_dir(),
        branch: &plan.branch,
        base: start,
        url: &spec.git_url,
        token: &token,
        max_bytes: spec.max_push_bytes,
        scratch: &spec.handoff,
    })?;
    let mut result = RunResult {
        outcome: Outcome::NoChanges,
        pr_number: plan.pull.as_ref().map(|p| p.number),
        pr_url: plan.pull.as_ref().map(|p| p.url.clone()),
        head_commit: Some(published.head().to_string()),
        reason: None,
        log_tail: None,
        resumed_session: notes.resumed_session,
    };
    if let publish::Published::Unchanged(_) = published {
        result.reason = Some(match &plan.pull {
            // A revise that changes nothing leaves its pull request as it was.
            Some(p) => format!(
                "the agent changed nothing; pull request #{} was left as it was",
                p.number
            ),
            None => "the agent changed nothing; no pull request was opened".into(),
        });
        return Ok(StepEnd::Done(result));
    }
    tracing::info!(branch = %plan.branch, commit = %published.head(), "pushed");
    let forge = Forge::new(&spec.api_url, &token, &spec.repo);
    let (pr, outcome) = match plan.pull {
        Some(p) => (p, Outcome::PrUpdated),
        None => match forge.open_pull_for(&plan.branch).await? {
            Some(p) => (p, Outcome::PrUpdated),
            None => {
                let body = pull_body(spec);
                (
                    forge
                        .open_pull(&plan.issue_title, &plan.branch, &plan.base_branch, &body)
                        .await?,
                    Outcome::PrOpened,
                )
            }
        },
    };
    forge.add_label(pr.number, &spec.in_review_label).await?;
    result.outcome = outcome;
    result.pr_number = Some(pr.number);
    result.pr_url = Some(pr.url);
    Ok(StepEnd::Done(result))
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

//! What one run is, read from the environment the Job template gives the
//! container. Nothing else configures the runner: no flags, no config file.
//!
//! Paths and values are documented in `agent/README.md`; a missing or
//! malformed variable is an error naming it, before anything is cloned.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{0} is not set; the Job template sets it (see agent/README.md)")]
    Missing(&'static str),
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Dev,
    Revise,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dev => "dev",
            Mode::Revise => "revise",
        }
    }
}

/// One run, as the Job describes it.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `owner/name`.
    pub repo: String,
    pub issue: u64,
    pub run_id: String,
    pub mode: Mode,
    /// `<prefix>/issue-<n>`: the branch the run pushes to.
    pub branch: String,
    /// The pull request a revise run continues, when the control plane knew it.
    pub pull_request: Option<u64>,
    /// Clone URL. Credentials are never part of it.
    pub git_url: String,
    pub api_url: String,
    /// The mounted Secret file holding the GitHub token; read before each
    /// use. Only the `clone` and `publish` steps have it.
    pub token_file: Option<PathBuf>,
    /// The agent's argv, placeholders not yet replaced.
    pub agent_command: Vec<String>,
    pub agent_timeout: Duration,
    pub model: String,
    pub reasoning: String,
    /// The prompt template of this run's mode (mounted ConfigMap).
    pub prompt_template: PathBuf,
    /// The agent's home: a volume kept from run to run of the same issue.
    pub agent_home: PathBuf,
    /// Scratch space: the clone and the prompt go here.
    pub workspace: PathBuf,
    /// What `clone` leaves for `publish`, in a volume the agent does not mount.
    pub handoff: PathBuf,
    /// Where the result goes: the container's termination message file.
    pub result_file: PathBuf,
    /// Label put on the pull request when the run is done.
    pub in_review_label: String,
    /// A file holding the agent's model API key, and the variable it goes in.
    pub api_key_file: Option<PathBuf>,
    pub api_key_env: String,
    pub author_name: String,
    pub author_email: String,
    /// The most file content a run's change may add (`agent.max_push_bytes`).
    pub max_push_bytes: u64,
}

impl RunSpec {
    /// Reads the spec from the process environment.
    pub fn from_env() -> Result<Self, SpecError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the spec through `get` (a variable's value, when set and UTF-8).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SpecError> {
        let need = |name: &'static str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(SpecError::Missing(name))
        };
        let or = |name: &str, default: &str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let number = |name: &'static str, value: String| {
            value.trim().parse::<u64>().map_err(|e| SpecError::Invalid {
                name,
                reason: format!("{value:?} is not a whole number: {e}"),
            })
        };
        let repo = need("ISSUEOPS_REPO")?;
        if !repo
            .split_once('/')
            .is_some_and(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        {
            return Err(SpecError::Invalid {
                name: "ISSUEOPS_REPO",
                reason: format!("{repo:?} is not owner/name"),
            });
        }
        let mode = match need("ISSUEOPS_MODE")?.as_str() {
            "dev" => Mode::Dev,
            "revise" => Mode::Revise,
            other => {
                return Err(SpecError::Invalid {
                    name: "ISSUEOPS_MODE",
                    reason: format!("{other:?}: expected dev or revise"),
                })
            }
        };
        let command_json = need("ISSUEOPS_AGENT_COMMAND")?;
        let agent_command: Vec<String> =
            serde_json::from_str(&command_json).map_err(|e| SpecError::Invalid {
                name: "ISSUEOPS_AGENT_COMMAND",
                reason: format!("expected a JSON list of strings (argv): {e}"),
            })?;
        if agent_command.is_empty() {
            return Err(SpecError::Invalid {
                name: "ISSUEOPS_AGENT_COMMAND",
                reason: "the list is empty; it must name the agent program".into(),
            });
        }
        let timeout = number(
            "ISSUEOPS_AGENT_TIMEOUT_SECONDS",
            or("ISSUEOPS_AGENT_TIMEOUT_SECONDS", "2700"),
        )?;
        let pull_request = match get("ISSUEOPS_PR").filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(number("ISSUEOPS_PR", v)?),
            None => None,
        };
        let workspace = PathBuf::from(or("ISSUEOPS_WORKSPACE", "/workspace"));
        Ok(Self {
            issue: number("ISSUEOPS_ISSUE", need("ISSUEOPS_ISSUE")?)?,
            run_id: need("ISSUEOPS_RUN_ID")?,
            branch: need("ISSUEOPS_BRANCH")?,
            git_url: need("ISSUEOPS_GIT_URL")?,
            api_url: or("ISSUEOPS_GITHUB_API_URL", "https://api.github.com"),
            token_file: get("GITHUB_TOKEN_FILE")
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from),
            handoff: PathBuf::from(or("ISSUEOPS_HANDOFF", "/var/run/issueops/handoff")),
            agent_timeout: Duration::from_secs(timeout),
            model: need("ISSUEOPS_MODEL")?,
            reasoning: need("ISSUEOPS_REASONING")?,
            prompt_template: PathBuf::from(need("ISSUEOPS_PROMPT_TEMPLATE")?),
            agent_home: PathBuf::from(need("ISSUEOPS_AGENT_HOME")?),
            result_file: PathBuf::from(or("ISSUEOPS_RESULT_FILE", "/dev/termination-log")),
            in_review_label: or("ISSUEOPS_IN_REVIEW_LABEL", "state:in-review"),
            api_key_file: get("ISSUEOPS_AGENT_API_KEY_FILE")
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from),
            api_key_env: or("ISSUEOPS_AGENT_API_KEY_ENV", "OPENAI_API_KEY"),
            author_name: or("ISSUEOPS_GIT_AUTHOR_NAME", "issueops[bot]"),
            author_email: or(
                "ISSUEOPS_GIT_AUTHOR_EMAIL",
                "issueops[bot]@users.noreply.github.com",
            ),
            max_push_bytes: number(
                "ISSUEOPS_MAX_PUSH_BYTES",
                or("ISSUEOPS_MAX_PUSH_BYTES", "104857600"),
            )?,
            repo,
            mode,
            pull_request,
            agent_command,
            workspace,
        })
    }

    /// The token file, for the steps that need it.
    pub fn token(&self) -> Result<crate::token::TokenFile, SpecError> {
        self.token_file
            .as_deref()
            .map(crate::token::TokenFile::new)
            .ok_or(SpecError::Missing("GITHUB_TOKEN_FILE"))
    }

    /// Where the repository is cloned.
    pub fn clone_dir(&self) -> PathBuf {
        self.workspace.join("repo")
    }

    /// Where the rendered prompt is written (outside the clone, so it is
    /// never committed).
    pub fn prompt_file(&self) -> PathBuf {
        self.workspace.join("prompt.md")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("ISSUEOPS_REPO", "o/r"),
            ("ISSUEOPS_ISSUE", "7"),
            ("ISSUEOPS_RUN_ID", "abc"),
            ("ISSUEOPS_MODE", "dev"),
            ("ISSUEOPS_BRANCH", "issueops/issue-7"),
            ("ISSUEOPS_GIT_URL", "https://github.com/o/r.git"),
            ("GITHUB_TOKEN_FILE", "/t/token"),
            ("ISSUEOPS_AGENT_COMMAND", r#"["codex","exec","-"]"#),
            ("ISSUEOPS_MODEL", "m"),
            ("ISSUEOPS_REASONING", "low"),
            ("ISSUEOPS_PROMPT_TEMPLATE", "/p/prompt.md"),
            ("ISSUEOPS_AGENT_HOME", "/agent-home"),
        ])
    }

    fn read(vars: &HashMap<&'static str, &'static str>) -> Result<RunSpec, SpecError> {
        RunSpec::from_lookup(|k| vars.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn reads_a_complete_environment_with_defaults() {
        let spec = read(&base()).unwrap();
        assert_eq!(spec.issue, 7);
        assert_eq!(spec.mode, Mode::Dev);
        assert_eq!(spec.agent_command, ["codex", "exec", "-"]);
        assert_eq!(spec.result_file, PathBuf::from("/dev/termination-log"));
        assert_eq!(spec.clone_dir(), PathBuf::from("/workspace/repo"));
        assert_eq!(spec.pull_request, None);
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let mut vars = base();
        vars.remove("GITHUB_TOKEN_FILE");
        assert!(matches!(
            read(&vars).unwrap().token(),
            Err(SpecError::Missing("GITHUB_TOKEN_FILE"))
        ));
        let mut vars = base();
        vars.insert("ISSUEOPS_AGENT_COMMAND", "codex exec");
        assert!(read(&vars).unwrap_err().to_string().contains("JSON list"));
        let mut vars = base();
        vars.insert("ISSUEOPS_ISSUE", "-1");
        assert!(matches!(
            read(&vars).unwrap_err(),
            SpecError::Invalid {
                name: "ISSUEOPS_ISSUE",
                ..
            }
        ));
        let mut vars = base();
        vars.insert("ISSUEOPS_MODE", "deploy");
        assert!(read(&vars).unwrap_err().to_string().contains("deploy"));
    }
}

//! Runs the coding agent: its argv from the config (never a shell), the
//! prompt on standard input and in a file, a clean environment without the
//! GitHub token, a timeout, and its output forwarded to the container log with
//! the last lines kept for the result.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Lines of agent output kept for a failure's log tail.
const TAIL_LINES: usize = 40;
/// Variables the agent inherits from the runner; everything else is dropped
/// (above all GITHUB_TOKEN_FILE: the agent never gets the push token).
const INHERITED: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE"];

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start the agent {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for the agent: {0}")]
    Wait(std::io::Error),
}

/// How the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    Status(Option<i32>),
    TimedOut(Duration),
}

#[derive(Debug, Clone)]
pub struct AgentRun {
    pub exit: Exit,
    /// The last lines it printed (stdout and stderr interleaved).
    pub tail: String,
}

/// `argv` with `{name}` replaced by `vars[name]` inside each argument.
pub fn substitute(argv: &[String], vars: &BTreeMap<&str, String>) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            vars.iter().fold(arg.clone(), |acc, (name, value)| {
                acc.replace(&format!("{{{name}}}"), value)
            })
        })
        .collect()
}

pub struct Invocation<'a> {
    pub argv: Vec<String>,
    pub cwd: &'a Path,
    pub env: BTreeMap<String, String>,
    pub prompt: &'a str,
    pub timeout: Duration,
}

/// Runs the agent to its end or its timeout (then it is killed).
pub async fn run(inv: Invocation<'_>) -> Result<AgentRun, AgentError> {
    let Some((program, args)) = inv.argv.split_first() else {
        return Err(AgentError::Spawn {
            program: String::new(),
            source: std::io::Error::other("empty agent command"),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(inv.cwd)
        .env_clear()
        .envs(
            INHERITED
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
        )
        .envs(&inv.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout stops whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| AgentError::Spawn {
        program: program.clone(),
        source,
    })?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let readers = [
        child.stdout.take().map(|o| forward(o, tail.clone())),
        child.stderr.take().map(|e| forward(e, tail.clone())),
    ];
    if let Some(mut stdin) = child.stdin.take() {
        // An agent that does not read its input must not block the run.
        let prompt = inv.prompt.as_bytes().to_vec();
        tokio::spawn(async move {
            let _ = stdin.write_all(&prompt).await;
        });
    }
    let exit = match tokio::time::timeout(inv.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Exit::Success,
        Ok(Ok(status)) => Exit::Status(status.code()),
        Ok(Err(e)) => return Err(AgentError::Wait(e)),
        Err(_) => {
            if let Some(pid) = child.id() {
                // SAFETY: killpg only sends a signal; the group is the agent's own.
                unsafe {
                    libc::killpg(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            Exit::TimedOut(inv.timeout)
        }
    };
    for reader in readers.into_iter().flatten() {
        // A grandchild may still hold the pipe open: do not wait on it.
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            tracing::warn!("agent output still open after it ended; not waiting for it");
        }
    }
    let tail = tail
        .lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    Ok(AgentRun { exit, tail })
}

/// Copies the stream's lines to our stderr (the container log) and keeps
/// the last [`TAIL_LINES`].
fn forward(
    stream: impl AsyncRead + Unpin + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("agent | {line}");
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_inside_arguments_only() {
        let vars = BTreeMap::from([
            ("model", "gpt-x".to_string()),
            ("reasoning", "$(id)".to_string()),
        ]);
        let argv: Vec<String> = [
            "agent",
            "--model",
            "{model}",
            "effort={reasoning}",
            "{other}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            substitute(&argv, &vars),
            ["agent", "--model", "gpt-x", "effort=$(id)", "{other}"]
        );
    }

    /// Whether process `pid` still runs (a zombie no longer does: nothing
    /// may reap an orphan where PID 1 is not an init).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the command name in parentheses.
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
            })
            .unwrap_or(false)
    }

    /// An agent that went past its timeout is stopped with everything it
    /// started: here a shell whose child (`sleep`, in the same process
    /// group, its output not on our pipes) would outlive it. Catches a
    /// timeout that kills only the direct child (the `libc::killpg` call
    /// removed: `kill_on_drop` and `child.kill()` stop the shell alone).
    #[tokio::test]
    async fn a_slow_agent_and_its_children_are_stopped_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let started = std::time::Instant::now();
        let run = run(Invocation {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "sleep 30 >/dev/null 2>&1 & echo $! > grandchild.pid; wait".into(),
            ],
            cwd: dir.path(),
            env: BTreeMap::new(),
            prompt: "",
            timeout: Duration::from_millis(500),
        })
        .await
        .unwrap();
        assert_eq!(run.exit, Exit::TimedOut(Duration::from_millis(500)));
        assert!(started.elapsed() < Duration::from_secs(10), "not stopped");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("the agent started its child before the timeout")
            .trim()
            .parse()
            .unwrap();
        // SIGKILL is delivered asynchronously: poll (bounded) for it to land.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let survived = alive(pid);
        if survived {
            // Do not leave it behind when the assertion fails.
            // SAFETY: kill only sends a signal to the process we started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        assert!(!survived, "the agent's child {pid} outlived the timeout");
    }

    #[tokio::test]
    async fn the_agent_gets_a_clean_environment_and_the_prompt_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("GITHUB_TOKEN_FILE", "/should/not/leak");
        let run = run(Invocation {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "cat; echo; echo token=${GITHUB_TOKEN_FILE:-none} mine=$MINE; exit 4".into(),
            ],
            cwd: dir.path(),
            env: BTreeMap::from([("MINE".to_string(), "yes".to_string())]),
            prompt: "the prompt",
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap();
        assert_eq!(run.exit, Exit::Status(Some(4)));
        assert!(run.tail.contains("the prompt"), "{}", run.tail);
        assert!(run.tail.contains("token=none mine=yes"), "{}", run.tail);
    }
}

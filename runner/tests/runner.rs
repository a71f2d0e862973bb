//! The runner binary end to end: a real `git http-backend` on loopback that
//! demands the token, GitHub's REST API played with state in its documented
//! shapes, and a stand-in agent (`tests/data/agent/fake-agent.sh`) that edits
//! a file. Each test runs `issueops-runner` as the Job would: only env and
//! files.

#[path = "../../tests/common/fake_repo_api.rs"]
mod fake_repo_api;
#[path = "../../tests/common/git_http.rs"]
mod git_http;

use fake_repo_api::FakeRepoApi;
use git_http::{git, GitHttp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use wiremock::MockServer;

const REPO: &str = "Codertocat/Hello-World";
const TOKEN: &str = "ghs_runnerTESTtoken0000000001";
const TOKEN_TWO: &str = "ghs_runnerTESTtoken0000000002";
const AGENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/agent/fake-agent.sh"
);
const DEV_PROMPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../manifests-templates/prompts/dev.md"
);
const REVISE_PROMPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../manifests-templates/prompts/revise.md"
);

struct World {
    dir: tempfile::TempDir,
    git: GitHttp,
    api: FakeRepoApi,
    server: MockServer,
    bare: PathBuf,
}

struct Outcome {
    code: i32,
    result: Value,
    logs: String,
    workspace: PathBuf,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let git = GitHttp::start(&dir.path().join("git"), TOKEN).await;
        let bare = git.create_repo(REPO, "main", &[("README.md", "# Hello\n")]);
        let server = MockServer::start().await;
        let api = FakeRepoApi::mount(&server, REPO).await;
        api.accept_only(&[TOKEN]);
        std::fs::create_dir_all(dir.path().join("secret")).unwrap();
        std::fs::write(dir.path().join("secret/token"), format!("{TOKEN}\n")).unwrap();
        World {
            dir,
            git,
            api,
            server,
            bare,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `issue` in `mode` as the Job's pod does: the runner once per
    /// step (`clone`, `agent`, `publish`), each with its container's
    /// environment — the agent step without the token file and without the
    /// handoff folder — stopping at the first step that ends the run.
    async fn run(
        &self,
        name: &str,
        issue: u64,
        mode: &str,
        agent: &[&str],
        extra: &[(&str, &str)],
    ) -> Outcome {
        let workspace = self.path(&format!("ws-{name}"));
        let handoff = self.path(&format!("handoff-{name}"));
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::create_dir_all(&handoff).unwrap();
        let mut argv: Vec<String> = vec!["sh".into(), AGENT.into()];
        argv.extend(agent.iter().map(|s| s.to_string()));
        argv.splice(3..3, ["{model}".to_string(), "{reasoning}".to_string()]);
        let prompt = if mode == "dev" {
            DEV_PROMPT
        } else {
            REVISE_PROMPT
        };
        let mut logs = String::new();
        for step in ["clone", "agent", "publish"] {
            let result_file = self.path(&format!("result-{name}-{step}"));
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_issueops-runner"));
            command
                .arg(step)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap())
                .env("ISSUEOPS_REPO", REPO)
                .env("ISSUEOPS_ISSUE", issue.to_string())
                .env("ISSUEOPS_RUN_ID", name)
                .env("ISSUEOPS_MODE", mode)
                .env("ISSUEOPS_BRANCH", format!("issueops/issue-{issue}"))
                .env("ISSUEOPS_GIT_URL", self.git.url(REPO))
                .env("ISSUEOPS_GITHUB_API_URL", self.server.uri())
                .env(
                    "ISSUEOPS_AGENT_COMMAND",
                    serde_json::to_string(&argv).unwrap(),
                )
                .env("ISSUEOPS_AGENT_TIMEOUT_SECONDS", "20")
                .env("ISSUEOPS_MODEL", "gpt-test")
                .env("ISSUEOPS_REASONING", "high")
                .env("ISSUEOPS_PROMPT_TEMPLATE", prompt)
                .env("ISSUEOPS_AGENT_HOME", self.path("agent-home"))
                .env("ISSUEOPS_WORKSPACE", &workspace)
                .env("ISSUEOPS_RESULT_FILE", &result_file);
            if step != "agent" {
                command
                    .env("GITHUB_TOKEN_FILE", self.path("secret/token"))
                    .env("ISSUEOPS_HANDOFF", &handoff);
            }
            let out = command.envs(extra.iter().copied()).output().await.unwrap();
            logs.push_str(&String::from_utf8_lossy(&out.stdout));
            logs.push_str(&String::from_utf8_lossy(&out.stderr));
            let code = out.status.code().unwrap_or(-1);
            let text = std::fs::read_to_string(&result_file).unwrap_or_default();
            if code == 0 && step != "publish" {
                assert!(
                    text.is_empty(),
                    "step {step} handed on but left a result: {text}"
                );
                continue;
            }
            return Outcome {
                code,
                result: serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{step}'s result {text:?}: {e}\n{logs}")),
                logs,
                workspace,
            };
        }
        unreachable!("publish always ends the run")
    }

    fn branch_head(&self, branch: &str) -> Option<String> {
        let out = Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ])
            .current_dir(&self.bare)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn show(&self, rev: &str) -> String {
        git(&self.bare, &["show", "--format=%B%n%P", rev])
    }
}

/// Every file under `dir`, read as bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn dev_opens_a_pull_request_from_a_new_branch_and_revise_updates_it() {
    let w = World::new().await;
    w.api
        .add_issue(5, "Add a changelog", "Please keep a CHANGES.md.");
    w.api.add_comment(5, "octocat", "Mention the run in it.");
    w.api.add_comment(
        5,
        "issueops[bot]",
        "<!-- issueops:subject=d1 -->\n**issueops** status",
    );

    let dev = w.run("run-dev-5", 5, "dev", &["edit"], &[]).await;
    assert_eq!(dev.code, 0, "{}", dev.logs);
    assert_eq!(dev.result["outcome"], "pr-opened", "{}", dev.result);
    assert_eq!(dev.result["resumed_session"], false);
    let head = w
        .branch_head("issueops/issue-5")
        .expect("the branch was pushed");
    assert_eq!(dev.result["head_commit"], head.as_str());
    let commit = w.show(&head);
    assert!(
        commit.starts_with("issueops dev run for #5: Add a changelog"),
        "{commit}"
    );
    assert!(
        commit.contains("Run-Id: run-dev-5") && commit.contains(&format!("Issue: {REPO}#5")),
        "{commit}"
    );
    let changes = git(&w.bare, &["show", &format!("{head}:CHANGES.md")]);
    assert!(
        changes.contains("run run-dev-5 (dev, gpt-test/high): new session"),
        "{changes}"
    );
    // The pull request: from the branch to the default one, closing the issue, in review.
    let pulls = w.api.pulls();
    assert_eq!(pulls.len(), 1);
    let pr = &pulls[0];
    assert_eq!(
        (pr.head.as_str(), pr.base.as_str()),
        ("issueops/issue-5", "main")
    );
    assert!(pr.body.starts_with("Closes #5"), "{}", pr.body);
    assert_eq!(pr.labels, ["state:in-review"]);
    assert_eq!(dev.result["pr_number"], pr.number);
    // The prompt carried the issue and the person's comment, not our status comment.
    let prompt = std::fs::read_to_string(w.path("agent-home/session/last-prompt.md")).unwrap();
    assert!(
        prompt.contains("Please keep a CHANGES.md.") && prompt.contains("Mention the run in it.")
    );
    assert!(!prompt.contains("issueops:subject"), "{prompt}");

    // A reviewer asks for changes; revise pushes to the same branch and PR.
    w.api.review(
        pr.number,
        "reviewer",
        "Say which model ran.",
        "CHANGES.md",
        1,
    );
    let revise = w
        .run(
            "run-revise-5",
            5,
            "revise",
            &["edit"],
            &[("ISSUEOPS_PR", &pr.number.to_string())],
        )
        .await;
    assert_eq!(revise.code, 0, "{}", revise.logs);
    assert_eq!(revise.result["outcome"], "pr-updated", "{}", revise.result);
    assert_eq!(revise.result["pr_number"], pr.number);
    assert_eq!(revise.result["resumed_session"], true);
    assert_eq!(
        w.api.pulls().len(),
        1,
        "revise opens no second pull request"
    );
    let new_head = w.branch_head("issueops/issue-5").unwrap();
    assert_ne!(new_head, head);
    assert!(
        w.show(&new_head).contains(&head),
        "the revise commit follows the dev commit"
    );
    let changes = git(&w.bare, &["show", &format!("{new_head}:CHANGES.md")]);
    assert!(
        changes.contains("run run-revise-5 (revise, gpt-test/high): resumed session run-dev-5"),
        "the agent resumed the dev run's session: {changes}"
    );
    let prompt = std::fs::read_to_string(w.path("agent-home/session/last-prompt.md")).unwrap();
    assert!(
        prompt.contains("Say which model ran.") && prompt.contains("CHANGES.md:1"),
        "{prompt}"
    );

    // The token: used for every call, and nowhere on disk or in the logs.
    assert!(w.git.passwords_seen().iter().all(|p| p == TOKEN));
    assert!(w.api.seen_tokens().iter().all(|t| t == TOKEN));
    for outcome in [&dev, &revise] {
        assert!(!outcome.logs.contains(TOKEN), "token in the logs");
        for (path, bytes) in files_under(&outcome.workspace) {
            assert!(!contains(&bytes, TOKEN), "token in {}", path.display());
        }
        let config = std::fs::read_to_string(outcome.workspace.join("repo/.git/config")).unwrap();
        assert!(config.contains(&w.git.url(REPO)), "{config}");
    }
    for (path, bytes) in files_under(&w.path("agent-home")) {
        assert!(!contains(&bytes, TOKEN), "token in {}", path.display());
    }
    let log = git(&w.bare, &["log", "--all", "-p", "--format=%B"]);
    assert!(!log.contains(TOKEN), "token in a commit");
}

#[tokio::test]
async fn revise_without_an_open_pull_request_fails_and_opens_none() {
    let w = World::new().await;
    w.api.add_issue(6, "t", "b");
    let out = w.run("run-revise-6", 6, "revise", &["edit"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.logs);
    assert_eq!(out.result["outcome"], "failed");
    let reason = out.result["reason"].as_str().unwrap();
    assert!(
        reason.contains("no open pull request from branch issueops/issue-6"),
        "{reason}"
    );
    assert!(w.api.pulls().is_empty());
    assert!(
        w.branch_head("issueops/issue-6").is_none(),
        "nothing pushed"
    );
}

#[tokio::test]
async fn no_change_gives_no_changes_and_no_pull_request() {
    let w = World::new().await;
    w.api.add_issue(7, "Nothing to do", "Already done.");
    let out = w.run("run-dev-7", 7, "dev", &["nothing"], &[]).await;
    assert_eq!(out.code, 3, "{}", out.logs);
    assert_eq!(out.result["outcome"], "no-changes");
    assert!(w.api.pulls().is_empty());
    assert!(
        w.branch_head("issueops/issue-7").is_none(),
        "nothing pushed"
    );
}

/// Catches a revise that changes nothing reporting "no pull request was
/// opened" (the pull request exists, and stays as it was).
#[tokio::test]
async fn a_revise_that_changes_nothing_leaves_its_pull_request_as_it_was() {
    let w = World::new().await;
    w.api.add_issue(9, "Tidy", "Tidy up.");
    let dev = w.run("run-dev-9", 9, "dev", &["edit"], &[]).await;
    assert_eq!(dev.result["outcome"], "pr-opened", "{}", dev.result);
    let head = w.branch_head("issueops/issue-9");
    let revise = w.run("run-revise-9", 9, "revise", &["nothing"], &[]).await;
    assert_eq!(revise.code, 3, "{}", revise.logs);
    assert_eq!(revise.result["outcome"], "no-changes");
    let number = dev.result["pr_number"].as_u64().unwrap();
    assert_eq!(revise.result["pr_number"].as_u64(), Some(number));
    assert_eq!(
        revise.result["reason"].as_str(),
        Some(
            format!("the agent changed nothing; pull request #{number} was left as it was")
                .as_str()
        )
    );
    assert_eq!(w.branch_head("issueops/issue-9"), head, "nothing pushed");
    assert_eq!(w.api.pulls().len(), 1);
}

#[tokio::test]
async fn an_agent_failure_gives_failed_with_its_log_tail() {
    let w = World::new().await;
    w.api.add_issue(8, "t", "b");
    let out = w.run("run-dev-8", 8, "dev", &["fail"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.logs);
    assert_eq!(out.result["outcome"], "failed");
    assert_eq!(out.result["reason"], "the agent exited with status 7");
    let tail = out.result["log_tail"].as_str().unwrap();
    assert!(
        tail.contains("something broke") && tail.contains("reading the repository"),
        "{tail}"
    );
    assert!(
        out.logs.contains("agent | agent: something broke"),
        "the agent's output reaches the log"
    );
    assert!(w.api.pulls().is_empty());

    let slow = w
        .run(
            "run-dev-8b",
            8,
            "dev",
            &["sleep"],
            &[("ISSUEOPS_AGENT_TIMEOUT_SECONDS", "1")],
        )
        .await;
    assert_eq!(slow.code, 1);
    assert!(slow.result["reason"]
        .as_str()
        .unwrap()
        .contains("did not finish within 1 s"));
}

#[tokio::test]
async fn hostile_issue_text_is_data_never_a_command() {
    let w = World::new().await;
    let canary = w.path("pwned");
    let c = canary.display();
    let title = format!("$(touch {c}) `touch {c}`; touch {c} \"quoted\" 'single' {{{{ 7*7 }}}}");
    let mut body =
        format!("line one\n$(touch {c})\n`touch {c}`\n; touch {c};\n\"\\\"'\n{{% raw %}}\n");
    body.push_str(&"x".repeat(100 * 1024));
    body.push_str("\nTHE END");
    w.api.add_issue(9, &title, &body);
    let out = w.run("run-dev-9", 9, "dev", &["edit"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.logs);
    assert!(!canary.exists(), "issue text was executed");
    let prompt = std::fs::read_to_string(w.path("agent-home/session/last-prompt.md")).unwrap();
    assert!(
        prompt.contains(&title),
        "the title reached the prompt verbatim"
    );
    assert!(
        prompt.contains(&body),
        "the body reached the prompt verbatim"
    );
    let head = w.branch_head("issueops/issue-9").unwrap();
    let message = w.show(&head);
    assert!(
        message.lines().next().unwrap().contains("$(touch"),
        "{message}"
    );
    assert!(
        message.contains("Run-Id: run-dev-9"),
        "trailers survive a hostile title: {message}"
    );
}

#[tokio::test]
async fn a_refreshed_token_is_used_for_the_next_call() {
    let w = World::new().await;
    w.api.add_issue(10, "t", "b");
    let gate = w.path("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let gate_arg = gate.display().to_string();
    let world = std::sync::Arc::new(w);
    let runner = {
        let world = world.clone();
        let gate_arg = gate_arg.clone();
        tokio::spawn(async move {
            world
                .run("run-dev-10", 10, "dev", &["edit", &gate_arg], &[])
                .await
        })
    };
    // While the agent works, the reconciler replaces the token and the old one stops working.
    let started = gate.join("started");
    for _ in 0..400 {
        if started.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(started.exists(), "the agent never started");
    std::fs::write(world.path("secret/token"), TOKEN_TWO).unwrap();
    world.git.set_token(TOKEN_TWO);
    world.api.accept_only(&[TOKEN_TWO]);
    std::fs::write(gate.join("go"), "").unwrap();
    let out = runner.await.unwrap();
    assert_eq!(out.code, 0, "{}", out.logs);
    assert_eq!(out.result["outcome"], "pr-opened");
    assert_eq!(
        world.git.passwords_seen().last().map(String::as_str),
        Some(TOKEN_TWO)
    );
    assert_eq!(
        world.api.seen_tokens().last().map(String::as_str),
        Some(TOKEN_TWO)
    );
}

#[test]
fn a_wrong_step_or_environment_exits_2_with_a_result_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_issueops-runner"))
            .args(args)
            .env_clear()
            .env("ISSUEOPS_RESULT_FILE", &result)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
        assert_eq!(v["outcome"], "failed");
        v["reason"].as_str().unwrap().to_string()
    };
    let reason = run(&["clone"]);
    assert!(reason.contains("ISSUEOPS_REPO"), "{reason}");
    let reason = run(&[]);
    assert!(reason.contains("clone, agent, publish"), "{reason}");
    let reason = run(&["push"]);
    assert!(reason.contains("\"push\""), "{reason}");
}

/// The agent turns everything it can write against the push (the clone's
/// `pushurl`, `insteadOf` and `pushInsteadOf` to a decoy repository, a
/// credential helper, a pre-push hook, and a `~/.gitconfig` in the runner's
/// `$HOME`): the push still goes to the run's remote and branch only, with
/// the token, and the decoy receives nothing.
#[tokio::test]
async fn a_hostile_agent_cannot_redirect_the_push() {
    let w = World::new().await;
    let decoy_bare = w
        .git
        .create_repo("mallory/decoy", "main", &[("README.md", "decoy\n")]);
    let decoy = w.git.url("mallory/decoy");
    w.api.add_issue(20, "A change", "Please change something.");
    let home = w.path("ws-run-hostile-20");
    let out = w
        .run(
            "run-hostile-20",
            20,
            "dev",
            &["hostile", &decoy],
            &[("HOME", home.to_str().unwrap())],
        )
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.result, out.logs);
    assert_eq!(out.result["outcome"], "pr-opened", "{}", out.result);
    let pushed = w
        .branch_head("issueops/issue-20")
        .expect("pushed to the run's remote and branch");
    assert!(w.show(&pushed).contains("Run-Id: run-hostile-20"));
    let decoy_branches = git(&decoy_bare, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(
        decoy_branches.trim(),
        "refs/heads/main",
        "the decoy got a push"
    );
    assert!(
        !out.workspace.join("repo/hook-ran").exists(),
        "the agent's hook ran"
    );
    assert!(
        !out.logs.contains("from-the-agent"),
        "the agent's credential helper was asked"
    );
}

/// A change that adds a symbolic link out of the repository (to the token's
/// path) or more bytes than `ISSUEOPS_MAX_PUSH_BYTES` is not pushed at all,
/// and the run's result says what was refused.
#[tokio::test]
async fn a_link_out_of_the_repository_or_a_change_too_large_is_not_pushed() {
    let w = World::new().await;
    let decoy = w.git.url("mallory/none");
    w.api.add_issue(21, "t", "b");
    let token_path = w.path("secret/token");
    let linked = w
        .run(
            "run-link-21",
            21,
            "dev",
            &["hostile", &decoy, "link", token_path.to_str().unwrap()],
            &[],
        )
        .await;
    assert_eq!(linked.code, 1, "{}", linked.logs);
    assert_eq!(linked.result["outcome"], "failed");
    let reason = linked.result["reason"].as_str().unwrap();
    assert!(
        reason.contains("symbolic link token-link") && reason.contains("outside the repository"),
        "{reason}"
    );
    assert!(
        w.branch_head("issueops/issue-21").is_none(),
        "pushed anyway"
    );
    assert!(w.api.pulls().is_empty());

    w.api.add_issue(22, "t", "b");
    let huge = w
        .run(
            "run-huge-22",
            22,
            "dev",
            &["hostile", &decoy, "huge", "300000"],
            &[("ISSUEOPS_MAX_PUSH_BYTES", "100000")],
        )
        .await;
    assert_eq!(huge.code, 1, "{}", huge.logs);
    let reason = huge.result["reason"].as_str().unwrap();
    assert!(
        reason.contains("more than agent.max_push_bytes (100000)"),
        "{reason}"
    );
    assert!(
        w.branch_head("issueops/issue-22").is_none(),
        "pushed anyway"
    );

    // Both at once: the result names both.
    w.api.add_issue(23, "t", "b");
    let both = w
        .run(
            "run-both-23",
            23,
            "dev",
            &["hostile-refused"],
            &[("ISSUEOPS_MAX_PUSH_BYTES", "1048576")],
        )
        .await;
    assert_eq!(both.code, 1, "{}", both.logs);
    let reason = both.result["reason"].as_str().unwrap();
    assert!(
        reason.contains("symbolic link token-link -> /var/run/secrets/issueops/github/token")
            && reason.contains("more than agent.max_push_bytes (1048576)"),
        "{reason}"
    );
    assert!(
        w.branch_head("issueops/issue-23").is_none(),
        "pushed anyway"
    );
}

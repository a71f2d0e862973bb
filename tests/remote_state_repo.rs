//! The state repo as a remote served by a real `git daemon` on loopback: the
//! control plane fetches, commits and pushes; the reconciler reads the remote;
//! a push rejected because someone else moved the branch is redone on the new
//! tip, without losing or duplicating the intent.

mod common;

use common::{labeled, Db, Harness};
use issueops_core::state_repo::StateRepo;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `git daemon` serving one bare repo with pushes enabled; killed on drop.
struct GitDaemon {
    child: Child,
    url: String,
}

impl GitDaemon {
    fn start(base: &Path, repo: &str) -> Self {
        let status = Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(base.join(repo))
            .status()
            .unwrap();
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Run git-daemon itself, not through the `git` wrapper, so killing the
        // child really stops the server.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = String::from_utf8(exec_path.stdout).unwrap();
        let mut child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .arg("--verbose")
            .arg("--export-all")
            .arg("--enable=receive-pack")
            .arg(format!("--base-path={}", base.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git daemon must be installed (it ships with git)");
        // The daemon says so once it listens.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("Ready to rumble") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "git daemon exited before listening"
            );
        }
        std::thread::spawn(move || for _ in stderr.lines() {});
        Self {
            child,
            url: format!("git://127.0.0.1:{port}/{repo}"),
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A server-side hook that, once armed, plays a concurrent writer: it moves
/// `main` by one commit of its own and refuses the push in flight.
const RACE_HOOK: &str = r#"#!/bin/sh
marker="$PWD/race-once"
[ -f "$marker" ] || exit 0
rm -f "$marker"
unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
tip=$(git rev-parse refs/heads/main)
blob=$(echo "written by someone else" | git hash-object -w --stdin)
tree=$( (git ls-tree "$tip"; printf '100644 blob %s\tOUTSIDE.md\n' "$blob") | git mktree)
c=$(GIT_AUTHOR_NAME=other GIT_AUTHOR_EMAIL=o@example.org GIT_COMMITTER_NAME=other GIT_COMMITTER_EMAIL=o@example.org git commit-tree "$tree" -p "$tip" -m outside)
git update-ref refs/heads/main "$c" "$tip"
echo "simulated concurrent writer moved main" >&2
exit 1
"#;

#[tokio::test]
async fn runs_are_pushed_to_the_remote_and_a_rejected_push_is_redone_once() {
    let served = tempfile::tempdir().unwrap();
    let daemon = GitDaemon::start(served.path(), "state.git");
    let bare = served.path().join("state.git");
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(&hook, RACE_HOOK).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::remote(&daemon.url, &dir.path().join("cache.git"), "main", None).unwrap();
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let h = Harness::start_with(Db::Sqlite, dir, repo, client).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");

    // First run: pushed to an empty remote.
    h.post_signed("issues", "remote-a", &body).await;
    h.control_plane.process_pending().await.unwrap();
    let first = h.store.list_runs().await.unwrap()[0]
        .commit_sha
        .clone()
        .unwrap();
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"]), first);
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.applied.len(), 10, "{report:?}");

    // The first run finishes (one run per issue at a time).
    let ns = issueops_core::naming::namespace_for_issue(common::REPO, 1);
    let first_run = issueops_core::naming::run_id_for_delivery("remote-a");
    common::set_job_status(&h.client, &ns, &first_run, "succeeded").await;
    issueops_reconciler::observe::observe_jobs(
        &h.client,
        &h.store,
        issueops_core::DEFAULT_INSTANCE,
    )
    .await
    .unwrap();

    // Second run: the first push is refused while someone else moves main.
    std::fs::write(bare.join("race-once"), "").unwrap();
    h.post_signed("issues", "remote-b", &body).await;
    h.control_plane.process_pending().await.unwrap();
    assert!(!bare.join("race-once").exists(), "the hook must have fired");

    let log = git(&bare, &["log", "--format=%s", "main"]);
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert_eq!(
        subjects[1], "outside",
        "our commit sits on top of the concurrent one"
    );
    let run_b = issueops_core::naming::run_id_for_delivery("remote-b");
    assert_eq!(
        git(
            &bare,
            &[
                "log",
                "--format=%H",
                &format!("--grep=Run-Id: {run_b}"),
                "main"
            ]
        )
        .lines()
        .count(),
        1
    );
    let tree = git(&bare, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        tree.contains("OUTSIDE.md"),
        "the other writer's file is kept"
    );
    assert!(tree.contains(&format!("runs/{run_b}/job.yaml")));

    // The reconciler reads the remote and applies only the new run's objects.
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.applied.len(), 2, "{report:?}");
    assert!(report.applied[1].ends_with(&format!("run-{run_b}")));
    h.finish().await;
}

/// A proposal pushed by one replica (its own cache) is merged by another:
/// the proposal branch is on the remote, and the merge pushed to `main` has
/// the proposal as its second parent. Catches: a merge that reads the
/// proposal only from the local cache.
#[tokio::test]
async fn a_proposal_made_by_one_replica_is_merged_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = GitDaemon::start(dir.path(), "state.git");
    let one = StateRepo::remote(&daemon.url, &dir.path().join("one"), "main", None).unwrap();
    let two = StateRepo::remote(&daemon.url, &dir.path().join("two"), "main", None).unwrap();
    let write = |path: &str| issueops_core::state_repo::CommitRequest {
        subject: format!("write {path}"),
        body: String::new(),
        trailers: vec![],
        changes: vec![issueops_core::state_repo::Change::Write {
            path: path.into(),
            content: b"x\n".to_vec(),
        }],
    };
    one.commit(&write("base.yaml")).unwrap().unwrap();
    let proposal = one.propose("r1", &write("issues/a/run.yaml")).unwrap();
    let remote = dir.path().join("state.git");
    assert_eq!(
        git(&remote, &["rev-parse", "refs/heads/proposals/r1"]),
        proposal
    );
    let merge = two
        .merge_proposal("r1", &write("ignored"))
        .unwrap()
        .unwrap();
    assert_eq!(git(&remote, &["rev-parse", "refs/heads/main"]), merge);
    let parents = git(&remote, &["rev-list", "--parents", "-n1", &merge]);
    assert_eq!(
        parents.split(' ').nth(2),
        Some(proposal.as_str()),
        "{parents}"
    );
    let files = git(&remote, &["ls-tree", "-r", "--name-only", &merge]);
    assert_eq!(files, "base.yaml\nissues/a/run.yaml");
}

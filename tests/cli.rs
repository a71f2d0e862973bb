//! The real `issueops` binary, as a new user runs it.

mod common;

use common::{labeled, PgDatabase, SECRET};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn issueops() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_issueops"));
    for var in [
        "ISSUEOPS_WEBHOOK_SECRET",
        "ISSUEOPS_DATABASE_URL",
        "ISSUEOPS_STATE_REPO",
        "ISSUEOPS_REPOS",
        "ISSUEOPS_CONFIG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn render_prints_every_manifest_as_multi_document_yaml() {
    let payload = common::data_dir().join("github/issues/labeled.payload.json");
    let out = issueops()
        .arg("render")
        .arg(&payload)
        .args(["--label", "run:dev"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            v["kind"].as_str().unwrap().to_string()
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "ConfigMap",
            "Job",
            "LimitRange",
            "Namespace",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "ResourceQuota",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    // Deterministic: the same input gives the same bytes.
    let again = issueops()
        .arg("render")
        .arg(&payload)
        .args(["--label", "run:dev"])
        .output()
        .unwrap();
    assert_eq!(again.stdout, text.as_bytes());
}

#[test]
fn render_of_a_non_trigger_says_what_to_do() {
    let payload = common::data_dir().join("github/issues/labeled.payload.json");
    let out = issueops().arg("render").arg(&payload).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a trigger") && err.contains("--label run:dev"),
        "{err}"
    );
}

#[test]
fn gateway_refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = issueops()
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ISSUEOPS_WEBHOOK_SECRET"), "{err}");
}

/// Start-up as a new user meets it: an unreachable PostgreSQL is named at
/// once (not "pool timed out" after 30 s), a bad config file is said before
/// anything is created, a missing file's cause is printed once, and stderr
/// carries no colour codes when it is not a terminal. Catches: the pool's
/// silent retries, migrating before reading the config, `{:#}` repeating a
/// cause, and ANSI codes in piped logs.
#[test]
fn start_up_errors_say_what_is_wrong_once_and_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |data: &str, extra: &[&str]| {
        let mut cmd = issueops();
        cmd.env("ISSUEOPS_WEBHOOK_SECRET", "s")
            .arg("--data-dir")
            .arg(dir.path().join(data))
            .args(extra)
            .args(["serve", "--listen", "127.0.0.1:0", "--cluster", "in-memory"]);
        // A guard, not a measurement: a start-up that hangs is killed.
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    };
    let (status, err) = serve("pg", &["--database-url", "postgres://x@127.0.0.1:1/db"]);
    assert!(
        status.is_some_and(|s| !s.success()),
        "serve kept waiting: {err}"
    );
    assert!(
        err.contains("cannot connect to database postgres://x@127.0.0.1:1/db")
            && err.contains("Connection refused")
            && !err.contains("pool timed out"),
        "{err}"
    );
    // As in a pod: told to wait, it says why and when it tries again, then
    // gives up with the cause.
    let (status, err) = serve(
        "pg-wait",
        &[
            "--database-url",
            "postgres://x@127.0.0.1:1/db",
            "--database-wait-seconds",
            "2",
        ],
    );
    assert!(status.is_some_and(|s| !s.success()), "{err}");
    assert!(
        err.contains("database unreachable; trying again in 1s")
            && err.matches("Connection refused").count() >= 2,
        "{err}"
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "job:\n  imagee: x\n").unwrap();
    let (status, err) = serve("cfg", &["--config", bad.to_str().unwrap()]);
    assert!(status.is_some_and(|s| !s.success()), "{err}");
    assert!(err.contains("imagee"), "{err}");
    assert!(
        !dir.path().join("cfg").exists(),
        "the data dir (and its database) was made before the config was read"
    );
    let (_, err) = serve("missing", &["--config", "/nonexistent/issueops.yaml"]);
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    // A command that logs, its stderr a pipe: plain text.
    let data = dir.path().join("logs");
    let run = |args: &[&str]| {
        issueops()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    let out = run(&["reconcile", "--cluster", "in-memory"]);
    let logged = String::from_utf8_lossy(&out.stderr);
    assert!(
        logged.contains("INFO") && logged.contains("backend ready"),
        "{logged}"
    );
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a pipe: {logged:?}"
    );
}

#[test]
fn a_config_file_with_a_typo_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("issueops.yaml");
    std::fs::write(&config, "job:\n  imagee: x\n").unwrap();
    let payload = common::data_dir().join("github/issues/labeled.payload.json");
    let out = issueops()
        .arg("--config")
        .arg(&config)
        .arg("render")
        .arg(&payload)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("imagee") && err.contains("issueops.yaml"),
        "{err}"
    );
}

#[test]
fn demo_walks_the_whole_path() {
    let out = issueops()
        .args(["demo", "--cluster", "in-memory"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "POST → 202",
        "Delivery-Id: demo-",
        "Action: start-run",
        "applied Namespace/",
        "applied Job/",
        "redelivery → 200",
        "forged     → 401",
        "runs: 1, commits in the state repo: 1",
        "converged",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("FAILED"), "{text}");
}

#[tokio::test]
async fn migrate_and_runs_work_against_postgres() {
    let pg = PgDatabase::create().await;
    let out = issueops()
        .arg("migrate")
        .env("ISSUEOPS_DATABASE_URL", &pg.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = issueops()
        .arg("runs")
        .env("ISSUEOPS_DATABASE_URL", &pg.url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no runs yet");
    pg.drop_db().await;
}

/// `issueops serve` as the README starts it: a signed delivery over HTTP
/// becomes a committed, applied run. Synchronises on the process's own log
/// lines, never on time.
#[tokio::test]
async fn serve_turns_a_signed_delivery_into_an_applied_run() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = issueops()
        .arg("serve")
        .args([
            "--cluster",
            "in-memory",
            "--repo",
            "Codertocat/Hello-World",
            "--log-format",
            "json",
            "--no-ui",
        ])
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("ISSUEOPS_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("serve never logged {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    wait_for("gateway listening");
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhooks/github"))
        .header("X-GitHub-Event", "issues")
        .header("X-GitHub-Delivery", "serve-1")
        .header(
            "X-Hub-Signature-256",
            issueops_gateway::sign(SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let done = wait_for("cycle done");
    let v: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(v["applied"], 10, "{done}");
    assert_eq!(v["failed"], 0, "{done}");
    // The operations endpoint: health, readiness and the metrics of this run.
    let ops = format!("http://127.0.0.1:{metrics_port}");
    for path in ["/healthz", "/readyz"] {
        let resp = reqwest::get(format!("{ops}{path}")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let metrics = reqwest::get(format!("{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "issueops_deliveries_total{outcome=\"stored\"} 1",
        "issueops_deliveries_total{outcome=\"handled\"} 1",
        "issueops_decisions_total{outcome=\"run\"} 1",
        "issueops_step_duration_seconds_count{step=\"commit\"} 1",
        "issueops_step_duration_seconds_count{step=\"apply\"} 10",
        "issueops_step_duration_seconds_count{step=\"reconcile\"}",
        "issueops_runs{state=\"applied\"} 1",
        "issueops_leader{role=\"control-plane\"} 1",
        "issueops_leader{role=\"reconciler\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
    // SIGTERM (what Kubernetes sends) drains and stops cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    wait_for("SIGTERM: draining");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let out = issueops()
        .arg("runs")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let runs = String::from_utf8_lossy(&out.stdout);
    assert!(
        runs.contains("Codertocat/Hello-World#1") && runs.contains("applied"),
        "{runs}"
    );
}

/// `plan` shows the next cycle without touching anything; `rollback` writes a
/// commit restoring an older tree and records who asked.
#[tokio::test]
async fn plan_and_rollback_from_the_command_line() {
    let h = common::Harness::start(common::Db::Sqlite).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    h.post_signed("issues", "cli-plan", &body).await;
    h.control_plane.process_pending().await.unwrap();
    let data_dir = h.dir.path().to_path_buf();

    let plan_now = || {
        issueops()
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["plan", "--cluster", "in-memory"])
            .output()
            .unwrap()
    };
    let out = plan_now();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        plan.lines().filter(|l| l.starts_with("apply")).count(),
        10,
        "{plan}"
    );
    assert!(
        plan.lines().nth(2).unwrap().contains("Namespace/"),
        "cluster-scoped first:\n{plan}"
    );
    assert!(plan.starts_with("cluster: an in-process"), "{plan}");
    assert_eq!(
        h.store.last_applied_commit("default").await.unwrap(),
        None,
        "plan changes nothing"
    );

    // `reconcile` in one process applies to the stand-in saved in the data
    // dir; `plan` in another sees that cluster, so an emptied state repo
    // plans deletes (it used to compare against an empty stand-in).
    let out = issueops()
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["reconcile", "--cluster", "in-memory"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("applied 10,"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let first = h.repo.log().unwrap()[0].clone();
    h.repo
        .commit(&issueops_core::state_repo::CommitRequest {
            subject: "someone deletes everything".into(),
            body: String::new(),
            trailers: vec![],
            changes: vec![issueops_core::state_repo::Change::Remove {
                path: "issues".into(),
            }],
        })
        .unwrap();
    let plan = String::from_utf8_lossy(&plan_now().stdout).to_string();
    assert_eq!(
        plan.lines().filter(|l| l.starts_with("delete")).count(),
        10,
        "{plan}"
    );
    assert_eq!(
        plan.lines().filter(|l| l.starts_with("apply")).count(),
        0,
        "{plan}"
    );
    let out = issueops()
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["rollback", &first[..10], "--actor", "alice"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = h.repo.log().unwrap()[0].clone();
    let info = h.repo.commit_info(&head).unwrap();
    assert!(
        info.trailers.contains(&("Actor".into(), "alice".into())),
        "{info:?}"
    );
    assert_eq!(
        h.repo.files_at(&head).unwrap(),
        h.repo.files_at(&first).unwrap()
    );
    let out = issueops()
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["rollback", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the state repo"));
    h.finish().await;
}

//! The label flow around a run, through the real gateway: one run label per
//! issue, the model and reasoning labels, the debug hold, a review asking for
//! changes starting a revise run, and `issueops labels sync` against a fake
//! GitHub in its documented shapes.

mod common;

use common::{fixture, set_job_status, test_config, Db, Harness, REPO};
use issueops_core::naming;
use issueops_core::state_repo::issue_dir;
use issueops_reconciler::observe::observe_jobs;
use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// GitHub's `issues.labeled` example for `issue`, `label` just added and the
/// issue carrying `on_issue`.
fn labeled(action: &str, label: &str, issue: u64, on_issue: &[&str]) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("issues/labeled.payload.json")).unwrap();
    v["action"] = action.into();
    v["label"]["name"] = label.into();
    v["issue"]["number"] = issue.into();
    v["issue"]["labels"] = on_issue
        .iter()
        .map(|n| json!({ "name": n, "color": "ededed", "default": false }))
        .collect();
    serde_json::to_vec(&v).unwrap()
}

async fn deliver(h: &Harness, event: &str, delivery: &str, body: &[u8]) {
    let (status, text) = h.post_signed(event, delivery, body).await;
    assert_eq!(status, 202, "{text}");
    h.control_plane.process_pending().await.unwrap();
}

async fn comment(h: &Harness, delivery: &str) -> String {
    h.store
        .report_bodies()
        .await
        .unwrap()
        .get(delivery)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_second_run_label_on_the_issue_is_refused_with_a_comment_and_no_run() {
    let h = Harness::start(Db::Sqlite).await;
    let body = labeled(
        "labeled",
        "run:dev:revise",
        1,
        &["run:dev", "run:dev:revise"],
    );
    deliver(&h, "issues", "two-labels", &body).await;
    assert!(h.store.list_runs().await.unwrap().is_empty(), "no run");
    let said = comment(&h, "two-labels").await;
    assert!(
        said.contains("only one run label may be on an issue at a time")
            && said.contains("run:dev and run:dev:revise"),
        "{said}"
    );
    assert!(h
        .audit()
        .await
        .iter()
        .any(|r| r.kind == "decision" && r.outcome == "refused"));
    h.finish().await;
}

#[tokio::test]
async fn model_labels_choose_the_agent_and_conflicting_ones_are_refused() {
    let h = Harness::start(Db::Sqlite).await;
    let two_models = [
        "run:dev",
        "ai-model:gpt-5.1-codex",
        "ai-model:gpt-5.1-codex-mini",
    ];
    deliver(
        &h,
        "issues",
        "two-models",
        &labeled("labeled", "run:dev", 1, &two_models),
    )
    .await;
    assert!(h.store.list_runs().await.unwrap().is_empty());
    assert!(comment(&h, "two-models").await.contains("2 model labels"));

    let chosen = [
        "run:dev",
        "ai-model:gpt-5.1-codex-mini",
        "ai-reasoning:high",
    ];
    deliver(
        &h,
        "issues",
        "chosen",
        &labeled("labeled", "run:dev", 2, &chosen),
    )
    .await;
    let run = naming::run_id_for_delivery("chosen");
    let ns = naming::namespace_for_issue(REPO, 2);
    let head = h.repo.head().unwrap().unwrap();
    let files = h.repo.files_at(&head).unwrap();
    let job = files
        .get(&format!("{}/runs/{run}/job.yaml", issue_dir(&ns)))
        .expect("the run's Job is committed");
    let job: serde_yaml::Value = serde_yaml::from_slice(job).unwrap();
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .clone();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        value("ISSUEOPS_MODEL").as_deref(),
        Some("gpt-5.1-codex-mini")
    );
    assert_eq!(value("ISSUEOPS_REASONING").as_deref(), Some("high"));
    h.finish().await;
}

/// GitHub's `pull_request_review.submitted` shape: the `pull_request` object
/// of GitHub's own `pull_request` example, from a run's branch, plus a review.
fn review(issue: u64, state: &str, reviewer: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("pull_request/opened.payload.json")).unwrap();
    v["action"] = "submitted".into();
    v["pull_request"]["head"]["ref"] = naming::branch_for_issue(issue).into();
    v["sender"]["login"] = reviewer.into();
    v["review"] = json!({
        "id": 80, "user": { "login": reviewer }, "body": "Please rename the helper.",
        "state": state, "submitted_at": "2026-11-26T08:00:00Z",
    });
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn a_review_asking_for_changes_starts_a_revise_run_when_the_config_allows() {
    let mut config = test_config();
    config.labels.revise_on_changes_requested = true;
    let h = Harness::start_configured(Db::Sqlite, config).await;
    deliver(
        &h,
        "issues",
        "dev-1",
        &labeled("labeled", "run:dev", 1, &["run:dev"]),
    )
    .await;
    let dev = naming::run_id_for_delivery("dev-1");
    h.reconciler.reconcile_once().await.unwrap();
    let ns = naming::namespace_for_issue(REPO, 1);
    set_job_status(&h.client, &ns, &dev, "succeeded").await;
    observe_jobs(&h.client, &h.store, "default").await.unwrap();

    deliver(
        &h,
        "pull_request_review",
        "review-approved",
        &review(1, "approved", "octocat"),
    )
    .await;
    assert_eq!(
        h.store.list_runs().await.unwrap().len(),
        1,
        "an approval starts nothing"
    );
    deliver(
        &h,
        "pull_request_review",
        "review-changes",
        &review(1, "changes_requested", "octocat"),
    )
    .await;
    let revise = h
        .store
        .get_run(&naming::run_id_for_delivery("review-changes"))
        .await
        .unwrap()
        .expect("a revise run");
    assert_eq!(
        (
            revise.mode.as_str(),
            revise.branch.as_str(),
            revise.actor.as_str()
        ),
        ("revise", "issueops/issue-1", "octocat")
    );
    h.finish().await;
}

#[tokio::test]
async fn the_debug_label_keeps_the_namespace_until_removed_or_its_time_is_up() {
    let mut config = test_config();
    config.lifecycle.run_retention_seconds = 0;
    config.lifecycle.issue_idle_seconds = 0;
    config.labels.debug_max_seconds = 3600;
    let h = Harness::start_configured(Db::Sqlite, config).await;
    let on_issue = ["run:dev", "run:debug"];
    deliver(
        &h,
        "issues",
        "debug-1",
        &labeled("labeled", "run:dev", 1, &on_issue),
    )
    .await;
    let run = naming::run_id_for_delivery("debug-1");
    h.reconciler.reconcile_once().await.unwrap();
    let ns = naming::namespace_for_issue(REPO, 1);
    set_job_status(&h.client, &ns, &run, "succeeded").await;
    observe_jobs(&h.client, &h.store, "default").await.unwrap();

    let now = issueops_core::now_ms();
    assert!(
        h.control_plane.prune_due(now + 1).await.unwrap().is_empty(),
        "held"
    );
    assert!(h.audit().await.iter().any(|r| r.outcome == "debug-hold"));
    // Past its bound the hold lapses by itself, and the issue is pruned.
    let later = now + 3_601_000;
    assert!(!h.control_plane.prune_due(later).await.unwrap().is_empty());
    let released = h
        .audit()
        .await
        .into_iter()
        .find(|r| r.outcome == "debug-released")
        .expect("the lapse is audited");
    assert!(
        released.detail.contains("debug_max_seconds"),
        "{}",
        released.detail
    );

    // Another issue: removing the label releases it at once.
    deliver(
        &h,
        "issues",
        "debug-2",
        &labeled("labeled", "run:dev", 2, &on_issue),
    )
    .await;
    let run2 = naming::run_id_for_delivery("debug-2");
    h.reconciler.reconcile_once().await.unwrap();
    let ns2 = naming::namespace_for_issue(REPO, 2);
    set_job_status(&h.client, &ns2, &run2, "succeeded").await;
    observe_jobs(&h.client, &h.store, "default").await.unwrap();
    assert!(h
        .control_plane
        .prune_due(issueops_core::now_ms() + 1)
        .await
        .unwrap()
        .is_empty());
    deliver(
        &h,
        "issues",
        "undebug-2",
        &labeled("unlabeled", "run:debug", 2, &["run:dev"]),
    )
    .await;
    assert!(!h
        .control_plane
        .prune_due(issueops_core::now_ms() + 1)
        .await
        .unwrap()
        .is_empty());
    h.finish().await;
}

#[tokio::test]
async fn labels_sync_creates_missing_labels_and_updates_changed_ones() {
    let server = MockServer::start().await;
    let catalogue = issueops_control_plane::labels::catalogue(&test_config());
    let in_review = catalogue
        .iter()
        .find(|l| l.name == "state:in-review")
        .unwrap()
        .clone();
    // run:dev is missing, state:in-review is as wanted, the rest differ.
    Mock::given(method("GET"))
        .and(path_regex(r"^/repos/Codertocat/Hello-World/labels/.+$"))
        .respond_with(move |req: &Request| {
            let name = req
                .url
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            match name.as_str() {
                "run%3Adev" => {
                    ResponseTemplate::new(404).set_body_json(json!({ "message": "Not Found" }))
                }
                "state%3Ain-review" => ResponseTemplate::new(200).set_body_json(json!({
                    "id": 1, "name": in_review.name, "color": in_review.color,
                    "description": in_review.description, "default": false
                })),
                _ => ResponseTemplate::new(200).set_body_json(json!({
                    "id": 2, "name": name, "color": "000000", "description": "old", "default": false
                })),
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/repos/Codertocat/Hello-World/labels$"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "id": 3, "name": "run:dev" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex(r"^/repos/Codertocat/Hello-World/labels/.+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": 2 })))
        .expect(catalogue.len() as u64 - 2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "repos: [{REPO}]\ngithub:\n  api_url: {}\n  max_attempts: 1\n",
            server.uri()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_issueops"))
        .args(["labels", "sync"])
        .env("ISSUEOPS_CONFIG", &config)
        .env("ISSUEOPS_DATA_DIR", dir.path())
        .env("ISSUEOPS_GITHUB_TOKEN", "ghp_labelsSYNCtest")
        .env_remove("ISSUEOPS_GITHUB_APP_ID")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("created  run:dev"), "{stdout}");
    assert!(stdout.contains("unchanged  state:in-review"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains("  updated  ")).count(),
        catalogue.len() - 2
    );
    // Without GitHub it says what to set, and calls nothing.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_issueops"))
        .args(["labels", "sync"])
        .env("ISSUEOPS_CONFIG", &config)
        .env("ISSUEOPS_DATA_DIR", dir.path())
        .env_remove("ISSUEOPS_GITHUB_TOKEN")
        .env_remove("ISSUEOPS_GITHUB_APP_ID")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GitHub is not configured"));
}

//! Reporting back on the issue: one status comment per run, edited in place,
//! against a local fake GitHub (wiremock) with GitHub's documented shapes.

mod common;

use common::{labeled, set_job_status, test_config, Db, Harness, REPO};
use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::naming;
use issueops_github::{Credentials, GitHub};
use issueops_reconciler::observe::observe_jobs;
use serde_json::json;
use std::sync::Arc;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const COMMENTS: &str = "/repos/Codertocat/Hello-World/issues/1/comments";

async fn fake_github(existing_comments: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(
            "/repos/Codertocat/Hello-World/collaborators/Codertocat/permission",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "permission": "admin", "role_name": "admin" })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(200).set_body_json(existing_comments))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 555, "html_url": "https://github.com/Codertocat/Hello-World/issues/1#issuecomment-555",
            "body": "…", "user": { "login": "issueops[bot]" }
        })))
        .mount(&server)
        .await;
    for id in [555, 777] {
        Mock::given(method("PATCH"))
            .and(path(format!(
                "/repos/Codertocat/Hello-World/issues/comments/{id}"
            )))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({ "id": id, "body": "…" })),
            )
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(query_param("head", "Codertocat:issueops/issue-1"))
        .and(query_param("state", "open"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{
            "number": 2, "html_url": "https://github.com/Codertocat/Hello-World/pull/2",
            "head": { "ref": "issueops/issue-1" }, "state": "open"
        }])))
        .mount(&server)
        .await;
    server
}

fn github(server: &MockServer) -> Arc<GitHub> {
    common::github_client(server.uri(), Credentials::Token("ghp_reporting".into()), 3)
}

async fn harness(server: &MockServer, config: issueops_core::Config) -> Harness {
    let mut h = Harness::start_configured(Db::Sqlite, config.clone()).await;
    h.control_plane = ControlPlane::new(
        h.store.clone(),
        h.repo.clone(),
        Arc::new(config),
        Templates::embedded(),
    )
    .with_github(github(server));
    h
}

async fn requests(server: &MockServer, verb: &str) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == verb && r.url.path().contains("comments"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[tokio::test]
async fn one_comment_per_run_edited_through_its_states_despite_redeliveries() {
    let server = fake_github(json!([])).await;
    let mut config = test_config();
    config.lifecycle.run_retention_seconds = 0;
    config.lifecycle.issue_idle_seconds = 0;
    config.github.commit_url = Some("https://github.com/org/state/commit/{sha}".into());
    let h = harness(&server, config).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    for _ in 0..3 {
        h.post_signed("issues", "report-1", &body).await;
        h.control_plane.process_pending().await.unwrap();
        h.control_plane.report_pass().await.unwrap();
    }
    assert_eq!(requests(&server, "POST").await.len(), 1);
    assert!(
        requests(&server, "PATCH").await.is_empty(),
        "nothing changed, nothing edited"
    );

    let run = naming::run_id_for_delivery("report-1");
    let ns = naming::namespace_for_issue(REPO, 1);
    h.reconciler.reconcile_once().await.unwrap();
    h.control_plane.report_pass().await.unwrap();
    for phase in ["running", "succeeded"] {
        set_job_status(&h.client, &ns, &run, phase).await;
        observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
            .await
            .unwrap();
        h.control_plane.report_pass().await.unwrap();
        h.control_plane.report_pass().await.unwrap();
    }
    h.control_plane
        .prune_due(issueops_core::now_ms() + 1)
        .await
        .unwrap();
    h.control_plane.report_pass().await.unwrap();

    let posts = requests(&server, "POST").await;
    let edits = requests(&server, "PATCH").await;
    assert_eq!(posts.len(), 1, "never two comments for one run");
    assert_eq!(
        edits.len(),
        4,
        "applied, running, succeeded, pruned: {edits:#?}"
    );
    assert!(posts[0].contains("was accepted") && posts[0].contains("issueops:subject=report-1"));
    assert!(
        posts[0].contains("https://github.com/org/state/commit/"),
        "links the commit: {}",
        posts[0]
    );
    assert!(edits[1].contains("is running"));
    assert!(
        edits[2].contains("succeeded: https://github.com/Codertocat/Hello-World/pull/2"),
        "{}",
        edits[2]
    );
    assert!(edits[3].contains("pruned"));
    let pull_lookups = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path().ends_with("/pulls"))
        .count();
    assert_eq!(
        pull_lookups, 1,
        "the pull request is looked up once, not every pass"
    );
    h.finish().await;
}

/// A run the in-process stand-in only simulated is reported on the real
/// issue as simulated, never as "succeeded", no pull request is looked for,
/// and its trigger label stays on the issue (the work was not done).
#[tokio::test]
async fn a_simulated_run_says_so_on_github_and_keeps_its_label() {
    let server = fake_github(json!([])).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    let mut config = test_config();
    config.labels.remove_trigger_when_done = true;
    let h = harness(&server, config).await;
    h.post_signed(
        "issues",
        "simulated-1",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    let run = naming::run_id_for_delivery("simulated-1");
    let ns = naming::namespace_for_issue(REPO, 1);
    set_job_status(&h.client, &ns, &run, "simulated").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    h.control_plane.report_pass().await.unwrap();
    assert_eq!(h.control_plane.remove_trigger_labels().await.unwrap(), 0);

    let said = [
        requests(&server, "POST").await,
        requests(&server, "PATCH").await,
    ]
    .concat();
    let last = said.last().expect("a comment was posted");
    assert!(last.contains("was only simulated"), "{last}");
    assert!(!last.contains("succeeded"), "{last}");
    let calls = server.received_requests().await.unwrap();
    assert!(
        !calls.iter().any(|r| r.method.as_str() == "DELETE"),
        "the trigger label stays"
    );
    assert!(
        !calls.iter().any(|r| r.url.path().ends_with("/pulls")),
        "no pull request is looked for"
    );
    let kept = h
        .store
        .last_audit(issueops_core::audit::kind::LABELS, "trigger-kept")
        .await
        .unwrap()
        .expect("the kept label is audited");
    assert_eq!(kept.run_id.as_deref(), Some(run.as_str()));
    h.finish().await;
}

/// A comment GitHub rate-limits (403 with `retry-after: 3600`) is not waited
/// for an hour nor dropped: the pass fails naming the wait, the report stays
/// unposted, server errors on the next pass are retried three times, and the
/// pass after that posts it once. Catches a 403 rate limit taken for a plain
/// refusal (`status == 403 && (…)` in `github/src/retry.rs`'s `verdict` made
/// `false && (…)`), which "any error" let through.
#[tokio::test]
async fn a_rate_limited_report_is_delayed_not_lost() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "3600")
                .set_body_json(json!({ "message": "You have exceeded a secondary rate limit" })),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(3)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/repos/Codertocat/Hello-World/collaborators/Codertocat/permission",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "permission": "write" })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(COMMENTS))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": 555 })))
        .with_priority(3)
        .mount(&server)
        .await;
    let h = harness(&server, test_config()).await;
    h.post_signed(
        "issues",
        "limited-1",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    let posts = || async { requests(&server, "POST").await.len() };
    let unposted = || async { h.store.unposted_reports(10).await.unwrap().len() };
    // Asked to wait an hour: the pass gives up on it at once, for later,
    // with the wait named; the report stays to be posted.
    let limited = h.control_plane.report_pass().await.unwrap_err().to_string();
    assert!(
        limited.contains("asked to wait 3600s") && limited.contains("will try again later"),
        "{limited}"
    );
    assert_eq!((posts().await, unposted().await), (1, 1), "{limited}");
    // Server errors are retried within the pass, then left for the next.
    let exhausted = h.control_plane.report_pass().await.unwrap_err().to_string();
    assert!(
        exhausted.contains("gave up after 3 attempts") && exhausted.contains("502"),
        "{exhausted}"
    );
    assert_eq!((posts().await, unposted().await), (4, 1), "{exhausted}");
    assert_eq!(
        h.control_plane.report_pass().await.unwrap(),
        1,
        "then it is posted"
    );
    assert_eq!(unposted().await, 0);
    assert_eq!(
        h.control_plane.report_pass().await.unwrap(),
        0,
        "and only once"
    );
    let created = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(created, 5, "1 rate-limited + 3 server errors + 1 created");
    h.finish().await;
}

#[tokio::test]
async fn a_comment_left_by_a_crash_is_found_and_edited_not_duplicated() {
    let server = fake_github(json!([
        { "id": 12, "body": "an unrelated comment", "user": { "login": "someone" } },
        { "id": 777, "body": "<!-- issueops:subject=crash-report -->\n**issueops** dev run was accepted", "user": { "login": "issueops[bot]" } }
    ]))
    .await;
    let h = harness(&server, test_config()).await;
    h.post_signed(
        "issues",
        "crash-report",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    assert_eq!(h.control_plane.report_pass().await.unwrap(), 1);
    assert!(requests(&server, "POST").await.is_empty());
    let patched: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(
        patched,
        ["/repos/Codertocat/Hello-World/issues/comments/777"]
    );
    h.finish().await;
}

#[tokio::test]
async fn without_github_nothing_is_called_and_reports_wait_in_the_outbox() {
    let h = Harness::start(Db::Sqlite).await;
    h.post_signed(
        "issues",
        "offline-1",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    assert_eq!(h.control_plane.report_pass().await.unwrap(), 0);
    assert_eq!(h.store.unposted_reports(10).await.unwrap().len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn revise_continues_the_open_pull_request_or_says_why_not() {
    use k8s_openapi::api::batch::v1::Job;
    let server = fake_github(json!([])).await;
    let h = harness(&server, test_config()).await;
    let ns = naming::namespace_for_issue(REPO, 1);
    let first = naming::run_id_for_delivery("rev-a");
    h.post_signed(
        "issues",
        "rev-a",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    set_job_status(&h.client, &ns, &first, "succeeded").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();

    h.post_signed(
        "issues",
        "rev-b",
        &labeled("issues/labeled.payload.json", "run:dev:revise"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    let revise = naming::run_id_for_delivery("rev-b");
    assert_eq!(
        h.store
            .get_run(&revise)
            .await
            .unwrap()
            .unwrap()
            .pull_request,
        Some(2)
    );
    h.reconciler.reconcile_once().await.unwrap();
    let job = kube::Api::<Job>::namespaced(h.client.clone(), &ns)
        .get(&format!("run-{revise}"))
        .await
        .unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let pr = env
        .iter()
        .find(|e| e.name == "ISSUEOPS_PR")
        .and_then(|e| e.value.clone());
    assert_eq!(pr.as_deref(), Some("2"));
    h.finish().await;

    // No open pull request from the branch: refused, and the issue is told why.
    let empty = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(
            "/repos/Codertocat/Hello-World/collaborators/Codertocat/permission",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "permission": "admin" })))
        .mount(&empty)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&empty)
        .await;
    let h = harness(&empty, test_config()).await;
    h.post_signed(
        "issues",
        "rev-c",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    set_job_status(
        &h.client,
        &ns,
        &naming::run_id_for_delivery("rev-c"),
        "succeeded",
    )
    .await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    h.post_signed(
        "issues",
        "rev-d",
        &labeled("issues/labeled.payload.json", "run:dev:revise"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    assert!(h
        .store
        .get_run(&naming::run_id_for_delivery("rev-d"))
        .await
        .unwrap()
        .is_none());
    let notice = h
        .store
        .unposted_reports(10)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.subject == "rev-d")
        .unwrap();
    assert!(
        notice
            .body
            .contains("no open pull request from branch `issueops/issue-1`"),
        "{}",
        notice.body
    );
    h.finish().await;
}

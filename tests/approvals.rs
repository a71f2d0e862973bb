//! Who may trigger, and approvals, against a local fake GitHub (wiremock)
//! answering the collaborator permission API as GitHub documents it.

mod common;

use common::{labeled, test_config, Db, Harness, REPO};
use issueops_control_plane::ControlPlaneError;
use issueops_core::naming;
use issueops_github::Credentials;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The fixture's sender is `Codertocat`.
const SENDER: &str = "Codertocat";

async fn fake_github(permissions: &[(&str, &str)]) -> MockServer {
    let server = MockServer::start().await;
    for (login, permission) in permissions {
        Mock::given(method("GET"))
            .and(path(format!(
                "/repos/{REPO}/collaborators/{login}/permission"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "permission": permission, "role_name": permission,
                "user": { "login": login, "id": 1, "type": "User" }
            })))
            .mount(&server)
            .await;
    }
    server
}

async fn harness(server: &MockServer, config: issueops_core::Config) -> Harness {
    let mut h = Harness::start_configured(Db::Sqlite, config.clone()).await;
    h.use_github(
        common::github_client(server.uri(), Credentials::Token("ghp_fake".into()), 4),
        config,
    );
    h
}

async fn trigger(h: &Harness, delivery: &str) {
    let body = labeled("issues/labeled.payload.json", "run:dev");
    assert_eq!(h.post_signed("issues", delivery, &body).await.0, 202);
    h.control_plane.process_pending().await.unwrap();
}

fn approver_config() -> issueops_core::Config {
    let mut c = test_config();
    c.github.approvers = vec!["maintainer".into()];
    c
}

fn refused(result: Result<String, ControlPlaneError>) -> String {
    match result {
        Err(ControlPlaneError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_writer_runs_at_once_and_the_permission_is_audited() {
    let server = fake_github(&[(SENDER, "write")]).await;
    let h = harness(&server, test_config()).await;
    trigger(&h, "perm-w").await;
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    let decisions: Vec<_> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == "decision")
        .collect();
    assert_eq!(decisions[0].outcome, "authorized");
    assert!(
        decisions[0].detail.contains("permission write"),
        "{}",
        decisions[0].detail
    );
    assert_eq!(decisions[1].outcome, "accepted");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn a_read_only_trigger_waits_for_approval_then_runs() {
    let server = fake_github(&[(SENDER, "read")]).await;
    let h = harness(&server, approver_config()).await;
    trigger(&h, "perm-r").await;
    assert!(
        h.store.list_runs().await.unwrap().is_empty(),
        "no run until approved"
    );
    assert!(h.repo.log().unwrap().is_empty());
    let requests = h.store.list_approvals().await.unwrap();
    assert_eq!(requests.len(), 1);
    let id = requests[0].id.clone();
    let pending = h
        .audit()
        .await
        .into_iter()
        .find(|r| r.kind == "decision")
        .unwrap();
    assert_eq!(pending.outcome, "pending-approval");
    assert!(
        pending.detail.contains("\"permission\":\"read\""),
        "{}",
        pending.detail
    );

    // Not an approver, unknown id: clear refusals, nothing changes.
    assert!(refused(
        h.control_plane
            .decide_request(&id, "random", true, "pls")
            .await
    )
    .contains("may not decide"));
    assert!(refused(
        h.control_plane
            .decide_request("a-nope", "maintainer", true, "x")
            .await
    )
    .contains("no approval request"));

    let outcome = h
        .control_plane
        .decide_request(&id, "maintainer", true, "looks fine")
        .await
        .unwrap();
    assert!(outcome.contains("approved"), "{outcome}");
    let runs = h.store.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, naming::run_id_for_delivery("perm-r"));
    assert_eq!(h.repo.log().unwrap().len(), 1);
    let approval = h
        .audit()
        .await
        .into_iter()
        .find(|r| r.kind == "approval")
        .unwrap();
    assert_eq!(
        (approval.outcome.as_str(), approval.actor.as_deref()),
        ("approved", Some("maintainer"))
    );
    assert!(approval.detail.contains("looks fine"));

    // Approving twice is refused.
    assert!(refused(
        h.control_plane
            .decide_request(&id, "maintainer", true, "again")
            .await
    )
    .contains("already approved"));
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn denied_and_expired_requests_never_run() {
    let server = fake_github(&[(SENDER, "none")]).await;
    let mut config = approver_config();
    config.github.approval_ttl_seconds = 3600;
    let h = harness(&server, config).await;
    trigger(&h, "deny-1").await;
    trigger(&h, "expire-1").await;
    let ids: Vec<String> = h
        .store
        .list_approvals()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids.len(), 2);
    let denied = h
        .control_plane
        .decide_request(&ids[0], "maintainer", false, "not now")
        .await
        .unwrap();
    assert!(denied.contains("denied"));
    assert_eq!(
        h.control_plane
            .expire_approvals(issueops_core::now_ms() + 3601 * 1000)
            .await
            .unwrap(),
        1
    );
    let expired_id = h
        .store
        .list_approvals()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.state == "expired")
        .unwrap()
        .id;
    assert!(refused(
        h.control_plane
            .decide_request(&expired_id, "maintainer", true, "late")
            .await
    )
    .contains("already expired"));
    assert!(h.store.list_runs().await.unwrap().is_empty());
    let outcomes: Vec<String> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == "approval")
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, ["denied", "expired"]);
    h.finish().await;
}

#[tokio::test]
async fn an_approver_approves_by_adding_the_approval_label() {
    let server = fake_github(&[
        (SENDER, "read"),
        ("maintainer", "read"),
        ("someone", "write"),
    ])
    .await;
    let h = harness(&server, approver_config()).await;
    trigger(&h, "label-1").await;
    // The approval label from someone who is not an approver does nothing.
    let mut v: serde_json::Value =
        serde_json::from_slice(&labeled("issues/labeled.payload.json", "run:approved")).unwrap();
    v["sender"]["login"] = "someone".into();
    h.post_signed("issues", "label-2", &serde_json::to_vec(&v).unwrap())
        .await;
    h.control_plane.process_pending().await.unwrap();
    assert!(h.store.list_runs().await.unwrap().is_empty());
    v["sender"]["login"] = "maintainer".into();
    h.post_signed("issues", "label-3", &serde_json::to_vec(&v).unwrap())
        .await;
    h.control_plane.process_pending().await.unwrap();
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    let outcomes: Vec<String> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == "approval")
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, ["refused", "approved"]);
    h.finish().await;
}

#[tokio::test]
async fn allowlisted_senders_run_without_asking_github() {
    let server = fake_github(&[]).await;
    let mut config = test_config();
    config.github.trigger_allowlist = vec!["codertocat".into()];
    let h = harness(&server, config).await;
    trigger(&h, "allow-1").await;
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    assert!(server.received_requests().await.unwrap().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn a_github_outage_delays_the_trigger_but_never_loses_it() {
    let server = MockServer::start().await;
    let permission_path = format!("/repos/{REPO}/collaborators/{SENDER}/permission");
    Mock::given(method("GET"))
        .and(path(permission_path.clone()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(4)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(permission_path))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "permission": "admin", "role_name": "admin" })),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let h = harness(&server, test_config()).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    h.post_signed("issues", "outage-1", &body).await;
    // The outage is the delivery's own trouble: it waits for a retry, and
    // the pass goes on (nothing else is held up).
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 0);
    let pending = h.store.pending_deliveries(10).await.unwrap();
    assert_eq!(pending.len(), 1, "the delivery stays in the inbox");
    let (waiting, _) = h.store.deliveries_page(true, 0).await.unwrap();
    assert_eq!(waiting[0].attempts, 1);
    assert!(
        waiting[0].last_error.as_deref().unwrap().contains("503"),
        "{waiting:?}"
    );
    assert!(h.store.list_runs().await.unwrap().is_empty());
    assert_eq!(
        h.control_plane.process_pending().await.unwrap(),
        0,
        "not retried before its backoff ran out"
    );
    // Its retry is due (the backoff elapsed) and GitHub is back: it runs, once.
    sqlx::query("UPDATE inbox SET next_attempt_at = 0")
        .execute(h.store.pool())
        .await
        .unwrap();
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 1);
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    h.finish().await;
}

/// `issueops approvals`, `approve` and `deny` as an approver runs them.
#[tokio::test]
async fn approvals_are_decided_from_the_command_line() {
    let server = fake_github(&[(SENDER, "read")]).await;
    let h = harness(&server, approver_config()).await;
    trigger(&h, "cli-approval").await;
    let id = h.store.list_approvals().await.unwrap()[0].id.clone();
    let config = h.dir.path().join("issueops.yaml");
    std::fs::write(
        &config,
        "repos: [Codertocat/Hello-World]\ngithub:\n  approvers: [maintainer]\n",
    )
    .unwrap();
    let issueops = |args: &[&str]| {
        let config = config.to_str().unwrap();
        common::run_issueops(h.dir.path(), &[&["--config", config], args].concat())
    };
    let (ok, list, _) = issueops(&["approvals"]);
    assert!(
        ok && list.contains(&id) && list.contains("pending"),
        "{list}"
    );
    let (ok, _, err) = issueops(&["approve", &id, "--reason", "fine", "--actor", "intruder"]);
    assert!(!ok && err.contains("may not decide"), "{err}");
    let (ok, out, err) = issueops(&[
        "approve",
        &id,
        "--reason",
        "reviewed the issue",
        "--actor",
        "maintainer",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("approved"), "{out}");
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    let (ok, _, err) = issueops(&[
        "deny",
        &id,
        "--reason",
        "changed my mind",
        "--actor",
        "maintainer",
    ]);
    assert!(!ok && err.contains("already approved"), "{err}");
    h.finish().await;
}

//! A `run:dev` label added while the gateway was down becomes a run after the
//! next catch-up sync, exactly once. Fake GitHub answers with documented shapes.

mod common;

use common::{labeled, test_config, Db, Harness};
use issueops_github::Credentials;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn fake_github() -> MockServer {
    let server = MockServer::start().await;
    let issue = |n: u64, title: &str| {
        json!({ "number": n, "title": title, "state": "open", "labels": [{ "name": "run:dev" }],
                "user": { "login": "Codertocat" } })
    };
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/issues"))
        .and(query_param("labels", "run:dev"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            issue(1, "Spelling error in the README file"),
            issue(2, "Missed while the gateway was down"),
            // Pull requests show up in the issues list too; they are skipped.
            { "number": 3, "title": "a PR", "state": "open", "pull_request": { "url": "…" } },
        ])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/issues"))
        .and(query_param("labels", "run:dev:revise"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/issues/2/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            { "id": 1, "event": "labeled", "label": { "name": "bug" }, "actor": { "login": "someone" } },
            { "id": 2, "event": "labeled", "label": { "name": "run:dev" }, "actor": { "login": "octo-maintainer" } },
        ])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/repos/Codertocat/Hello-World/collaborators/octo-maintainer/permission",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "permission": "write", "role_name": "write" })),
        )
        .mount(&server)
        .await;
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
    server
}

#[tokio::test]
async fn a_trigger_missed_while_down_runs_after_the_next_sync_exactly_once() {
    let server = fake_github().await;
    let mut h = Harness::start_configured(Db::Sqlite, test_config()).await;
    h.use_github(
        common::github_client(server.uri(), Credentials::Token("ghp_catchup".into()), 3),
        test_config(),
    );

    // Issue 1's label arrived as a webhook; issue 2's never did.
    h.post_signed(
        "issues",
        "webhook-1",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);

    assert_eq!(
        h.control_plane.catch_up().await.unwrap(),
        1,
        "only issue 2 was missed"
    );
    h.control_plane.process_pending().await.unwrap();
    let runs = h.store.list_runs().await.unwrap();
    assert_eq!(runs.len(), 2);
    let caught = runs.iter().find(|r| r.issue_number == 2).unwrap();
    assert_eq!(
        caught.actor, "octo-maintainer",
        "the labeler, permission-checked like any trigger"
    );
    let row = h
        .audit()
        .await
        .into_iter()
        .find(|r| r.outcome == "caught-up")
        .unwrap();
    assert!(row.detail.contains("catch-up sync"));

    // Later syncs find nothing new.
    assert_eq!(h.control_plane.catch_up().await.unwrap(), 0);
    assert_eq!(h.control_plane.catch_up().await.unwrap(), 0);
    h.control_plane.process_pending().await.unwrap();
    assert_eq!(h.store.list_runs().await.unwrap().len(), 2);
    h.finish().await;
}

//! The GitHub client against a local fake GitHub (wiremock) answering with
//! GitHub's documented shapes; assertions are on the requests GitHub received.

use issueops_github::{Credentials, GitHub, GitHubError, Settings};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PERMISSION: &str = "/repos/octo/hello/collaborators/alice/permission";

fn settings(server: &MockServer, credentials: Credentials) -> Settings {
    Settings {
        api_url: server.uri(),
        credentials,
        max_attempts: 4,
        max_wait: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
    }
}

fn token_client(server: &MockServer) -> GitHub {
    GitHub::new(settings(
        server,
        Credentials::Token("ghp_test_token".into()),
    ))
    .unwrap()
}

/// GitHub's documented answer of "Get repository permissions for a user".
fn permission_body(permission: &str, role: &str) -> serde_json::Value {
    json!({ "permission": permission, "role_name": role, "user": { "login": "alice", "id": 1, "type": "User" } })
}

#[tokio::test]
async fn reads_a_permission_with_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .and(header("authorization", "Bearer ghp_test_token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(permission_body("write", "maintain")),
        )
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        token_client(&server)
            .permission("octo/hello", "alice")
            .await
            .unwrap(),
        "write"
    );
}

#[tokio::test]
async fn an_unknown_user_has_no_permission() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "message": "Not Found" })))
        .mount(&server)
        .await;
    assert_eq!(
        token_client(&server)
            .permission("octo/hello", "alice")
            .await
            .unwrap(),
        "none"
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_delay_but_do_not_lose_the_call() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .set_body_json(json!({ "message": "You have exceeded a secondary rate limit" })),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(
            ResponseTemplate::new(502).set_body_json(json!({ "message": "Server Error" })),
        )
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(ResponseTemplate::new(200).set_body_json(permission_body("admin", "admin")))
        .with_priority(3)
        .mount(&server)
        .await;
    assert_eq!(
        token_client(&server)
            .permission("octo/hello", "alice")
            .await
            .unwrap(),
        "admin"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_wait_longer_than_allowed_is_an_error_not_a_stall() {
    let server = MockServer::start().await;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .set_body_json(json!({ "message": "API rate limit exceeded" })),
        )
        .mount(&server)
        .await;
    let err = token_client(&server)
        .permission("octo/hello", "alice")
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::WaitTooLong { .. }), "{err}");
    assert!(!err.to_string().contains("ghp_test_token"));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_the_configured_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut s = settings(&server, Credentials::Token("t".into()));
    s.max_attempts = 2;
    let err = GitHub::new(s)
        .unwrap()
        .permission("octo/hello", "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitHubError::Exhausted { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

fn rsa_key() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "PEM",
        ])
        .output()
        .expect("openssl makes the test App key");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn an_app_acts_through_the_repos_installation_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/hello/installation"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "id": 42, "app_id": 7, "account": { "login": "octo" } })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "token": "ghs_installation_token", "expires_at": "2099-01-01T00:00:00Z",
            "permissions": { "issues": "write" }, "repository_selection": "all"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .and(header("authorization", "Bearer ghs_installation_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(permission_body("read", "read")))
        .expect(2)
        .mount(&server)
        .await;
    let github = GitHub::new(settings(
        &server,
        Credentials::App {
            app_id: 7,
            private_key_pem: rsa_key(),
        },
    ))
    .unwrap();
    assert_eq!(
        github.permission("octo/hello", "alice").await.unwrap(),
        "read"
    );
    // The installation and its token are cached: no second lookup or mint.
    assert_eq!(
        github.permission("octo/hello", "alice").await.unwrap(),
        "read"
    );
    let requests = server.received_requests().await.unwrap();
    let installation = requests
        .iter()
        .find(|r| r.url.path() == "/repos/octo/hello/installation")
        .unwrap();
    let auth = installation
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        auth.starts_with("Bearer ey"),
        "the App authenticates with a JWT: {auth}"
    );
}

#[tokio::test]
async fn a_timed_out_call_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(permission_body("write", "write"))
                .set_delay(Duration::from_secs(3)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PERMISSION))
        .respond_with(ResponseTemplate::new(200).set_body_json(permission_body("admin", "admin")))
        .with_priority(2)
        .mount(&server)
        .await;
    let mut s = settings(&server, Credentials::Token("t".into()));
    s.timeout = Duration::from_millis(300);
    let github = GitHub::new(s).unwrap();
    assert_eq!(
        github.permission("octo/hello", "alice").await.unwrap(),
        "admin",
        "the slow answer was abandoned"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

//! `issueops github-app create` end to end against a local fake GitHub in
//! the documented shapes of the App manifest flow: the page posts the
//! manifest (issueops' permissions and events) to GitHub's "new App" form
//! for the organization, GitHub's redirect with a forged state is refused,
//! the real one's code is exchanged, the credentials land as files of mode
//! 0600 (and as the Secrets deploy/ reads), and `serve` starts with them and
//! accepts a delivery signed with the App's webhook secret.

mod common;

use common::labeled;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of a child's stream, as they come.
fn lines(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("never printed {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

#[tokio::test]
async fn github_app_create_runs_the_manifest_flow_and_serve_starts_with_its_files() {
    let pem = common::rsa_key();
    let github = MockServer::start().await;
    // GitHub's documented answer to POST /app-manifests/{code}/conversions.
    Mock::given(method("POST"))
        .and(path("/app-manifests/c0de123/conversions"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "id": 4242, "slug": "issueops-acme", "node_id": "MDM6QXBwNDI0Mg==",
            "owner": { "login": "acme", "id": 1, "type": "Organization" },
            "name": "issueops-acme", "description": "issueops", "external_url": "http://127.0.0.1",
            "html_url": "https://github.com/apps/issueops-acme",
            "created_at": "2026-11-30T12:00:00Z", "updated_at": "2026-11-30T12:00:00Z",
            "permissions": { "issues": "write", "metadata": "read" }, "events": ["issues"],
            "client_id": "Iv1.8a61f9b3a7aba766", "client_secret": "1726be1638095a19edd134c77bde3aa2ece1e5d8",
            "webhook_secret": "e340154128314309424b7c8e90325147d99fdafa", "pem": pem,
        })))
        .expect(1)
        .mount(&github)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_issueops"))
        .args([
            "github-app",
            "create",
            "--org",
            "acme",
            "--name",
            "issueops-acme",
        ])
        .args(["--webhook-url", "https://hooks.example.com/webhooks/github"])
        .args(["--web-url", "https://github.example"])
        .arg("--api-url")
        .arg(github.uri())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--out")
        .arg(dir.path().join("app"))
        .arg("--kubernetes-secret")
        .arg(dir.path().join("secrets.yaml"))
        .env_remove("ISSUEOPS_UI_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let open = wait_line(&out, "/github-app/start");
    let start = open
        .split_whitespace()
        .find(|w| w.ends_with("/github-app/start"))
        .unwrap()
        .to_string();
    assert_eq!(start, format!("http://127.0.0.1:{port}/github-app/start"));

    let http = reqwest::Client::new();
    let page = http.get(&start).send().await.unwrap().text().await.unwrap();
    let action = unescape(
        page.split("action=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap(),
    );
    let (form, state) = action.split_once("?state=").unwrap();
    assert_eq!(
        form,
        "https://github.example/organizations/acme/settings/apps/new"
    );
    let manifest: serde_json::Value = serde_json::from_str(&unescape(
        page.split("name=manifest value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap(),
    ))
    .unwrap();
    for (name, level, _) in issueops_github::app_manifest::PERMISSIONS {
        assert_eq!(manifest["default_permissions"][name], *level, "{manifest}");
    }
    assert_eq!(
        manifest["default_events"],
        serde_json::json!(["issues", "pull_request_review"])
    );
    assert_eq!(
        manifest["hook_attributes"]["url"],
        "https://hooks.example.com/webhooks/github"
    );
    assert_eq!(
        manifest["redirect_url"],
        format!("http://127.0.0.1:{port}/github-app/created")
    );
    assert_eq!(manifest["public"], false);

    let created = format!("http://127.0.0.1:{port}/github-app/created");
    let forged = http
        .get(format!(
            "{created}?code=c0de123&state=0123456789abcdef0123456789abcdef"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 400, "a forged state is refused");
    assert!(!dir.path().join("app").exists(), "nothing written for it");
    let back = http
        .get(format!("{created}?code=c0de123&state={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status().as_u16(), 200);
    wait_line(&out, "installations/new");
    assert!(child.wait().unwrap().success());

    let app = dir.path().join("app");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&app).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for file in [
        "app-id",
        "private-key.pem",
        "webhook-secret",
        "oauth-client-secret",
        "github-app.env",
    ] {
        let mode = std::fs::metadata(app.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    assert_eq!(
        std::fs::read_to_string(app.join("private-key.pem")).unwrap(),
        pem
    );
    let secrets = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = secrets
        .split("---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let keys = |name: &str| -> Vec<String> {
        let doc = docs.iter().find(|d| d["metadata"]["name"] == name).unwrap();
        assert_eq!(doc["metadata"]["namespace"], "issueops-system");
        doc["stringData"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys("issueops-github-app"), ["app-id", "private-key.pem"]);
    assert_eq!(keys("issueops-webhook"), ["secrets"]);
    assert_eq!(keys("issueops-ui-oauth"), ["client-secret"]);
    // A second run never overwrites them.
    let again = Command::new(env!("CARGO_BIN_EXE_issueops"))
        .args([
            "github-app",
            "create",
            "--webhook-url",
            "https://x/webhooks/github",
            "--out",
        ])
        .arg(&app)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds an App's credentials"));

    // serve, with nothing but the env file's variables for GitHub.
    let env: Vec<(String, String)> = std::fs::read_to_string(app.join("github-app.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env[0], ("ISSUEOPS_GITHUB_APP_ID".into(), "4242".into()));
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "repos: [Codertocat/Hello-World]\ngithub:\n  api_url: {}\n",
            github.uri()
        ),
    )
    .unwrap();
    let gateway = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_issueops"))
        .args([
            "serve",
            "--cluster",
            "in-memory",
            "--no-ui",
            "--log-format",
            "json",
        ])
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{gateway}"))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .envs(env)
        .env_remove("ISSUEOPS_WEBHOOK_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = lines(serve.stderr.take().unwrap());
    let started = wait_line(&log, "GitHub");
    assert!(started.contains("as GitHub App 4242"), "{started}");
    wait_line(&log, "gateway listening");
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let signed = |secret: &str| issueops_gateway::sign(secret.as_bytes(), &body);
    let send = |signature: String| {
        http.post(format!("http://127.0.0.1:{gateway}/webhooks/github"))
            .header("X-GitHub-Event", "issues")
            .header("X-GitHub-Delivery", "app-1")
            .header("X-Hub-Signature-256", signature)
            .body(body.clone())
            .send()
    };
    assert_eq!(
        send(signed("not-the-secret"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        send(signed("e340154128314309424b7c8e90325147d99fdafa"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        202,
        "the App's webhook secret, from its file"
    );
    serve.kill().unwrap();
    let _ = serve.wait();
}

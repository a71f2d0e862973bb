//! Test harness: the real gateway on a real loopback socket, a real SQLite
//! file or a fresh real PostgreSQL database, a real git state repo, and the
//! cluster side on kube-fake-client.
#![allow(dead_code)]

pub mod browser;
pub mod fake_repo_api;
pub mod git_http;
pub mod scripted_model;
pub mod staff_ui_http;

use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::state_repo::StateRepo;
use issueops_core::{AuditRow, Config, Store};
use issueops_gateway::{sign, AppState, Secrets};
use issueops_reconciler::Reconciler;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const SECRET: &str = "test-webhook-secret";
pub const REPO: &str = "Codertocat/Hello-World";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A fixture from `tests/data/github/` (GitHub's own example payloads).
pub fn fixture(rel: &str) -> String {
    let path = data_dir().join("github").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// GitHub's `issues.labeled` example with its label renamed.
pub fn labeled(fixture_name: &str, label: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(&fixture(fixture_name)).unwrap();
    v["label"]["name"] = label.into();
    serde_json::to_vec(&v).unwrap()
}

/// A fresh, empty PostgreSQL database; dropped by [`PgDatabase::drop_db`].
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

pub fn postgres_base() -> String {
    std::env::var("ISSUEOPS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://issueops_test:issueops_test@127.0.0.1:5432".into())
}

impl PgDatabase {
    pub async fn create() -> Self {
        let base = postgres_base();
        let admin_url = format!("{base}/postgres");
        let name = format!("issueops_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let admin = Store::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must be running for these tests (.ci/run starts it): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(admin.pool())
            .await
            .unwrap();
        admin.pool().close().await;
        Self {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    pub async fn drop_db(&self) {
        let admin = Store::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(admin.pool())
        .await
        .unwrap();
    }
}

pub async fn store_for(db: Db, dir: &Path) -> (Store, Option<PgDatabase>) {
    match db {
        Db::Sqlite => {
            let store = Store::connect(&format!("sqlite://{}", dir.join("issueops.db").display()))
                .await
                .unwrap();
            store.migrate().await.unwrap();
            (store, None)
        }
        Db::Postgres => {
            let pg = PgDatabase::create().await;
            let store = Store::connect(&pg.url).await.unwrap();
            store.migrate().await.unwrap();
            (store, Some(pg))
        }
    }
}

/// The config the tests run with unless they say otherwise.
pub fn test_config() -> Config {
    Config {
        repos: vec![REPO.into()],
        ..Config::default()
    }
}

/// Everything wired as `issueops serve` wires it, with the background loops
/// replaced by explicit steps so tests decide when each component runs.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub repo: StateRepo,
    pub client: kube::Client,
    pub control_plane: ControlPlane,
    pub reconciler: Reconciler,
    pub url: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    pub pg: Option<PgDatabase>,
    /// The gateway's group-commit writers (their counts).
    pub inbox: issueops_gateway::group_commit::GroupCommit,
}

impl Harness {
    pub async fn start(db: Db) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
        Self::start_with(
            db,
            dir,
            repo,
            kube_fake_client::ClientBuilder::new()
                .build()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn start_with(
        db: Db,
        dir: tempfile::TempDir,
        repo: StateRepo,
        client: kube::Client,
    ) -> Self {
        Self::start_full(db, dir, repo, client, test_config()).await
    }

    /// With a config of the test's choosing (and a fresh local state repo and cluster).
    pub async fn start_configured(db: Db, config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        Self::start_full(db, dir, repo, client, config).await
    }

    pub async fn start_full(
        db: Db,
        dir: tempfile::TempDir,
        repo: StateRepo,
        client: kube::Client,
        config: Config,
    ) -> Self {
        let (store, pg) = store_for(db, dir.path()).await;
        let safety = issueops_reconciler::PruneSafety::from_config(&config.lifecycle);
        let config_for_reconciler = config.clone();
        let config = Arc::new(config);
        let app = AppState::new(
            store.clone(),
            Secrets::new(vec![
                b"previous-secret".to_vec(),
                SECRET.as_bytes().to_vec(),
            ])
            .unwrap(),
            Arc::new(Notify::new()),
            64 * 1024,
            &config.gateway,
        );
        let inbox = app.inbox.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            issueops_gateway::serve(listener, app, std::future::pending())
                .await
                .unwrap();
        });
        Self {
            control_plane: ControlPlane::new(
                store.clone(),
                repo.clone(),
                config,
                Templates::embedded(),
            ),
            reconciler: Reconciler::new(store.clone(), repo.clone(), client.clone())
                .with_safety(safety)
                .with_instance(config_for_reconciler.instance.clone())
                .with_cluster(&config_for_reconciler.cluster),
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            dir,
            store,
            repo,
            client,
            server,
            pg,
            inbox,
        }
    }

    /// Posts a webhook the way GitHub does; `signature: None` sends none.
    pub async fn post(
        &self,
        event: Option<&str>,
        delivery: Option<&str>,
        body: &[u8],
        signature: Option<String>,
    ) -> (u16, String) {
        post_webhook(&self.http, &self.url, event, delivery, body, signature).await
    }

    /// Posts `body` signed with the current secret.
    pub async fn post_signed(&self, event: &str, delivery: &str, body: &[u8]) -> (u16, String) {
        self.post(
            Some(event),
            Some(delivery),
            body,
            Some(sign(SECRET.as_bytes(), body)),
        )
        .await
    }

    pub async fn audit(&self) -> Vec<AuditRow> {
        self.store.audit_rows().await.unwrap()
    }

    pub async fn finish(self) {
        self.server.abort();
        self.store.pool().close().await;
        if let Some(pg) = &self.pg {
            pg.drop_db().await;
        }
    }
}

/// Plays the Job controller: sets a run's Job status to running, succeeded or failed.
pub async fn set_job_status(client: &kube::Client, namespace: &str, run_id: &str, phase: &str) {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::{Api, Patch, PatchParams};
    let status = match phase {
        "running" => serde_json::json!({ "active": 1, "startTime": "2026-11-25T12:00:00Z" }),
        "succeeded" => {
            serde_json::json!({ "active": 0, "succeeded": 1, "startTime": "2026-11-25T12:00:00Z",
            "conditions": [{ "type": "Complete", "status": "True" }] })
        }
        // What the in-process stand-in writes: complete, but no agent ran.
        "simulated" => {
            serde_json::json!({ "active": 0, "succeeded": 1, "startTime": "2026-11-25T12:00:00Z",
            "conditions": [{ "type": "Complete", "status": "True", "reason": "Simulated", "message": "the stand-in ran no agent" }] })
        }
        "failed" => {
            serde_json::json!({ "active": 0, "failed": 1, "startTime": "2026-11-25T12:00:00Z",
            "conditions": [{ "type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow" }] })
        }
        other => panic!("unknown phase {other}"),
    };
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    api.patch_status(
        &format!("run-{run_id}"),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// A GitHub client for a local fake GitHub at `api_url`.
pub fn github_client(
    api_url: String,
    credentials: issueops_github::Credentials,
    max_attempts: u32,
) -> Arc<issueops_github::GitHub> {
    Arc::new(
        issueops_github::GitHub::new(issueops_github::Settings {
            api_url,
            credentials,
            max_attempts,
            max_wait: std::time::Duration::from_secs(5),
            timeout: std::time::Duration::from_secs(5),
        })
        .unwrap(),
    )
}

impl Harness {
    /// Replaces the control plane with one that talks to `github`.
    pub fn use_github(&mut self, github: Arc<issueops_github::GitHub>, config: Config) {
        self.control_plane = ControlPlane::new(
            self.store.clone(),
            self.repo.clone(),
            Arc::new(config),
            Templates::embedded(),
        )
        .with_github(github);
    }
}

/// The real test cluster `scripts/cluster up` started: kube-apiserver and
/// kube-controller-manager v1.36 built from the Kubernetes module, etcd, and
/// the node stand-in. Tests that make claims about the cluster run on it.
pub struct RealCluster {
    pub kubeconfig: PathBuf,
    /// Where the node stand-in writes pods' Secret and ConfigMap volumes.
    pub volumes: PathBuf,
}

pub fn real_cluster() -> RealCluster {
    let kubeconfig = std::env::var_os("ISSUEOPS_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "ISSUEOPS_TEST_KUBECONFIG is not set: these tests run on the real test cluster. \
             Run them with scripts/test, or start it with `eval \"$(scripts/cluster up)\"`"
            )
        });
    let volumes = kubeconfig
        .parent()
        .expect("the kubeconfig lives in the cluster's state dir")
        .join("volumes");
    RealCluster {
        kubeconfig,
        volumes,
    }
}

pub async fn real_config() -> kube::Config {
    // As the binary's main does: rustls will not pick between two providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = real_cluster();
    let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap()
}

/// A client of the real test cluster that records every request as `METHOD path`.
pub async fn counting_client(
    config: kube::Config,
) -> (kube::Client, Arc<std::sync::Mutex<Vec<String>>>) {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        seen.lock()
            .unwrap()
            .push(format!("{} {}", req.method(), req.uri().path()));
        req
    });
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build();
    (client, log)
}

/// The requests in `log` that change something.
pub fn writes(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| !l.starts_with("GET "))
        .cloned()
        .collect()
}

/// Posts a webhook to the gateway at `base` the way GitHub does;
/// `signature: None` sends none.
pub async fn post_webhook(
    http: &reqwest::Client,
    base: &str,
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
    signature: Option<String>,
) -> (u16, String) {
    let mut req = http
        .post(format!("{base}/webhooks/github"))
        .body(body.to_vec());
    if let Some(e) = event {
        req = req.header("X-GitHub-Event", e);
    }
    if let Some(d) = delivery {
        req = req.header("X-GitHub-Delivery", d);
    }
    if let Some(s) = signature {
        req = req.header("X-Hub-Signature-256", s);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Posts an `issues` delivery signed with the current secret to the gateway at `base`.
pub async fn post_signed_issue(
    http: &reqwest::Client,
    base: &str,
    delivery: &str,
    body: &[u8],
) -> (u16, String) {
    let signature = sign(SECRET.as_bytes(), body);
    post_webhook(
        http,
        base,
        Some("issues"),
        Some(delivery),
        body,
        Some(signature),
    )
    .await
}

/// Runs the real `issueops` binary on the data dir `data_dir` with `args`
/// (and no GitHub token or log level from the environment): whether it
/// succeeded, its stdout and its stderr.
pub fn run_issueops(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_issueops"))
        .env_remove("ISSUEOPS_GITHUB_TOKEN")
        .env_remove("RUST_LOG")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback port free right now, for a process started next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An issue number no other test (or earlier run) on the shared cluster uses.
pub fn unique_issue() -> u64 {
    rand::random::<u32>() as u64 % 900_000_000 + 100_000_000
}

/// GitHub's `issues.labeled` example for issue `number`, label renamed.
pub fn labeled_issue(label: &str, number: u64) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_str(&fixture("issues/labeled.payload.json")).unwrap();
    v["label"]["name"] = label.into();
    v["issue"]["number"] = number.into();
    serde_json::to_vec(&v).unwrap()
}

/// A config for a test on the shared real cluster: its own install name, so
/// its reconciler never sees another test's objects.
pub fn real_cluster_config() -> Config {
    Config {
        instance: format!("test-{}", hex::encode(rand::random::<[u8; 4]>())),
        ..test_config()
    }
}

/// Polls `find` every 100 ms until it finds something, and returns that; fails
/// the test after `limit`. The cluster's controllers act on their own time.
pub async fn wait_for<T, F, Fut>(what: &str, limit: std::time::Duration, mut find: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(found) = find().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Polls `check` until it holds, for at most a minute.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(what, std::time::Duration::from_secs(60), || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// A fresh RSA key for a test GitHub App.
pub fn rsa_key() -> String {
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
    String::from_utf8(out.stdout).unwrap()
}

/// A local fake of GitHub's App API for `REPO`: the installation, and one
/// installation token per entry of `tokens` (`(token, expires_at)`), in order.
pub async fn fake_github_app(tokens: &[(&str, &str)]) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/{REPO}/installation")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": 42, "app_id": 7 })))
        .mount(&server)
        .await;
    // Scoped to the one repository and to what the runner needs; the first
    // token is about to expire.
    for (priority, (token, expires)) in (1u8..).zip(tokens) {
        Mock::given(method("POST"))
            .and(path("/app/installations/42/access_tokens"))
            .and(body_json(json!({
                "repositories": ["Hello-World"],
                "permissions": { "contents": "write", "pull_requests": "write", "issues": "write" },
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "token": token, "expires_at": expires, "permissions": { "contents": "write", "pull_requests": "write" },
                "repository_selection": "selected"
            })))
            .up_to_n_times(1)
            .with_priority(priority)
            .mount(&server)
            .await;
    }
    server
}

/// A GitHub App client (app 7) of `server`.
pub fn github_app_client(server: &MockServer) -> Arc<issueops_github::GitHub> {
    github_client(
        server.uri(),
        issueops_github::Credentials::App {
            app_id: 7,
            private_key_pem: rsa_key(),
        },
        3,
    )
}

/// Tells the node stand-in how a pod ends: `succeed`, `fail` or `hold`.
pub async fn set_pod_outcome(client: &kube::Client, namespace: &str, pod: &str, outcome: &str) {
    use kube::api::{Api, Patch, PatchParams};
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let patch =
        json!({ "metadata": { "annotations": { "standin.issueops.dev/outcome": outcome } } });
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

impl Harness {
    /// Fails the test on any audit row saying an object failed.
    pub async fn assert_no_audit_errors(&self) {
        let errors: Vec<AuditRow> = self
            .audit()
            .await
            .into_iter()
            .filter(|r| r.outcome == "error")
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

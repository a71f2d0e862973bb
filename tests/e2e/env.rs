//! The gate's environment, shared with the label → agent benchmark
//! (benches/label_to_agent.rs): the real `issueops serve` binary with its
//! gateway, the fake GitHub (App, repo API) and the git server where the
//! agent's pods reach them, the store and state repo it writes, and what the
//! tests need to know of the node that runs the agent image.
#![allow(dead_code)]

use crate::common::{self, fake_repo_api, git_http};
use issueops_core::state_repo::StateRepo;
use issueops_core::{naming, Store};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A repo without an App installation: its deliveries are the poison of the
/// dead-letter scenario.
pub const UNINSTALLED_REPO: &str = "Codertocat/not-installed";

pub const APPROVER: &str = "e2e-approver";
pub const STRANGER: &str = "e2e-stranger";
/// Issues carrying this label are proposed for review, not applied.
pub const REVIEW_LABEL: &str = "needs-review";
/// The installation token the fake GitHub App mints for every agent run; the
/// git server accepts only it.
pub const AGENT_TOKEN: &str = "ghs_e2eAGENTinstallationTOKEN01";
/// The stand-in agent (tests/data/agent), where the agent image's test build
/// (`AGENT=test-agent`) puts it; its first argument (the model label) says
/// what it does.
pub const FAKE_AGENT: &str = "/opt/issueops/test-agent/fake-agent.sh";

pub struct Env {
    pub work: PathBuf,
    pub url: String,
    pub instance: String,
    pub kube: kube::Client,
    pub http: reqwest::Client,
    pub store: Store,
    pub repo: StateRepo,
    pub serve: std::sync::Mutex<Child>,
    /// serve's operations endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_url: String,
    /// The staff UI's one-time sign-in link, as serve printed it.
    pub ui_link: String,
    /// The repo's side of GitHub (issues, pull requests, labels), with state.
    pub api: fake_repo_api::FakeRepoApi,
    /// The code repository the agent clones and pushes to, over smart HTTP.
    pub git: git_http::GitHttp,
    /// The installation token the fake GitHub App mints next, and its expiry.
    pub app_token: AppToken,
    pub _github: MockServer,
}

/// What the fake App's `access_tokens` answers: a scenario changes it to
/// make the reconciler refresh a run's token.
#[derive(Clone)]
pub struct AppToken(pub Arc<std::sync::Mutex<(String, String)>>);

impl wiremock::Respond for AppToken {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let (token, expires_at) = self.0.lock().unwrap().clone();
        ResponseTemplate::new(201).set_body_json(json!({
            "token": token, "expires_at": expires_at,
            "permissions": { "contents": "write", "pull_requests": "write", "issues": "write" },
            "repository_selection": "selected"
        }))
    }
}

impl AppToken {
    pub fn set(&self, token: &str, expires_at: &str) {
        *self.0.lock().unwrap() = (token.into(), expires_at.into());
    }
}

pub type Evidence = serde_json::Map<String, Value>;

/// The issueops binary under test: this workspace's, or another build's
/// (`ISSUEOPS_E2E_BIN`), as the benchmark compares builds.
pub fn bin() -> String {
    std::env::var("ISSUEOPS_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_issueops").into())
}

/// How the install under test runs its agent: the gate's stand-in agent
/// (its model label says what it does), or another argv with its models and
/// a model API key for the agents (the real Codex CLI against a scripted
/// model server).
pub struct AgentSetup {
    pub command_dev: Vec<String>,
    pub command_revise: Vec<String>,
    pub models: Vec<String>,
    pub default_model: String,
    pub api_key: Option<String>,
}

impl AgentSetup {
    pub fn stand_in() -> Self {
        let argv: Vec<String> = ["sh", FAKE_AGENT, "{model}", "{model}", "{reasoning}"]
            .map(String::from)
            .to_vec();
        Self {
            command_dev: argv.clone(),
            command_revise: argv,
            models: [
                "hold",
                "edit",
                "edit-when-told",
                "nothing",
                "fail",
                "hostile-probe",
                "hostile-refused",
            ]
            .map(String::from)
            .to_vec(),
            default_model: "hold".into(),
            api_key: None,
        }
    }
}

impl Env {
    pub async fn start(root: &std::path::Path) -> Env {
        Self::start_with(root, AgentSetup::stand_in()).await
    }

    pub async fn start_with(root: &std::path::Path, agent: AgentSetup) -> Env {
        let work = root.join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let app_token = AppToken(Arc::new(std::sync::Mutex::new((
            AGENT_TOKEN.into(),
            "2099-01-01T00:00:00Z".into(),
        ))));
        let github = fake_github(app_token.clone()).await;
        let api = fake_repo_api::FakeRepoApi::mount(&github, common::REPO).await;
        let git = git_http::GitHttp::start(&work.join("git"), AGENT_TOKEN).await;
        git.create_repo(common::REPO, "main", &[("README.md", "# Hello World\n")]);
        std::fs::write(work.join("app.pem"), common::rsa_key()).unwrap();
        // issueops signs its state-repo commits; a person who pushes to the
        // state repo in a scenario is a reviewer whose key is trusted.
        let keys = work.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        for name in ["issueops", "reviewer"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(keys.join(name))
                .output()
                .expect("ssh-keygen (openssh-client) runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let reviewer_public = std::fs::read_to_string(keys.join("reviewer.pub")).unwrap();
        let instance = format!("e2e-{}", hex::encode(rand::random::<[u8; 4]>()));
        let config = json!({
            // The second repo has no App installation: its deliveries are
            // the poison of the dead-letter scenario.
            "repos": [common::REPO, UNINSTALLED_REPO],
            "instance": instance,
            // The agent image built from agent/Dockerfile runs on the real
            // node (or, with `ISSUEOPS_NODE=standin`, the stand-in runs its
            // entrypoint); the stand-in agent's model label says what it
            // does. By default it holds until a scenario decides: held runs
            // stay on the stand-in, where a test decides a pod's outcome.
            "job": { "image": agent_image() },
            "agent": {
                "command_dev": agent.command_dev,
                "command_revise": agent.command_revise,
                "git_url": format!("{}/{{repo}}.git", git.base),
                "models": agent.models,
                // Small, so the hostile agent's 2 MiB file is refused.
                "max_push_bytes": 1048576,
                "default_model": agent.default_model,
            },
            // The agent gets 600 s of these 800 (a quarter is kept for clone and push).
            "limits": { "run_seconds": 800 },
            // Issues stay 20 s after their last run: long enough for a rollback to
            // be applied before the idle issue is pruned again.
            "lifecycle": { "run_retention_seconds": 0, "issue_idle_seconds": 20, "max_unguarded_deletes": 15 },
            "github": { "api_url": github.uri(), "catch_up_seconds": 86400, "approvers": [APPROVER] },
            // The test cluster has no issueops namespace; a short Lease keeps
            // the two-replica scenario's takeover quick.
            "cluster": { "lease_namespace": "default", "lease_seconds": 4 },
            // Issues labelled `needs-review` are proposed, not applied, and
            // only commits issueops or the reviewer signed are applied.
            "review": {
                "labels": [REVIEW_LABEL],
                "signing_key_file": keys.join("issueops"),
                "trusted_keys": [reviewer_public.trim()],
            },
        });
        std::fs::write(
            work.join("config.yaml"),
            serde_yaml::to_string(&config).unwrap(),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics_port = common::free_port();
        let log = std::fs::File::create(root.join("serve.log")).unwrap();
        let mut serve = Command::new(bin());
        if let Some(key) = &agent.api_key {
            std::fs::write(work.join("agent-api-key"), key).unwrap();
            serve.env("ISSUEOPS_AGENT_API_KEY_FILE", work.join("agent-api-key"));
        }
        let serve = serve
            .args([
                "serve",
                "--cluster",
                "kube",
                "--poll-seconds",
                "1",
                "--resync-seconds",
                "5",
                "--ui-listen",
                "127.0.0.1:0",
            ])
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("ISSUEOPS_DATA_DIR", &work)
            .env("ISSUEOPS_CONFIG", work.join("config.yaml"))
            .env("ISSUEOPS_WEBHOOK_SECRET", common::SECRET)
            .env("ISSUEOPS_GITHUB_APP_ID", "7")
            .env("ISSUEOPS_GITHUB_APP_KEY_FILE", work.join("app.pem"))
            .env("KUBECONFIG", common::real_cluster().kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("issueops serve starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "issueops serve never became ready; see target/e2e/serve.log"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The UI is bound before the gateway answers: its lines are logged.
        let log = std::fs::read_to_string(root.join("serve.log")).unwrap();
        let ui_link = log
            .lines()
            .find_map(|l| l.split_once("sign in (one-time link): "))
            .map(|(_, link)| link.trim().to_string())
            .expect("serve printed the staff UI's sign-in link");
        let store = Store::connect(&format!("sqlite://{}", work.join("issueops.db").display()))
            .await
            .unwrap();
        let repo = StateRepo::local(&work.join("state.git"), "main").unwrap();
        Env {
            work,
            url,
            instance,
            kube: kube::Client::try_from(common::real_config().await).unwrap(),
            http,
            store,
            repo,
            serve: std::sync::Mutex::new(serve),
            metrics_url: format!("http://127.0.0.1:{metrics_port}"),
            ui_link,
            api,
            git,
            app_token,
            _github: github,
        }
    }

    pub async fn post(
        &self,
        delivery: &str,
        body: &[u8],
        signature: Option<String>,
    ) -> (u16, String) {
        common::post_webhook(
            &self.http,
            &self.url,
            Some("issues"),
            Some(delivery),
            body,
            signature,
        )
        .await
    }

    pub async fn post_signed(&self, delivery: &str, body: &[u8]) -> (u16, String) {
        common::post_signed_issue(&self.http, &self.url, delivery, body).await
    }

    /// Posts an `issues` event for `issue` and expects it stored (202).
    pub async fn label(&self, delivery: &str, issue: u64, label: &str, sender: &str) {
        self.label_with(delivery, issue, label, sender, &[label])
            .await
    }

    /// Like [`Env::label`], the issue carrying `on_issue` after the event.
    pub async fn label_with(
        &self,
        delivery: &str,
        issue: u64,
        label: &str,
        sender: &str,
        on_issue: &[&str],
    ) {
        let mut v: Value = serde_json::from_slice(&common::labeled_issue(label, issue)).unwrap();
        v["sender"]["login"] = sender.into();
        v["issue"]["labels"] = on_issue
            .iter()
            .map(|n| json!({ "name": n, "color": "ededed", "default": false }))
            .collect();
        if !self.api.state.lock().unwrap().issues.contains_key(&issue) {
            let title = v["issue"]["title"].as_str().unwrap_or_default().to_string();
            let body = v["issue"]["body"].as_str().unwrap_or_default().to_string();
            self.api.add_issue(issue, &title, &body);
        }
        let (status, text) = self
            .post_signed(delivery, &serde_json::to_vec(&v).unwrap())
            .await;
        assert_eq!(status, 202, "{text}");
    }

    pub async fn close(&self, delivery: &str, issue: u64) {
        let mut v: Value =
            serde_json::from_slice(&common::labeled_issue("run:dev", issue)).unwrap();
        v["action"] = "closed".into();
        let (status, text) = self
            .post_signed(delivery, &serde_json::to_vec(&v).unwrap())
            .await;
        assert_eq!(status, 202, "{text}");
    }

    pub async fn run_state(&self, run: &str) -> String {
        self.store
            .get_run(run)
            .await
            .unwrap()
            .map(|r| r.state)
            .unwrap_or_default()
    }

    pub async fn wait_state(&self, run: &str, want: &[&str]) -> String {
        self.wait_for(&format!("run {run} to be one of {want:?}"), || async {
            let state = self.run_state(run).await;
            want.contains(&state.as_str()).then_some(state)
        })
        .await
    }

    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.wait_for(what, || {
            let checked = check();
            async move { checked.await.then_some(()) }
        })
        .await
    }

    /// Polls `find` until it finds something (at most 90 s), and returns that.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, find: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        common::wait_for(what, Duration::from_secs(90), find).await
    }

    /// A fresh clone of the state repo in `name`, as a person would make to
    /// push to it.
    pub fn person_clone(&self, name: &str) -> PathBuf {
        let clone = self.unsigned_clone(name);
        // A reviewer: every commit signed with a trusted key.
        for (k, v) in [
            ("gpg.format", "ssh".to_string()),
            ("commit.gpgsign", "true".into()),
            ("user.signingkey", self.reviewer_key().display().to_string()),
        ] {
            git_http::git(&clone, &["config", k, &v]);
        }
        clone
    }

    /// A clone of the state repo whose commits nobody signs.
    pub fn unsigned_clone(&self, name: &str) -> PathBuf {
        let clone = self.work.join(name);
        let _ = std::fs::remove_dir_all(&clone);
        std::fs::create_dir_all(&clone).unwrap();
        let state = self.work.join("state.git");
        git_http::git(&clone, &["clone", "-q", state.to_str().unwrap(), "."]);
        clone
    }

    /// The private key of the reviewer the install trusts.
    pub fn reviewer_key(&self) -> PathBuf {
        self.work.join("keys/reviewer")
    }

    /// Commits of the state repo naming `run` in their trailers.
    pub fn commits_of(&self, run: &str) -> Vec<String> {
        self.repo
            .log()
            .unwrap()
            .into_iter()
            .filter(|sha| {
                self.repo
                    .commit_info(sha)
                    .is_ok_and(|i| i.trailers.iter().any(|(k, v)| k == "Run-Id" && v == run))
            })
            .collect()
    }

    /// Waits for the reconciler's next whole pass after audit row `after`
    /// and returns its resync row's id. serve's loop runs a cycle, observes
    /// Jobs, then (every `--resync-seconds`) resyncs, one after the other: a
    /// resync row written after `after` comes from a resync that started
    /// after the pass that wrote `after`, and it looked at every object. So
    /// a check made again past it means "and it stays so", without a sleep.
    pub async fn next_resync_after(&self, after: i64) -> i64 {
        self.wait_for("the reconciler's next resync", || async {
            let rows: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT id, outcome, detail FROM audit_events WHERE id > $1 AND kind = 'reconcile' ORDER BY id",
            )
            .bind(after)
            .fetch_all(self.store.pool())
            .await
            .unwrap();
            rows.into_iter()
                .find(|(_, outcome, detail)| {
                    // A resync stopped by prune safety says so in its detail.
                    outcome.starts_with("resync")
                        || serde_json::from_str::<Value>(detail)
                            .is_ok_and(|d| d["resync"] == true)
                })
                .map(|(id, _, _)| id)
        })
        .await
    }

    /// When the control plane finished with `delivery` (its inbox row's
    /// `processed_at`), once it has.
    pub async fn processed(&self, delivery: &str) -> Option<String> {
        let row: Option<(Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT processed_at, outcome FROM inbox WHERE delivery_id = $1")
                .bind(delivery)
                .fetch_optional(self.store.pool())
                .await
                .unwrap();
        row.and_then(|(at, outcome)| at.map(|_| outcome.unwrap_or_default()))
    }

    /// State-repo commits whose `Delivery-Id` trailer names `delivery`.
    pub fn commits_for_delivery(&self, delivery: &str) -> Vec<String> {
        self.repo
            .log()
            .unwrap()
            .into_iter()
            .filter(|sha| {
                self.repo.commit_info(sha).is_ok_and(|i| {
                    i.trailers
                        .iter()
                        .any(|(k, v)| k == "Delivery-Id" && v == delivery)
                })
            })
            .collect()
    }

    pub async fn audit_ids(&self, run: &str) -> Vec<i64> {
        self.store
            .audit_rows_for_run(run)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    }

    /// Where the run's agent ran and which image, as the reconciler audited
    /// it from the pod (`agent.result`: node, imageID). On the real node the
    /// gate insists on it and on the image built from agent/Dockerfile, so
    /// it cannot pass on the stand-in unnoticed.
    pub async fn agent_placement(&self, run: &str) -> Evidence {
        let row = self
            .wait_for("the run's agent.result audit row", || async {
                self.store
                    .audit_rows_for_run(run)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|r| r.kind == "agent.result")
            })
            .await;
        let detail: Value = serde_json::from_str(&row.detail).unwrap();
        let node = node_under_test();
        if let Some(name) = &node.name {
            assert_eq!(detail["node"].as_str(), Some(name.as_str()), "{detail}");
            assert_eq!(
                detail["agent_image_id"].as_str(),
                node.image_id.as_deref(),
                "the agent ran the image built from agent/Dockerfile"
            );
        }
        let mut e = Evidence::new();
        e.insert("node".into(), detail["node"].clone());
        e.insert("agent_image_id".into(), detail["agent_image_id"].clone());
        e
    }

    /// Stops this install's `issueops serve`.
    pub fn stop(&self) {
        if let Ok(mut serve) = self.serve.lock() {
            let _ = serve.kill();
            let _ = serve.wait();
        }
    }

    pub async fn run_evidence(&self, run: &str) -> Evidence {
        let mut e = Evidence::new();
        e.insert("run_id".into(), run.into());
        e.insert("state".into(), self.run_state(run).await.into());
        e.insert("commits".into(), json!(self.commits_of(run)));
        e.insert("audit_ids".into(), json!(self.audit_ids(run).await));
        e
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .args(args)
            .env("ISSUEOPS_DATA_DIR", &self.work)
            .env("ISSUEOPS_CONFIG", self.work.join("config.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "issueops {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for the run to be Running, then lets its pod succeed.
    pub async fn let_succeed(&self, run: &str) {
        self.wait_state(run, &["running"]).await;
        let record = self.store.get_run(run).await.unwrap().unwrap();
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), &record.namespace);
        let selector = format!("batch.kubernetes.io/job-name=run-{run}");
        // Told once the stand-in reports the agent step running (an init
        // container: the pod is still Pending then, as on a kubelet), as a
        // person would act on a running agent.
        let pods_of_run = self
            .wait_for("the run's agent step is running", || async {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .unwrap();
                let running = list.items.iter().any(|p| {
                    p.status
                        .iter()
                        .flat_map(|s| s.init_container_statuses.iter().flatten())
                        .any(|c| {
                            c.name == "agent"
                                && c.state.as_ref().is_some_and(|st| st.running.is_some())
                        })
                });
                running.then_some(list.items)
            })
            .await;
        for pod in pods_of_run {
            common::set_pod_outcome(
                &self.kube,
                &record.namespace,
                pod.metadata.name.as_deref().unwrap(),
                "succeed",
            )
            .await;
        }
    }

    /// How many objects of kind `K` this install has in the cluster.
    pub async fn count_ours<K>(&self) -> usize
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let selector = issueops_core::managed_selector(&self.instance);
        Api::<K>::all(self.kube.clone())
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .len()
    }

    pub async fn our_namespaces(&self) -> Vec<String> {
        Api::<Namespace>::all(self.kube.clone())
            .list(&ListParams::default().labels(&issueops_core::managed_selector(&self.instance)))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .filter_map(|n| n.metadata.name)
            .collect()
    }
}

/// Which node runs the agent image, as `scripts/cluster env` says (or a
/// person, for another cluster; docs/testing.md): `ISSUEOPS_TEST_NODE` is
/// `real` (a kubelet) or `standin` (the fallback); on a real node, its name
/// and the image the agent must have run.
pub struct NodeUnderTest {
    pub kind: String,
    /// `ISSUEOPS_TEST_NODE_NAME`
    pub name: Option<String>,
    /// The manifest digest of the image as built
    /// (`ISSUEOPS_TEST_AGENT_IMAGE_DIGEST`, for the report), and its image id
    /// (config digest), which the kubelet reports as a container's imageID
    /// (`ISSUEOPS_TEST_AGENT_IMAGE_ID`).
    pub image_digest: Option<String>,
    pub image_id: Option<String>,
}

pub fn node_under_test() -> NodeUnderTest {
    let var = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    let kind = var("ISSUEOPS_TEST_NODE").unwrap_or_else(|| "standin".into());
    if kind != "real" {
        return NodeUnderTest {
            kind,
            name: None,
            image_digest: None,
            image_id: None,
        };
    }
    let need = |v: &str| {
        var(v).unwrap_or_else(|| panic!("ISSUEOPS_TEST_NODE=real needs {v} (scripts/cluster env)"))
    };
    NodeUnderTest {
        name: Some(need("ISSUEOPS_TEST_NODE_NAME")),
        image_id: Some(need("ISSUEOPS_TEST_AGENT_IMAGE_ID")),
        image_digest: var("ISSUEOPS_TEST_AGENT_IMAGE_DIGEST"),
        kind,
    }
}

/// What the report says of the node: its kind, the kubelet's and the
/// runtime's versions as the Node reports them, the agent image's digests.
pub async fn node_report(env: &Env) -> Value {
    let node = node_under_test();
    let mut report = json!({
        "kind": node.kind,
        "agent_image": agent_image(),
        "agent_image_digest": node.image_digest,
        "agent_image_id": node.image_id,
    });
    if let Some(name) = &node.name {
        let info = Api::<k8s_openapi::api::core::v1::Node>::all(env.kube.clone())
            .get(name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.node_info)
            .expect("the real node reports its versions");
        report["name"] = name.as_str().into();
        report["kubelet"] = info.kubelet_version.into();
        report["runtime"] = info.container_runtime_version.into();
    }
    report
}

/// The agent image the cluster runs (`scripts/cluster env`).
pub fn agent_image() -> String {
    std::env::var("ISSUEOPS_TEST_AGENT_IMAGE")
        .unwrap_or_else(|_| "registry.example/issueops/agent:exec".into())
}

pub async fn fake_github(app_token: AppToken) -> MockServer {
    // Where the agent's pods reach it.
    let listener = std::net::TcpListener::bind((git_http::pod_host(), 0)).unwrap();
    let server = MockServer::builder().listener(listener).start().await;
    for (login, permission) in [
        ("Codertocat", "admin"),
        (APPROVER, "admin"),
        (STRANGER, "read"),
    ] {
        Mock::given(method("GET"))
            .and(path(format!(
                "/repos/{}/collaborators/{login}/permission",
                common::REPO
            )))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "permission": permission, "user": { "login": login } })),
            )
            .mount(&server)
            .await;
    }
    // A GitHub App: its installation on the repo, and installation tokens
    // (the control plane's, and the repo-scoped ones for agents).
    Mock::given(method("GET"))
        .and(path(format!("/repos/{}/installation", common::REPO)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": 42, "app_id": 7 })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .respond_with(app_token)
        .mount(&server)
        .await;
    let comment = json!({ "id": 9001, "body": "", "user": { "login": "issueops[bot]" } });
    Mock::given(method("POST"))
        .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(comment.clone()))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/comments/\d+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(comment))
        .mount(&server)
        .await;
    server
}

/// Scenario issue numbers: distinct from every other test's on the cluster.
/// Closes `issue` and waits for its namespace to go.
pub async fn close_and_prune(env: &Env, delivery: &str, issue: u64) {
    env.close(delivery, issue).await;
    let namespace = naming::namespace_for_issue(common::REPO, issue);
    env.wait_until(&format!("{namespace} is pruned"), || async {
        !env.our_namespaces().await.contains(&namespace)
    })
    .await;
}

/// The folder of the issue's agent-home claim on the node running the agent:
/// the real node's hostPath volume (the stand-in's provisioner made it), or
/// the stand-in's own claim folder.
pub async fn agent_home_on_the_node(env: &Env, namespace: &str) -> PathBuf {
    if node_under_test().kind != "real" {
        return common::real_cluster()
            .volumes
            .join(namespace)
            .join("_claims/agent-home");
    }
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(env.kube.clone(), namespace);
    let volume = env
        .wait_for("the agent-home claim is bound", || async {
            claims
                .get_opt("agent-home")
                .await
                .unwrap()
                .and_then(|c| c.spec?.volume_name)
                .filter(|v| !v.is_empty())
        })
        .await;
    let pv = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(env.kube.clone())
        .get(&volume)
        .await
        .unwrap();
    PathBuf::from(pv.spec.unwrap().host_path.expect("a hostPath volume").path)
}

/// Where the node keeps the pod's `github-token` volume, which its
/// token-holding containers mount.
pub fn token_file_on_the_node(pod: &Pod) -> PathBuf {
    let state = common::real_cluster()
        .kubeconfig
        .parent()
        .unwrap()
        .to_path_buf();
    let (ns, name, uid) = (
        pod.metadata.namespace.clone().unwrap(),
        pod.metadata.name.clone().unwrap(),
        pod.metadata.uid.clone().unwrap(),
    );
    if node_under_test().kind == "real" {
        state.join(format!(
            "node/kubelet/pods/{uid}/volumes/kubernetes.io~secret/github-token/token"
        ))
    } else {
        common::real_cluster()
            .volumes
            .join(ns)
            .join(name)
            .join("github-token/token")
    }
}

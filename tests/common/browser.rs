//! Real headless Chromium (Debian's `chromium`, driven through Debian's
//! `chromedriver` by WebDriver) and a real `issueops serve` with its staff UI,
//! for the UI tests and the regression gate. `scripts/test` installs both
//! packages; without them these helpers fail with what to install.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A headless Chromium session; the driver is killed on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    pub async fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{url}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "chromedriver never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking flags Chromium keeps dialling
        // Google's hosts, which this closed network refuses.
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session through chromedriver");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Waits (polling the page, at most 60 s) until `css`'s text contains `want`.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = el.text().await {
                    if t.contains(want) {
                        return t;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {want:?}; page: {}",
                self.client.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reloads the page (every 100 ms, at most 60 s) until `css` is on it.
    pub async fn reload_until(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                return el;
            }
            assert!(Instant::now() < deadline, "{css} never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.client.refresh().await.unwrap();
        }
    }

    /// Saves a PNG of the page under `target/ui-screenshots/`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits (at most 60 s) until the page's URL contains `want`: a click
    /// that submits a form returns before the new page is there.
    pub async fn wait_url(&self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = self.client.current_url().await.unwrap().to_string();
            if url.contains(want) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the URL never contained {want:?}: {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }
}

/// `issueops serve` on the stand-in cluster with its staff UI.
pub struct Serve {
    child: Child,
    pub gateway: String,
    pub ui: String,
    /// The one-time sign-in link serve printed (empty with GitHub sign-in).
    pub link: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts serve with `config` (YAML) and `--allow Codertocat`, and waits
    /// until both the gateway and the UI answer.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, &[]).await
    }

    /// As [`Serve::start`], with more environment; `ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE`
    /// (GitHub sign-in) means no link is printed.
    pub async fn start_with(config: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let github_sign_in = env
            .iter()
            .any(|(k, _)| *k == "ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE");
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_issueops"))
            .args(["serve", "--cluster", "in-memory", "--poll-seconds", "1"])
            .args(["--repo", super::REPO, "--allow", "Codertocat"])
            .args(["--ui-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .env("ISSUEOPS_WEBHOOK_SECRET", super::SECRET)
            .env("USER", "staff-tester")
            .env_remove("ISSUEOPS_GITHUB_TOKEN")
            .env_remove("KUBECONFIG")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .spawn()
            .expect("issueops serve starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ui = None;
        let mut link = None;
        while link.is_none() && !(github_sign_in && ui.is_some()) {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("serve printed its staff UI address and sign-in link");
            if let Some(u) = line.strip_prefix("staff UI: ") {
                ui = Some(u.split(' ').next().unwrap_or_default().trim().to_string());
            }
            if let Some((_, l)) = line.split_once("sign in (one-time link): ") {
                link = Some(l.trim().to_string());
            }
        }
        let gateway = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(format!("{gateway}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "serve never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Serve {
            child,
            gateway,
            ui: ui.expect("the UI address"),
            link: link.unwrap_or_default(),
            dir,
        }
    }

    /// Posts GitHub's `issues.labeled` example (label `run:dev`) as `sender`
    /// for issue `number` titled `title`; returns the HTTP status.
    pub async fn send(&self, delivery: &str, sender: &str, number: u64, title: &str) -> u16 {
        let mut v: serde_json::Value =
            serde_json::from_str(&super::fixture("issues/labeled.payload.json")).unwrap();
        v["label"]["name"] = "run:dev".into();
        v["sender"]["login"] = sender.into();
        v["issue"]["number"] = number.into();
        v["issue"]["title"] = title.into();
        let body = serde_json::to_vec(&v).unwrap();
        reqwest::Client::new()
            .post(format!("{}/webhooks/github", self.gateway))
            .header("X-GitHub-Event", "issues")
            .header("X-GitHub-Delivery", delivery)
            .header(
                "X-Hub-Signature-256",
                issueops_gateway::sign(super::SECRET.as_bytes(), &body),
            )
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

//! A git server for tests: git's own smart-HTTP server program,
//! `git http-backend`, run as CGI behind a small HTTP server on loopback,
//! the way a web server runs it in production. Every request must carry
//! Basic auth with the current token (as GitHub wants `x-access-token` and
//! an installation token); each Authorization header seen is recorded, so a
//! test can prove which token a client sent.
// Shared by several test crates; each uses a part of it.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
struct Shared {
    root: PathBuf,
    token: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Where the agent's pods reach the tests' servers (git, fake GitHub), and
/// so where those listen: the real node's pod gateway, a host address only
/// its pods and this host reach (`ISSUEOPS_TEST_POD_HOST` from
/// `scripts/cluster env`), else loopback.
pub fn pod_host() -> std::net::IpAddr {
    std::env::var("ISSUEOPS_TEST_POD_HOST")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())
}

pub struct GitHttp {
    /// `http://HOST:PORT`, HOST being [`pod_host`]
    pub base: String,
    pub root: PathBuf,
    shared: Shared,
}

impl GitHttp {
    /// Serves the bare repositories under `root` (`owner/name.git`).
    pub async fn start(root: &Path, token: &str) -> Self {
        let shared = Shared {
            root: root.to_path_buf(),
            token: Arc::new(Mutex::new(token.to_string())),
            seen: Default::default(),
        };
        let app = axum::Router::new().fallback(cgi).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind((pod_host(), 0))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            root: root.to_path_buf(),
            shared,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("{}/{repo}.git", self.base)
    }

    /// From now on only `token` is accepted.
    pub fn set_token(&self, token: &str) {
        *self.shared.token.lock().unwrap() = token.to_string();
    }

    /// The passwords of every Basic auth header received, in order.
    pub fn passwords_seen(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Creates the bare repo `owner/name.git` with one commit on `branch`
    /// holding `files`, pushed by the git command line.
    pub fn create_repo(&self, repo: &str, branch: &str, files: &[(&str, &str)]) -> PathBuf {
        let bare = self.root.join(format!("{repo}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", branch]);
        let seed = self.root.join(format!("seed-{}", repo.replace('/', "-")));
        std::fs::create_dir_all(&seed).unwrap();
        git(&seed, &["init", "-q", "-b", branch]);
        for (name, content) in files {
            let path = seed.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-qm", "initial commit"]);
        git(&seed, &["push", "-q", bare.to_str().unwrap(), branch]);
        bare
    }
}

/// Runs git in `dir` with a fixed identity; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

async fn cgi(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = password(&headers);
    if let Some(p) = &given {
        shared.seen.lock().unwrap().push(p.clone());
    }
    let wanted = shared.token.lock().unwrap().clone();
    if given.as_deref() != Some(wanted.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"git\"")],
            "token required",
        )
            .into_response();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("REQUEST_METHOD", method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = body.to_vec();
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = child.wait_with_output().await.unwrap();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let Some((end, sep)) = split else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
            .into_response();
    };
    let head = String::from_utf8_lossy(&out.stdout[..end]).into_owned();
    let mut builder = Response::builder().status(200);
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            let code = v.trim().split(' ').next().unwrap_or("200");
            builder = builder.status(code.parse::<u16>().unwrap_or(500));
        } else {
            builder = builder.header(k.trim(), v.trim());
        }
    }
    builder
        .body(axum::body::Body::from(out.stdout[end + sep..].to_vec()))
        .unwrap()
}

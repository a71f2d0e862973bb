//! issueops' GitHub client, on octocrab: GitHub App auth (app id + private key
//! → installation tokens, cached and refreshed by octocrab) or a personal
//! token; a configurable API base URL (GitHub Enterprise); answers that ask to
//! wait (`retry-after`, `x-ratelimit-reset`) are waited for, server errors and
//! timeouts retried with backoff.
//!
//! Invariants: a token never appears in an error, a log line or `Debug`
//! output; a wait longer than the configured maximum is returned as an error
//! (the caller keeps its work pending) rather than blocking a loop for an hour.

pub mod app_manifest;
pub mod retry;

use octocrab::models::{AppId, InstallationId};
use octocrab::Octocrab;
use retry::{verdict, Verdict};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub client cannot be built: {0}")]
    Build(String),
    #[error("GitHub {what}: answered {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("GitHub {what}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("GitHub {what}: asked to wait {wait:?}, longer than the {max:?} allowed; will try again later")]
    WaitTooLong {
        what: String,
        wait: Duration,
        max: Duration,
    },
    #[error("GitHub {what}: answer is not what GitHub documents: {reason}")]
    Decode { what: String, reason: String },
}

/// How issueops authenticates to GitHub.
#[derive(Clone)]
pub enum Credentials {
    /// A personal or fine-grained token.
    Token(String),
    /// A GitHub App: its id and PEM private key.
    App {
        app_id: u64,
        private_key_pem: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => write!(f, "Token(***)"),
            Credentials::App { app_id, .. } => write!(f, "App {{ app_id: {app_id}, key: *** }}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise.
    pub api_url: String,
    pub credentials: Credentials,
    pub max_attempts: u32,
    /// Longest wait a rate limit may impose inside one call.
    pub max_wait: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// HTTP methods issueops uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Put,
    Delete,
}

/// A final answer: status and JSON body (`null` when empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub struct GitHub {
    settings: Settings,
    root: Arc<Octocrab>,
    /// Installation clients by repo (App auth). One shared instance per repo:
    /// it holds the cached token, which octocrab refreshes before expiry.
    installations: tokio::sync::Mutex<HashMap<String, Arc<Octocrab>>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("settings", &self.settings)
            .finish()
    }
}

fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl GitHub {
    pub fn new(settings: Settings) -> Result<Self, GitHubError> {
        let build = |e: &dyn std::fmt::Display| GitHubError::Build(e.to_string());
        let builder = Octocrab::builder()
            .base_uri(settings.api_url.as_str())
            .map_err(|e| build(&e))?
            .set_connect_timeout(Some(settings.timeout))
            .set_read_timeout(Some(settings.timeout));
        let builder = match &settings.credentials {
            Credentials::Token(token) => builder.personal_token(token.clone()),
            Credentials::App {
                app_id,
                private_key_pem,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(
                    |e| {
                        GitHubError::Build(format!(
                            "the App private key is not an RSA PEM key: {e}"
                        ))
                    },
                )?;
                builder.app(AppId(*app_id), key)
            }
        };
        Ok(Self {
            root: Arc::new(builder.build().map_err(|e| build(&e))?),
            settings,
            installations: Default::default(),
        })
    }

    /// The client that acts on `repo`: the token client, or the App's
    /// installation on that repo.
    async fn client_for(&self, repo: &str) -> Result<Arc<Octocrab>, GitHubError> {
        if matches!(self.settings.credentials, Credentials::Token(_)) {
            return Ok(self.root.clone());
        }
        let mut cache = self.installations.lock().await;
        if let Some(client) = cache.get(repo) {
            return Ok(client.clone());
        }
        let id = self.installation_id(repo).await?;
        let client = Arc::new(
            self.root
                .installation(InstallationId(id))
                .map_err(|e| GitHubError::Build(e.to_string()))?,
        );
        cache.insert(repo.to_string(), client.clone());
        Ok(client)
    }

    /// The id of the App's installation on `repo` (asked as the App, by JWT).
    async fn installation_id(&self, repo: &str) -> Result<u64, GitHubError> {
        let what = format!("installation of {repo}");
        let path = format!("/repos/{repo}/installation");
        let answer = self
            .send(&self.root, &what, Method::Get, &path, None)
            .await?;
        answer
            .body
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| status_error(&what, &answer))
    }

    /// One call on behalf of `repo`, retried as GitHub asks. Any final answer
    /// (2xx or not) is returned; the caller decides what a 404 means.
    pub async fn request(
        &self,
        repo: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GitHubError> {
        let client = self.client_for(repo).await?;
        let what = format!("{method:?} {path}");
        self.send(&client, &what, method, path, body).await
    }

    async fn send(
        &self,
        client: &Octocrab,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GitHubError> {
        // A relative URI: octocrab joins it to the base URL and only then sends
        // credentials (it never sends them to another host).
        let uri = path;
        let mut last = String::new();
        for attempt in 1..=self.settings.max_attempts {
            let sent = match method {
                Method::Get => client._get(uri).await,
                Method::Post => client._post(uri, body).await,
                Method::Patch => client._patch(uri, body).await,
                Method::Put => client._put(uri, body).await,
                Method::Delete => client._delete(uri, body).await,
            };
            let wait = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers: Vec<(String, String)> = response
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                v.to_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect();
                    if let Some(left) = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("x-ratelimit-remaining"))
                        .and_then(|(_, v)| v.trim().parse::<i64>().ok())
                    {
                        issueops_core::metrics::github_rate_limit_remaining(left);
                    }
                    if status >= 400 {
                        issueops_core::metrics::api_error("github");
                    }
                    match verdict(status, &headers, attempt, now_epoch()) {
                        Verdict::Done => {
                            let text = client.body_to_string(response).await.map_err(|e| {
                                GitHubError::Decode {
                                    what: what.into(),
                                    reason: e.to_string(),
                                }
                            })?;
                            let body = if text.trim().is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_str(&text).map_err(|e| GitHubError::Decode {
                                    what: what.into(),
                                    reason: e.to_string(),
                                })?
                            };
                            return Ok(Answer { status, body });
                        }
                        Verdict::RetryAfter(wait) => {
                            last = format!("answered {status}");
                            wait
                        }
                    }
                }
                Err(e) => {
                    // Timeouts and connection failures: back off and retry.
                    issueops_core::metrics::api_error("github");
                    last = e.to_string();
                    retry::backoff(attempt)
                }
            };
            if wait > self.settings.max_wait {
                return Err(GitHubError::WaitTooLong {
                    what: what.into(),
                    wait,
                    max: self.settings.max_wait,
                });
            }
            if attempt < self.settings.max_attempts {
                tracing::warn!(%what, attempt, ?wait, %last, "GitHub asked to wait or failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        Err(GitHubError::Exhausted {
            what: what.into(),
            attempts: self.settings.max_attempts,
            last,
        })
    }

    /// The permission `login` has on `repo`: `admin`, `write` (which includes
    /// maintain), `read`, or `none` (also when GitHub says the user is unknown).
    pub async fn permission(&self, repo: &str, login: &str) -> Result<String, GitHubError> {
        let path = format!("/repos/{repo}/collaborators/{login}/permission");
        let answer = self.request(repo, Method::Get, &path, None).await?;
        match answer.status {
            200 => answer
                .body
                .get("permission")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| GitHubError::Decode {
                    what: path,
                    reason: "no `permission` field".into(),
                }),
            404 => Ok("none".into()),
            _ => Err(status_error(&path, &answer)),
        }
    }
}

fn status_error(what: &str, answer: &Answer) -> GitHubError {
    GitHubError::Status {
        what: what.into(),
        status: answer.status,
        message: answer
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    }
}

/// A short-lived token for one repository. `Debug` never shows the token.
#[derive(Clone)]
pub struct RepoToken {
    pub token: String,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
}

impl std::fmt::Debug for RepoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepoToken(***, expires_at: {})", self.expires_at)
    }
}

impl GitHub {
    /// Whether this client can mint installation tokens (GitHub App auth).
    pub fn can_mint_tokens(&self) -> bool {
        matches!(self.settings.credentials, Credentials::App { .. })
    }

    /// Mints an installation token limited to `repo` (GitHub App auth only),
    /// for an agent working on that one repository, with only what the agent
    /// runner needs: push its branch, open or update its pull request, and
    /// label and comment (issues write).
    pub async fn mint_repo_token(&self, repo: &str) -> Result<RepoToken, GitHubError> {
        if !self.can_mint_tokens() {
            return Err(GitHubError::Build(
                "agent tokens need GitHub App credentials (ISSUEOPS_GITHUB_APP_ID, ISSUEOPS_GITHUB_APP_KEY_FILE)".into(),
            ));
        }
        let what = format!("token for {repo}");
        let id = self.installation_id(repo).await?;
        let name = repo.split_once('/').map(|(_, n)| n).unwrap_or(repo);
        let body = serde_json::json!({
            "repositories": [name],
            "permissions": AGENT_TOKEN_PERMISSIONS
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect::<serde_json::Map<_, _>>(),
        });
        let answer = self
            .send(
                &self.root,
                &what,
                Method::Post,
                &format!("/app/installations/{id}/access_tokens"),
                Some(&body),
            )
            .await?;
        let token = answer.body.get("token").and_then(Value::as_str);
        let expires = answer
            .body
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        match (answer.status, token, expires) {
            (201, Some(token), Some(expires)) => Ok(RepoToken {
                token: token.to_string(),
                expires_at: expires.timestamp(),
            }),
            _ => Err(GitHubError::Decode {
                what,
                reason: format!("answered {} without a token and an expiry", answer.status),
            }),
        }
    }
}

/// What an agent's token may do (GitHub's installation-token permissions):
/// `metadata: read` comes with every token and is not asked for.
pub const AGENT_TOKEN_PERMISSIONS: [(&str, &str); 3] = [
    ("contents", "write"),
    ("pull_requests", "write"),
    ("issues", "write"),
];

/// Whether a permission lets its holder start runs.
pub fn may_trigger(permission: &str) -> bool {
    matches!(permission, "admin" | "maintain" | "write")
}

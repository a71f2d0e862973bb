//! What the runner asks of GitHub: the issue's text, the pull request and its
//! review feedback, opening a pull request and labelling it. Each call reads
//! the token file first; the client is rebuilt only when the token changed.

use crate::token::TokenFile;
use issueops_github::{Answer, Credentials, GitHub, Method, Settings};
use serde_json::{json, Value};
use std::time::Duration;

/// Comments read per page, and the most pages read of one list.
const PAGE: usize = 100;
const MAX_PAGES: usize = 10;
/// issueops' own status comments start with this marker; they are not input.
const STATUS_MARKER: &str = "<!-- issueops:subject=";

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error(transparent)]
    GitHub(#[from] issueops_github::GitHubError),
    #[error("GitHub {what}: answered {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
}

/// One comment: who wrote it and what it says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Comment {
    pub author: String,
    pub body: String,
    /// For review comments: the file and line they are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssueText {
    pub title: String,
    pub body: String,
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
    pub head: String,
    pub open: bool,
}

pub struct Forge {
    api_url: String,
    token: TokenFile,
    repo: String,
    /// The client for the token last read, kept while the token is the same.
    client: std::sync::Mutex<Option<(String, std::sync::Arc<GitHub>)>>,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn login(v: &Value) -> String {
    v.get("user").map(|u| text(u, "login")).unwrap_or_default()
}

fn pull_request(v: &Value) -> Option<PullRequest> {
    Some(PullRequest {
        number: v.get("number")?.as_u64()?,
        url: text(v, "html_url"),
        head: v.get("head").map(|h| text(h, "ref")).unwrap_or_default(),
        open: v.get("state").and_then(Value::as_str) == Some("open"),
    })
}

impl Forge {
    pub fn new(api_url: &str, token: &TokenFile, repo: &str) -> Self {
        Self {
            api_url: api_url.to_string(),
            token: token.clone(),
            repo: repo.to_string(),
            client: Default::default(),
        }
    }

    /// The client for the token in the file now.
    fn client(&self) -> Result<std::sync::Arc<GitHub>, ForgeError> {
        let token = self.token.read()?;
        let mut cached = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, client)) = cached.as_ref() {
            if t == token.secret() {
                return Ok(client.clone());
            }
        }
        let client = std::sync::Arc::new(GitHub::new(Settings {
            api_url: self.api_url.clone(),
            credentials: Credentials::Token(token.secret().to_string()),
            max_attempts: 5,
            max_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        })?);
        *cached = Some((token.secret().to_string(), client.clone()));
        Ok(client)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<Answer, ForgeError> {
        let answer = self
            .client()?
            .request(&self.repo, method, path, body)
            .await?;
        if !ok.contains(&answer.status) {
            return Err(ForgeError::Status {
                what: format!("{method:?} {path}"),
                status: answer.status,
                message: text(&answer.body, "message"),
            });
        }
        Ok(answer)
    }

    /// Every page of a list, up to [`MAX_PAGES`].
    async fn list(&self, path: &str) -> Result<Vec<Value>, ForgeError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let sep = if path.contains('?') { '&' } else { '?' };
            let answer = self
                .call(
                    Method::Get,
                    &format!("{path}{sep}per_page={PAGE}&page={page}"),
                    None,
                    &[200],
                )
                .await?;
            let items = answer.body.as_array().cloned().unwrap_or_default();
            let last = items.len() < PAGE;
            all.extend(items);
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// The repository's default branch.
    pub async fn default_branch(&self) -> Result<String, ForgeError> {
        let answer = self
            .call(Method::Get, &format!("/repos/{}", self.repo), None, &[200])
            .await?;
        Ok(Some(text(&answer.body, "default_branch"))
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "main".into()))
    }

    /// The issue's title, body and comments (issueops' own status comments
    /// left out).
    pub async fn issue(&self, number: u64) -> Result<IssueText, ForgeError> {
        let path = format!("/repos/{}/issues/{number}", self.repo);
        let issue = self.call(Method::Get, &path, None, &[200]).await?.body;
        let comments = self
            .list(&format!("{path}/comments"))
            .await?
            .iter()
            .map(|c| Comment {
                author: login(c),
                body: text(c, "body"),
                location: None,
            })
            .filter(|c| !c.body.starts_with(STATUS_MARKER))
            .collect();
        Ok(IssueText {
            title: text(&issue, "title"),
            body: text(&issue, "body"),
            comments,
        })
    }

    pub async fn pull(&self, number: u64) -> Result<Option<PullRequest>, ForgeError> {
        let path = format!("/repos/{}/pulls/{number}", self.repo);
        let answer = self.call(Method::Get, &path, None, &[200, 404]).await?;
        Ok((answer.status == 200)
            .then(|| pull_request(&answer.body))
            .flatten())
    }

    /// The open pull request from `branch` of this repository, if any.
    pub async fn open_pull_for(&self, branch: &str) -> Result<Option<PullRequest>, ForgeError> {
        let owner = self.repo.split('/').next().unwrap_or_default();
        let path = format!(
            "/repos/{}/pulls?state=open&head={owner}:{branch}",
            self.repo
        );
        let answer = self.call(Method::Get, &path, None, &[200]).await?;
        Ok(answer
            .body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(pull_request)
            .find(|p| p.head == branch && p.open))
    }

    /// Reviews with a body and review comments (with their file and line),
    /// oldest first: what a revise run answers.
    pub async fn review_feedback(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        let base = format!("/repos/{}/pulls/{number}", self.repo);
        let mut feedback: Vec<Comment> = self
            .list(&format!("{base}/reviews"))
            .await?
            .iter()
            .filter(|r| !text(r, "body").trim().is_empty())
            .map(|r| Comment {
                author: login(r),
                body: text(r, "body"),
                location: Some(format!("review ({})", text(r, "state").to_lowercase())),
            })
            .collect();
        feedback.extend(
            self.list(&format!("{base}/comments"))
                .await?
                .iter()
                .map(|c| {
                    let line = c
                        .get("line")
                        .or_else(|| c.get("original_line"))
                        .and_then(Value::as_u64);
                    Comment {
                        author: login(c),
                        body: text(c, "body"),
                        location: Some(match line {
                            Some(l) => format!("{}:{l}", text(c, "path")),
                            None => text(c, "path"),
                        }),
                    }
                }),
        );
        Ok(feedback)
    }

    /// Opens a pull request from `head` to `base`.
    pub async fn open_pull(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequest, ForgeError> {
        let path = format!("/repos/{}/pulls", self.repo);
        let request = json!({ "title": title, "head": head, "base": base, "body": body });
        let answer = self
            .call(Method::Post, &path, Some(&request), &[201])
            .await?;
        pull_request(&answer.body).ok_or_else(|| ForgeError::Status {
            what: format!("POST {path}"),
            status: answer.status,
            message: "the answer names no pull request number".into(),
        })
    }

    /// Adds `label` to an issue or pull request (GitHub creates a missing label).
    pub async fn add_label(&self, number: u64, label: &str) -> Result<(), ForgeError> {
        let path = format!("/repos/{}/issues/{number}/labels", self.repo);
        self.call(
            Method::Post,
            &path,
            Some(&json!({ "labels": [label] })),
            &[200],
        )
        .await?;
        Ok(())
    }
}

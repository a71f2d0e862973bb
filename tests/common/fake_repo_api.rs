//! The repository side of GitHub's REST API, played on a wiremock server with
//! state: a repo, its issues and comments, pull requests that can be opened,
//! read, reviewed and labelled. Answers take their shape from GitHub's own
//! webhook examples in `tests/data/github/` (the `issue` and `pull_request`
//! objects are what the REST API returns too), with the fields that matter
//! set from the state.
// Shared by several test crates; each uses a part of it.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/github");

fn fixture(rel: &str) -> Value {
    let dir = if std::path::Path::new(DATA).exists() {
        DATA.to_string()
    } else {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/github").to_string()
    };
    serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{rel}")).unwrap()).unwrap()
}

#[derive(Debug, Clone, Default)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub open: bool,
    pub labels: Vec<String>,
    pub reviews: Vec<(String, String, String)>,
    pub review_comments: Vec<(String, String, u64, String)>,
}

#[derive(Debug, Default)]
pub struct RepoState {
    pub issues: BTreeMap<u64, (String, String, Vec<String>)>,
    pub comments: BTreeMap<u64, Vec<(String, String)>>,
    pub pulls: Vec<Pull>,
    /// Labels removed from issues: `(number, label)`.
    pub removed_labels: Vec<(u64, String)>,
    /// Tokens accepted; empty accepts any.
    pub tokens: Vec<String>,
    /// Every bearer token received, in order.
    pub seen_tokens: Vec<String>,
}

/// Answers one route from the state.
type Handler = fn(&FakeRepoApi, &Request) -> ResponseTemplate;

#[derive(Clone)]
pub struct FakeRepoApi {
    pub repo: String,
    pub state: Arc<Mutex<RepoState>>,
}

fn bearer(req: &Request) -> Option<String> {
    let v = req.headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("token "))
        .map(str::to_string)
}

fn number_at(req: &Request, index: usize) -> u64 {
    req.url
        .path_segments()
        .and_then(|mut s| s.nth(index))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
}

impl FakeRepoApi {
    /// Mounts the repo's endpoints on `server`, default branch `main`.
    pub async fn mount(server: &MockServer, repo: &str) -> Self {
        let api = Self {
            repo: repo.to_string(),
            state: Default::default(),
        };
        let r = regex::escape(repo);
        let routes: Vec<(&str, String, Handler)> = vec![
            ("GET", format!("^/repos/{r}$"), Self::get_repo),
            ("GET", format!(r"^/repos/{r}/issues/\d+$"), Self::get_issue),
            (
                "GET",
                format!(r"^/repos/{r}/issues/\d+/comments$"),
                Self::get_comments,
            ),
            (
                "POST",
                format!(r"^/repos/{r}/issues/\d+/labels$"),
                Self::add_labels,
            ),
            (
                "DELETE",
                format!(r"^/repos/{r}/issues/\d+/labels/.+$"),
                Self::remove_label,
            ),
            ("GET", format!("^/repos/{r}/pulls$"), Self::list_pulls),
            ("POST", format!("^/repos/{r}/pulls$"), Self::create_pull),
            ("GET", format!(r"^/repos/{r}/pulls/\d+$"), Self::get_pull),
            (
                "GET",
                format!(r"^/repos/{r}/pulls/\d+/reviews$"),
                Self::get_reviews,
            ),
            (
                "GET",
                format!(r"^/repos/{r}/pulls/\d+/comments$"),
                Self::get_review_comments,
            ),
        ];
        for (verb, pattern, handler) in routes {
            let me = api.clone();
            Mock::given(method(verb))
                .and(path_regex(pattern))
                .respond_with(move |req: &Request| me.guarded(req, handler))
                .mount(server)
                .await;
        }
        api
    }

    pub fn add_issue(&self, number: u64, title: &str, body: &str) {
        self.state
            .lock()
            .unwrap()
            .issues
            .insert(number, (title.into(), body.into(), Vec::new()));
    }

    pub fn add_comment(&self, issue: u64, author: &str, body: &str) {
        self.state
            .lock()
            .unwrap()
            .comments
            .entry(issue)
            .or_default()
            .push((author.into(), body.into()));
    }

    pub fn accept_only(&self, tokens: &[&str]) {
        self.state.lock().unwrap().tokens = tokens.iter().map(|t| t.to_string()).collect();
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.state.lock().unwrap().pulls.clone()
    }

    pub fn review(&self, pull: u64, author: &str, body: &str, path: &str, line: u64) {
        let mut s = self.state.lock().unwrap();
        if let Some(p) = s.pulls.iter_mut().find(|p| p.number == pull) {
            p.reviews
                .push((author.into(), body.into(), "CHANGES_REQUESTED".into()));
            p.review_comments
                .push((author.into(), path.into(), line, format!("{body} (inline)")));
        }
    }

    pub fn seen_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().seen_tokens.clone()
    }

    fn guarded(&self, req: &Request, handler: Handler) -> ResponseTemplate {
        let token = bearer(req);
        {
            let mut s = self.state.lock().unwrap();
            if let Some(t) = &token {
                s.seen_tokens.push(t.clone());
            }
            if !s.tokens.is_empty() && !token.is_some_and(|t| s.tokens.contains(&t)) {
                return ResponseTemplate::new(401).set_body_json(json!({
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest"
                }));
            }
        }
        handler(self, req)
    }

    fn get_repo(&self, _req: &Request) -> ResponseTemplate {
        let mut repo = fixture("issues/labeled.payload.json")["repository"].clone();
        repo["full_name"] = self.repo.clone().into();
        repo["default_branch"] = "main".into();
        ResponseTemplate::new(200).set_body_json(repo)
    }

    fn get_issue(&self, req: &Request) -> ResponseTemplate {
        let number = number_at(req, 4);
        let s = self.state.lock().unwrap();
        let Some((title, body, labels)) = s.issues.get(&number) else {
            return not_found();
        };
        let mut issue = fixture("issues/labeled.payload.json")["issue"].clone();
        issue["number"] = number.into();
        issue["title"] = title.clone().into();
        issue["body"] = body.clone().into();
        issue["labels"] = labels.iter().map(|l| json!({ "name": l })).collect();
        ResponseTemplate::new(200).set_body_json(issue)
    }

    fn get_comments(&self, req: &Request) -> ResponseTemplate {
        let number = number_at(req, 4);
        let s = self.state.lock().unwrap();
        let template = fixture("issue_comment/created.payload.json")["comment"].clone();
        let page: usize = query(req, "page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let comments: Vec<Value> = s
            .comments
            .get(&number)
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|_| page == 1)
            .map(|(i, (author, body))| {
                let mut c = template.clone();
                c["id"] = (1000 + i).into();
                c["body"] = body.clone().into();
                c["user"]["login"] = author.clone().into();
                c
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(comments)
    }

    fn add_labels(&self, req: &Request) -> ResponseTemplate {
        let number = number_at(req, 4);
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let added: Vec<String> = body["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect();
        let mut s = self.state.lock().unwrap();
        let labels = if let Some(p) = s.pulls.iter_mut().find(|p| p.number == number) {
            p.labels.extend(added);
            p.labels.clone()
        } else if let Some(issue) = s.issues.get_mut(&number) {
            issue.2.extend(added);
            issue.2.clone()
        } else {
            return not_found();
        };
        let shown: Vec<Value> = labels.iter().map(|l| json!({ "name": l })).collect();
        ResponseTemplate::new(200).set_body_json(shown)
    }

    fn remove_label(&self, req: &Request) -> ResponseTemplate {
        let number = number_at(req, 4);
        let label = req
            .url
            .path_segments()
            .and_then(|mut s| s.nth(6))
            .map(|l| {
                percent_encoding::percent_decode_str(l)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        s.removed_labels.push((number, label.clone()));
        let Some(issue) = s.issues.get_mut(&number) else {
            return not_found();
        };
        issue.2.retain(|l| *l != label);
        let shown: Vec<Value> = issue.2.iter().map(|l| json!({ "name": l })).collect();
        ResponseTemplate::new(200).set_body_json(shown)
    }

    fn pull_json(&self, p: &Pull) -> Value {
        let mut v = fixture("pull_request/opened.payload.json")["pull_request"].clone();
        v["number"] = p.number.into();
        v["title"] = p.title.clone().into();
        v["body"] = p.body.clone().into();
        v["state"] = if p.open { "open" } else { "closed" }.into();
        v["html_url"] = format!("https://github.com/{}/pull/{}", self.repo, p.number).into();
        v["head"]["ref"] = p.head.clone().into();
        v["base"]["ref"] = p.base.clone().into();
        v["labels"] = p.labels.iter().map(|l| json!({ "name": l })).collect();
        v
    }

    fn list_pulls(&self, req: &Request) -> ResponseTemplate {
        let head = query(req, "head").unwrap_or_default();
        let branch = head
            .split_once(':')
            .map(|(_, b)| b.to_string())
            .unwrap_or(head);
        let open_only = query(req, "state").as_deref() != Some("all");
        let s = self.state.lock().unwrap();
        let found: Vec<Value> = s
            .pulls
            .iter()
            .filter(|p| (branch.is_empty() || p.head == branch) && (p.open || !open_only))
            .map(|p| self.pull_json(p))
            .collect();
        ResponseTemplate::new(200).set_body_json(found)
    }

    fn create_pull(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
        let mut s = self.state.lock().unwrap();
        if s.pulls.iter().any(|p| p.open && p.head == field("head")) {
            return ResponseTemplate::new(422).set_body_json(json!({
                "message": "Validation Failed",
                "errors": [{ "resource": "PullRequest", "code": "custom",
                    "message": format!("A pull request already exists for {}.", field("head")) }]
            }));
        }
        let pull = Pull {
            number: 100 + s.pulls.len() as u64,
            title: field("title"),
            body: field("body"),
            head: field("head"),
            base: field("base"),
            open: true,
            ..Default::default()
        };
        s.pulls.push(pull.clone());
        drop(s);
        ResponseTemplate::new(201).set_body_json(self.pull_json(&pull))
    }

    fn get_pull(&self, req: &Request) -> ResponseTemplate {
        let number = number_at(req, 4);
        let s = self.state.lock().unwrap();
        match s.pulls.iter().find(|p| p.number == number) {
            Some(p) => ResponseTemplate::new(200).set_body_json(self.pull_json(p)),
            None => not_found(),
        }
    }

    fn get_reviews(&self, req: &Request) -> ResponseTemplate {
        let number = number_at(req, 4);
        let s = self.state.lock().unwrap();
        let reviews: Vec<Value> = s
            .pulls
            .iter()
            .filter(|p| p.number == number && query(req, "page").as_deref() != Some("2"))
            .flat_map(|p| p.reviews.iter())
            .enumerate()
            .map(|(i, (author, body, state))| {
                json!({ "id": 80 + i, "user": { "login": author }, "body": body, "state": state })
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(reviews)
    }

    fn get_review_comments(&self, req: &Request) -> ResponseTemplate {
        let number = number_at(req, 4);
        let s = self.state.lock().unwrap();
        let comments: Vec<Value> = s
            .pulls
            .iter()
            .filter(|p| p.number == number && query(req, "page").as_deref() != Some("2"))
            .flat_map(|p| p.review_comments.iter())
            .enumerate()
            .map(|(i, (author, path, line, body))| {
                json!({ "id": 90 + i, "user": { "login": author }, "path": path, "line": line, "body": body })
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(comments)
    }
}

fn not_found() -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(json!({
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest"
    }))
}

fn query(req: &Request, key: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

//! `issueops github-app create`: registers issueops' GitHub App through
//! GitHub's manifest flow. It serves a page on the UI's address that posts
//! the manifest (permissions and events from `issueops_github::app_manifest`)
//! to GitHub; the person confirms there; GitHub redirects back with a code,
//! exchanged (`POST /app-manifests/{code}/conversions`) for the App's id,
//! private key, webhook secret and OAuth client secret. Those are written as
//! files of mode 0600 where `serve` reads them (an env file names them), and
//! optionally as a Kubernetes Secret manifest for deploy/.

use crate::cli::GithubAppCreate;
use anyhow::{bail, Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The App GitHub made, as its conversion answer documents it.
#[derive(Debug, Deserialize)]
struct Conversion {
    id: u64,
    slug: String,
    html_url: String,
    client_id: String,
    client_secret: String,
    webhook_secret: Option<String>,
    pem: String,
}

struct Flow {
    page: String,
    state: String,
    codes: mpsc::Sender<String>,
}

#[derive(Deserialize)]
struct Redirect {
    code: Option<String>,
    state: Option<String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn start(State(flow): State<Arc<Flow>>) -> Html<String> {
    Html(flow.page.clone())
}

async fn created(State(flow): State<Arc<Flow>>, Query(r): Query<Redirect>) -> Response {
    let matches = r.state.as_deref().is_some_and(|s| {
        s.len() == flow.state.len()
            && s.bytes()
                .zip(flow.state.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    let code = r.code.filter(|c| !c.is_empty() && c.len() <= 200);
    match (matches, code) {
        (true, Some(code)) => {
            let _ = flow.codes.send(code).await;
            Html(
                "<!doctype html><meta charset=utf-8><title>issueops: App created</title>\
                 <h1>The GitHub App is created</h1>\
                 <p>Return to the terminal: it says where its credentials are and where to install the App.</p>",
            )
            .into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "This is not GitHub's redirect for the App being created here (its state does not match, or there is no code). Start again from the page the terminal printed.",
        )
            .into_response(),
    }
}

/// Writes `content` to `path` with mode 0600, refusing to replace a file.
fn write_secret(path: &Path, content: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {} (an App's credentials are never overwritten: move the old ones away first)",
            path.display()
        )
    })?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn secret_manifest(namespace: &str, name: &str, data: &[(&str, &str)]) -> Result<String> {
    let string_data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": namespace },
        "type": "Opaque",
        "stringData": string_data,
    });
    Ok(serde_yaml::to_string(&secret)?)
}

pub async fn create(c: &GithubAppCreate) -> Result<()> {
    if !(c.webhook_url.starts_with("https://") || c.webhook_url.starts_with("http://")) {
        bail!(
            "--webhook-url must be the http(s) address GitHub sends webhooks to (…/webhooks/github), not {:?}",
            c.webhook_url
        );
    }
    if c.out.join("private-key.pem").exists() {
        bail!(
            "{} already holds an App's credentials: pick another --out, or move them away first",
            c.out.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(&c.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", c.listen))?;
    let address = listener.local_addr()?;
    let public = c
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"))
        .trim_end_matches('/')
        .to_string();
    let state = hex::encode(rand::random::<[u8; 16]>());
    let web = c.web_url.trim_end_matches('/');
    let target = match &c.org {
        Some(org) => format!("{web}/organizations/{org}/settings/apps/new?state={state}"),
        None => format!("{web}/settings/apps/new?state={state}"),
    };
    let manifest = issueops_github::app_manifest::manifest(
        &c.name,
        &public,
        &c.webhook_url,
        &format!("{public}/github-app/created"),
        &format!("{public}/signin/github/callback"),
    );
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>issueops: create the GitHub App</title>\
         <h1>Create issueops' GitHub App</h1>\
         <p>This sends the App's manifest (its permissions and events) to GitHub, where you confirm it.</p>\
         <form id=manifest method=post action=\"{}\">\
         <input type=hidden name=manifest value=\"{}\">\
         <button type=submit>Create the App on GitHub{}</button></form>\
         <script>document.getElementById('manifest').submit()</script>",
        escape(&target),
        escape(&manifest.to_string()),
        c.org
            .as_deref()
            .map(|o| format!(" for {}", escape(o)))
            .unwrap_or_default(),
    );
    let (codes, mut received) = mpsc::channel(4);
    let flow = Arc::new(Flow { page, state, codes });
    let app = Router::new()
        .route("/github-app/start", get(start))
        .route("/github-app/created", get(created))
        .with_state(flow.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!(
        "Open {public}/github-app/start in a browser signed in to GitHub{}; it sends GitHub the App's manifest, you confirm, and GitHub comes back here.",
        c.org
            .as_deref()
            .map(|o| format!(" as an owner of {o}"))
            .unwrap_or_default()
    );
    let wait = std::time::Duration::from_secs(c.wait_minutes * 60);
    let code = tokio::time::timeout(wait, received.recv())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "GitHub did not come back within {} minutes; nothing was written",
                c.wait_minutes
            )
        })?
        .context("the redirect listener stopped")?;

    let http = reqwest::Client::builder()
        .user_agent("issueops")
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let url = format!(
        "{}/app-manifests/{code}/conversions",
        c.api_url.trim_end_matches('/')
    );
    let answer = http
        .post(&url)
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .send()
        .await
        .with_context(|| format!("cannot reach GitHub at {url}"))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if status.as_u16() != 201 {
        bail!(
            "GitHub did not exchange the code (answered {status}): {}; a code works once and for an hour: start again",
            body.chars().take(300).collect::<String>()
        );
    }
    let app: Conversion = serde_json::from_str(&body)
        .context("GitHub's answer to the code exchange is not the documented App document")?;
    let webhook_secret = app
        .webhook_secret
        .clone()
        .filter(|s| !s.is_empty())
        .context("GitHub's App came without a webhook secret; set one on the App's page and write it to the webhook secret file")?;

    std::fs::create_dir_all(&c.out)
        .with_context(|| format!("cannot create {}", c.out.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&c.out, std::fs::Permissions::from_mode(0o700))?;
    }
    let out = std::fs::canonicalize(&c.out)?;
    let key = out.join("private-key.pem");
    let hook = out.join("webhook-secret");
    let client_secret = out.join("oauth-client-secret");
    write_secret(&key, &app.pem)?;
    write_secret(&hook, &format!("{webhook_secret}\n"))?;
    write_secret(&client_secret, &format!("{}\n", app.client_secret))?;
    write_secret(&out.join("app-id"), &format!("{}\n", app.id))?;
    let env_file = out.join("github-app.env");
    write_secret(
        &env_file,
        &format!(
            "ISSUEOPS_GITHUB_APP_ID={}\nISSUEOPS_GITHUB_APP_KEY_FILE={}\nISSUEOPS_WEBHOOK_SECRET_FILE={}\nISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE={}\n",
            app.id,
            key.display(),
            hook.display(),
            client_secret.display()
        ),
    )?;
    if let Some(path) = &c.kubernetes_secret {
        let manifests = [
            secret_manifest(
                &c.namespace,
                "issueops-github-app",
                &[
                    ("app-id", &app.id.to_string()),
                    ("private-key.pem", &app.pem),
                ],
            )?,
            secret_manifest(
                &c.namespace,
                "issueops-webhook",
                &[("secrets", &webhook_secret)],
            )?,
            secret_manifest(
                &c.namespace,
                "issueops-ui-oauth",
                &[("client-secret", &app.client_secret)],
            )?,
        ];
        write_secret(path, &manifests.join("---\n"))?;
    }
    let install = format!("{}/installations/new", app.html_url.trim_end_matches('/'));
    println!(
        "GitHub App {:?} (id {}) created: {}",
        app.slug, app.id, app.html_url
    );
    println!("Its credentials are in {} (mode 0600):", out.display());
    println!("  app-id, private-key.pem, webhook-secret, oauth-client-secret");
    println!("  github-app.env: the variables `serve` reads; start it with");
    println!(
        "    set -a; . {}; set +a; issueops serve",
        env_file.display()
    );
    if let Some(path) = &c.kubernetes_secret {
        println!(
            "Kubernetes Secrets for deploy/ in {} (namespace {}): kubectl apply -f {}",
            path.display(),
            c.namespace,
            path.display()
        );
    }
    println!("For sign-in with GitHub, put in the config file:");
    println!(
        "  ui:\n    github_oauth:\n      client_id: {}",
        app.client_id
    );
    println!("Next: install the App on the repositories issueops serves: {install}");
    // The browser's page is answered before the listener goes.
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

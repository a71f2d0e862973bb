//! `demo`: the whole path once, on real parts, in a temporary data dir.
//!
//! GitHub's own `issues.labeled` example payload, relabelled `run:dev`, is
//! signed and posted over HTTP to the real gateway; then the control plane
//! commits, the reconciler applies, and the commit, the objects and the audit
//! trail are printed. A redelivery and a forged delivery show the edge's guards.

use crate::cli::{ClusterArgs, Common};
use crate::settings::cluster_client;
use anyhow::{Context, Result};
use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::state_repo::StateRepo;
use issueops_core::Store;
use issueops_gateway::{sign, AppState, Secrets};
use issueops_reconciler::Reconciler;
use std::sync::Arc;
use tokio::sync::Notify;

const FIXTURE: &str = include_str!("../../tests/data/github/issues/labeled.payload.json");

fn random_hex(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(buf)
}

/// `demo --send URL`: GitHub's example `issues.labeled` delivery, labelled
/// with the trigger label, signed with `ISSUEOPS_WEBHOOK_SECRET` and posted to
/// a running `serve`. `sender` and `issue` make it someone else's or another
/// issue's (each send is a new delivery).
pub async fn send(
    common: &Common,
    url: &str,
    sender: Option<&str>,
    issue: Option<u64>,
) -> Result<()> {
    let secret = std::env::var("ISSUEOPS_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .context("set ISSUEOPS_WEBHOOK_SECRET to the secret the running serve verifies with")?;
    let config = common.load_config()?;
    let mut payload: serde_json::Value = serde_json::from_str(FIXTURE)?;
    payload["label"]["name"] = config.trigger_label.clone().into();
    if let Some(login) = sender {
        payload["sender"]["login"] = login.into();
    }
    if let Some(n) = issue {
        payload["issue"]["number"] = n.into();
    }
    let body = serde_json::to_vec(&payload)?;
    let delivery = format!("demo-{}", random_hex(8));
    let target = format!("{}/webhooks/github", url.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&target)
        .header("X-GitHub-Event", "issues")
        .header("X-GitHub-Delivery", &delivery)
        .header("X-Hub-Signature-256", sign(secret.as_bytes(), &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {target}: is `issueops serve` running?"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    println!(
        "sent issues.labeled ({}) for {}#{} by {} as delivery {delivery}: {status} {text}",
        config.trigger_label,
        payload["repository"]["full_name"].as_str().unwrap_or("?"),
        payload["issue"]["number"],
        payload["sender"]["login"].as_str().unwrap_or("?"),
    );
    if !status.is_success() {
        anyhow::bail!(
            "the gateway refused the delivery ({status}): is the secret the same as the server's?"
        );
    }
    Ok(())
}

pub async fn demo(common: &Common, cluster: &ClusterArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    println!(
        "issueops demo — temporary data dir {}\n",
        dir.path().display()
    );

    let mut config = common.load_config()?;
    config.repos.push("Codertocat/Hello-World".into());
    let config = Arc::new(config);
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("issueops.db").display()
    ))
    .await?;
    store.migrate().await?;
    let repo = StateRepo::local(&dir.path().join("state.git"), "main")?;
    let templates = match &common.templates_dir {
        Some(d) => Templates::from_dir(d)?,
        None => Templates::embedded(),
    };
    let cluster = cluster_client(cluster.cluster, dir.path()).await?;
    println!("Cluster: {}", cluster.description);

    let secret = random_hex(16);
    let app = AppState::new(
        store.clone(),
        Secrets::new(vec![secret.clone().into_bytes()])?,
        Arc::new(Notify::new()),
        issueops_gateway::router::DEFAULT_BODY_LIMIT,
        &config.gateway,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(issueops_gateway::serve(
        listener,
        app,
        std::future::pending(),
    ));
    let url = format!("http://{addr}/webhooks/github");
    println!("Gateway:  {url}\n");

    let mut payload: serde_json::Value = serde_json::from_str(FIXTURE)?;
    payload["label"]["name"] = config.trigger_label.clone().into();
    let body = serde_json::to_vec(&payload)?;
    let delivery = format!("demo-{}", random_hex(8));
    let http = reqwest::Client::new();
    let post = |sig: String| {
        http.post(&url)
            .header("X-GitHub-Event", "issues")
            .header("X-GitHub-Delivery", &delivery)
            .header("X-Hub-Signature-256", sig)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
    };
    println!(
        "1. GitHub sends issues.labeled (label {:?}) for {}#{}, signed:",
        config.trigger_label,
        payload["repository"]["full_name"].as_str().unwrap_or("?"),
        payload["issue"]["number"]
    );
    let resp = post(sign(secret.as_bytes(), &body)).await?;
    println!("   POST → {} {}", resp.status(), resp.text().await?);

    let control_plane = ControlPlane::new(store.clone(), repo.clone(), config.clone(), templates);
    control_plane.process_pending().await?;
    let run = store
        .list_runs()
        .await?
        .into_iter()
        .next()
        .context("the control plane made no run")?;
    let sha = run.commit_sha.clone().context("the run has no commit")?;
    let info = repo.commit_info(&sha)?;
    println!(
        "\n2. The control plane committed one intent to the state repo ({}):",
        repo.location()
    );
    println!("   commit {}  {}", &sha[..12], info.summary);
    for (k, v) in &info.trailers {
        println!("   {k}: {v}");
    }
    for f in &info.changed_files {
        println!("   + {f}");
    }

    let reconciler = Reconciler::new(store.clone(), repo.clone(), cluster.client.clone());
    let report = reconciler.reconcile_once().await?;
    println!(
        "\n3. The reconciler applied them with server-side apply (field manager \"issueops\"):"
    );
    for obj in &report.applied {
        println!("   applied {obj}");
    }
    for obj in &report.failed {
        println!("   FAILED  {obj}");
    }

    println!("\n4. GitHub redelivers the same event, then someone forges one:");
    let again = post(sign(secret.as_bytes(), &body)).await?;
    println!("   redelivery → {} {}", again.status(), again.text().await?);
    let forged = post(sign(b"not-the-secret", &body)).await?;
    println!(
        "   forged     → {} {}",
        forged.status(),
        forged.text().await?
    );
    control_plane.process_pending().await?;
    println!(
        "   runs: {}, commits in the state repo: {}",
        store.list_runs().await?.len(),
        repo.log()?.len()
    );

    println!("\n5. The audit trail (append-only):");
    for row in store.audit_rows().await? {
        println!(
            "   #{:<3} {:<18} {:<20} run={:<14} commit={:<12} actor={:<11} {}",
            row.id,
            row.kind,
            row.outcome,
            row.run_id.as_deref().unwrap_or("-"),
            row.commit_sha
                .as_deref()
                .map(|s| &s[..12.min(s.len())])
                .unwrap_or("-"),
            row.actor.as_deref().unwrap_or("-"),
            row.object.as_deref().unwrap_or(""),
        );
    }
    server.abort();
    println!("\nDone. Run `issueops serve` to keep it running (see README).");
    Ok(())
}

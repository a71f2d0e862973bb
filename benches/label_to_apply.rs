//! Benchmark: how fast a label becomes an applied Job, and how fast the gateway
//! answers. Real parts: HTTP over loopback to the real gateway, SQLite on disk,
//! a git state repo on disk, kube-fake-client for the cluster.
//!
//! Run with `cargo bench --bench label_to_apply`; results go in docs/benchmarks.md.

mod support;

use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::Config;
use issueops_gateway::{router, sign, AppState, Secrets};
use issueops_reconciler::Reconciler;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"bench-secret";
use support::FIXTURE;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} n={:<5} p50={:>7.2} ms  p95={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.95)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
    );
}

fn body_for_issue(issue: u64) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    v["label"]["name"] = "run:dev".into();
    v["issue"]["number"] = issue.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (store, repo) = support::store_and_repo(dir.path()).await;
    let config = Arc::new(Config {
        repos: vec!["Codertocat/Hello-World".into()],
        ..Config::default()
    });
    // Signed deliveries spend no per-source budget anyway; off, so the guard's
    // refusal bookkeeping is out of the comparison with older builds.
    let app = router(AppState::new(
        store.clone(),
        Secrets::new(vec![SECRET.to_vec()]).unwrap(),
        Default::default(),
        1 << 20,
        &issueops_core::config::GatewayConfig {
            rate_per_second: 0,
            ..Default::default()
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let control_plane =
        ControlPlane::new(store.clone(), repo.clone(), config, Templates::embedded());
    let reconciler = Reconciler::new(store.clone(), repo.clone(), client);
    let post = |delivery: String, body: Vec<u8>| {
        let sig = sign(SECRET, &body);
        http.post(&url)
            .header("X-GitHub-Event", "issues")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", sig)
            .body(body)
            .send()
    };

    // 1. Label → applied Job, one issue at a time: gateway answer, commit, apply.
    let runs = 200;
    let (mut answer, mut commit, mut apply, mut total) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let body = body_for_issue(1000 + i);
        let t0 = Instant::now();
        let resp = post(format!("run-{i}"), body).await.unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let t1 = Instant::now();
        assert_eq!(control_plane.process_pending().await.unwrap(), 1);
        let t2 = Instant::now();
        let r = reconciler.reconcile_once().await.unwrap();
        assert!(r.converged() && r.applied.len() == support::OBJECTS_PER_NEW_ISSUE);
        let t3 = Instant::now();
        answer.push(t1 - t0);
        commit.push(t2 - t1);
        apply.push(t3 - t2);
        total.push(t3 - t0);
    }
    println!(
        "label → applied Job, {runs} new issues in a row (state repo grows to {runs} issues):"
    );
    report("  gateway answer (verify + store + 202)", answer);
    report("  control plane (decide + render + commit)", commit);
    report("  reconciler (diff + 10 server-side applies)", apply);
    report("  total, label to applied Job", total);

    // 2. Gateway alone, 8 concurrent senders (deliveries are stored, not processed).
    let per_sender = 250;
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..8 {
        let (http, url) = (http.clone(), url.clone());
        senders.spawn(async move {
            let mut lat = Vec::new();
            for i in 0..per_sender {
                let body = body_for_issue(1);
                let t = Instant::now();
                let resp = http
                    .post(&url)
                    .header("X-GitHub-Event", "issues")
                    .header("X-GitHub-Delivery", format!("load-{s}-{i}"))
                    .header("X-Hub-Signature-256", sign(SECRET, &body))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 202);
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let lat: Vec<Duration> = senders.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    println!("gateway under load, 8 concurrent senders:");
    let n = lat.len();
    report("  answer latency", lat);
    println!(
        "  throughput: {:.0} deliveries/s",
        n as f64 / elapsed.as_secs_f64()
    );
}

//! Benchmark: how fast the staff UI answers with many runs on record. Real
//! parts: the UI's router served over loopback HTTP with a real session,
//! SQLite on disk, a git state repo on disk, the in-process stand-in cluster.
//! The baseline is what a person had before the UI: `issueops runs`, which
//! reads every run and every result.
//!
//! Run with `cargo bench --bench staff_ui -- 1000 10000`; results go in
//! docs/benchmarks.md.

mod support;

use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::store::runs::{Run, RunState};
use issueops_core::{naming, Config};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUESTS: usize = 50;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| ms(samples[((samples.len() as f64 - 1.0) * p).round() as usize]);
    println!(
        "  {name:<40} n={:<3} p50={:>8.2} ms  p95={:>8.2} ms",
        samples.len(),
        at(0.5),
        at(0.95)
    );
}

/// `runs` runs on record, each with its (processed) delivery and seven audit
/// rows; one in ten failed, the rest succeeded.
async fn fill(store: &issueops_core::Store, runs: u64) {
    for i in 0..runs {
        let delivery = format!("bench-{i}");
        let seq = support::store_delivery(store, &delivery, 10_000 + i).await;
        store
            .mark_processed(seq, "bench: run started")
            .await
            .unwrap();
        let run_id = naming::run_id_for_delivery(&delivery);
        let run = Run {
            run_id: run_id.clone(),
            delivery_id: delivery.clone(),
            repo: "Codertocat/Hello-World".into(),
            issue_number: (10_000 + i) as i64,
            namespace: naming::namespace_for_issue("Codertocat/Hello-World", 10_000 + i),
            mode: "dev".into(),
            branch: naming::branch_for_issue(10_000 + i),
            actor: "Codertocat".into(),
            state: RunState::Accepted.as_str().into(),
            commit_sha: None,
            finished_at: None,
            reason: None,
            pull_request: None,
        };
        store.insert_run(&run).await.unwrap();
        let end = if i % 10 == 0 {
            RunState::Failed
        } else {
            RunState::Succeeded
        };
        store.advance_run(&run_id, end, None, None).await.unwrap();
        for k in [
            kind::DELIVERY_RECEIVED,
            kind::DECISION,
            kind::COMMIT,
            kind::APPLY,
            kind::APPLY,
            kind::JOB_STATUS,
            kind::JOB_STATUS,
        ] {
            let audit = AuditEvent::new(k, "bench")
                .delivery(delivery.clone())
                .run(run_id.clone())
                .actor("Codertocat");
            store.append_audit(&audit).await.unwrap();
        }
    }
}

async fn measure(runs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (store, repo) = support::store_and_repo(dir.path()).await;
    let mut config = Config::default();
    config.repos.push("Codertocat/Hello-World".into());
    let config = Arc::new(config);
    let control_plane = ControlPlane::new(
        store.clone(),
        repo.clone(),
        config.clone(),
        Templates::embedded(),
    );
    let t = Instant::now();
    fill(&store, runs).await;
    // One run taken through the control plane: its page has a commit and a diff.
    support::commit_new_run(&store, &control_plane, 1).await;
    let filled = t.elapsed();
    let real_run = naming::run_id_for_delivery("bench-new");
    let cluster = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = issueops_ui::AppState::new(issueops_ui::UiParts {
        store: store.clone(),
        repo,
        control_plane,
        config,
        cluster,
        cluster_description: "bench".into(),
        simulated: false,
        state_key: "bench".into(),
        public_url: format!("http://{addr}"),
        cookie_key: issueops_ui::session::cookie_key(None).unwrap(),
        github_sign_in: None,
        local_login: "bench".into(),
    });
    let link = state.sign_in_link().unwrap();
    tokio::spawn(issueops_ui::serve(listener, state, std::future::pending()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = http.get(&link).send().await.unwrap();
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    println!(
        "{runs} runs on record (filled in {:.1} s):",
        filled.as_secs_f64()
    );
    let pages = [
        ("runs page 1", "/runs".to_string()),
        (
            "runs filtered (failed), page 3",
            "/runs?state=failed&page=2".to_string(),
        ),
        (
            "one issue's page",
            "/issues/Codertocat/Hello-World/10005".to_string(),
        ),
        (
            "run page (commit diff, cluster)",
            format!("/runs/{real_run}"),
        ),
        ("audit, newest 200", "/audit".to_string()),
        (
            "audit by run",
            format!("/audit?run={}", naming::run_id_for_delivery("bench-7")),
        ),
        ("deliveries page 1", "/deliveries".to_string()),
        ("health", "/health".to_string()),
    ];
    for (name, path) in pages {
        let mut samples = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let t = Instant::now();
            let resp = http
                .get(format!("http://{addr}{path}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap();
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            samples.push(t.elapsed());
            assert!(body.len() > 1000, "{path}: a page");
        }
        report(name, samples);
    }
    // The previous build's only view: every run and every result, read and
    // formatted (what `issueops runs` does).
    let mut samples = Vec::with_capacity(10);
    for _ in 0..10 {
        let t = Instant::now();
        let all = store.list_runs().await.unwrap();
        let results = store.run_results().await.unwrap();
        let text: usize = all
            .iter()
            .map(|r| format!("{} {} {:?}", r.run_id, r.state, results.get(&r.run_id)).len())
            .sum();
        assert!(text > 0);
        samples.push(t.elapsed());
    }
    report("baseline: `issueops runs` (all runs)", samples);
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    for n in sizes {
        measure(n).await;
    }
}

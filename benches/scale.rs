//! Benchmark: cost of one new run as the number of active runs grows.
//!
//! For 100, 1,000 and 10,000 active runs in the state repo (and in the
//! cluster), measures: the commit latency for one new run, the API calls and
//! time of an incremental reconcile cycle with that one new run, the API calls
//! and time of a full resync, and the process's peak RSS. API calls are counted
//! by kube-fake-client interceptors on every verb.
//!
//! Run with `cargo bench --bench scale` (add sizes as arguments to choose:
//! `cargo bench --bench scale -- 100 1000`). Results go in docs/benchmarks.md.

mod support;

use issueops_control_plane::decide::RunMode;
use issueops_control_plane::render::Templates;
use issueops_control_plane::{plan_run, ControlPlane};
use issueops_core::state_repo::{Change, CommitRequest};
use issueops_core::store::runs::RunState;
use issueops_core::{naming, Config};
use issueops_reconciler::Reconciler;
use kube_fake_client::interceptor::Funcs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Counts every API call the fake cluster answers.
fn counting(calls: &Arc<AtomicUsize>) -> Funcs {
    macro_rules! count {
        ($funcs:expr, $($verb:ident),*) => {{
            let mut f = $funcs;
            $( let c = calls.clone(); f = f.$verb(move |_| { c.fetch_add(1, Ordering::Relaxed); Ok(None) }); )*
            f
        }};
    }
    count!(
        Funcs::new(),
        create,
        get,
        update,
        replace,
        delete,
        list,
        patch
    )
}

async fn scale(n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (store, repo) = support::store_and_repo(dir.path()).await;
    let config = Config {
        repos: vec!["Codertocat/Hello-World".into()],
        ..Config::default()
    };
    let templates = Templates::embedded();

    // N active runs: rendered, committed at once, recorded, and present in the cluster.
    let setup = Instant::now();
    let mut changes = Vec::new();
    let mut objects = Vec::new();
    for issue in 1..=n {
        let (event, _) = support::event_for(issue);
        let delivery = format!("setup-{issue}");
        let plan = plan_run(
            &config,
            &templates,
            &delivery,
            &event,
            RunMode::Dev,
            &naming::branch_for_issue(issue),
            None,
        )
        .unwrap();
        for f in &plan.files {
            objects.push(serde_yaml::from_str::<serde_json::Value>(&f.content).unwrap());
            changes.push(Change::Write {
                path: f.path.clone(),
                content: f.content.clone().into_bytes(),
            });
        }
        let mut run = plan.run;
        run.state = RunState::Running.as_str().into();
        store.insert_run(&run).await.unwrap();
    }
    let base = repo
        .commit(&CommitRequest {
            subject: format!("{n} runs"),
            body: String::new(),
            trailers: vec![],
            changes,
        })
        .unwrap()
        .unwrap();
    store
        .set_last_applied_commit("default", &base)
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let client = kube_fake_client::ClientBuilder::new()
        .with_runtime_objects(objects)
        .with_interceptor_funcs(counting(&calls))
        .build()
        .await
        .unwrap();
    let setup_secs = setup.elapsed().as_secs_f64();

    let control_plane = ControlPlane::new(store.clone(), repo.clone(), Arc::new(config), templates);
    let reconciler = Reconciler::new(store.clone(), repo.clone(), client);

    // One new run: delivery in the inbox → commit.
    let issue = n + 1;
    let commit_ms = support::commit_new_run(&store, &control_plane, issue).await;

    // The cycle's own share (git diff + attribution + database), without the API.
    let t = Instant::now();
    let planned = reconciler.plan().await.unwrap();
    let plan_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(
        planned.len(),
        support::OBJECTS_PER_NEW_ISSUE + 1,
        "{planned:?}"
    );

    calls.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let cycle = reconciler.reconcile_once().await.unwrap();
    let cycle_ms = t.elapsed().as_secs_f64() * 1000.0;
    let cycle_calls = calls.load(Ordering::Relaxed);
    assert!(
        cycle.converged() && cycle.applied.len() == support::OBJECTS_PER_NEW_ISSUE,
        "{cycle:?}"
    );

    calls.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let resync = reconciler.resync(false).await.unwrap();
    let resync_ms = t.elapsed().as_secs_f64() * 1000.0;
    let resync_calls = calls.load(Ordering::Relaxed);
    assert!(resync.cycle.converged(), "{:?}", resync.cycle);
    assert_eq!(
        resync.live_objects as u64,
        (n + 1) * support::OBJECTS_PER_NEW_ISSUE as u64
    );

    println!(
        "| {n:>6} | {commit_ms:>8.1} ms | {cycle_calls:>3} calls, {cycle_ms:>7.1} ms (git+db {plan_ms:.1} ms) | {resync_calls:>3} calls ({} LIST), {resync_ms:>9.1} ms | {:>7.0} MiB | (setup {setup_secs:.1} s)",
        resync.list_calls,
        peak_rss_mib()
    );
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    println!("| active runs | commit, one new run | incremental cycle, one new run | full resync | peak RSS |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        scale(n).await;
    }
}

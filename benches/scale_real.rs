//! Benchmark: the scale figures on the real API server of the test cluster
//! (`eval "$(scripts/cluster up)"` first): kube-apiserver v1.36 with its
//! controllers, the node stand-in running every run's pod.
//!
//! For each size N: N issues with one active run each are committed, applied
//! by the reconciler itself (setup), and their pods run; then one new run goes
//! through the control plane and one incremental cycle, and one full resync
//! compares all (N+1)×10 objects. API calls are counted on the client; the
//! process's peak RSS is issueops' own (the API server is another process,
//! reported apart). Everything is deleted afterwards.
//!
//! `cargo bench --bench scale_real -- 1000` (default: 100 and 1000).

mod support;

use issueops_control_plane::decide::RunMode;
use issueops_control_plane::render::Templates;
use issueops_control_plane::{plan_run, ControlPlane};
use issueops_core::state_repo::{Change, CommitRequest};
use issueops_core::store::runs::RunState;
use issueops_core::{naming, Config};
use issueops_reconciler::Reconciler;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// `VmHWM` (peak) or `VmRSS` of a process, in MiB.
fn memory_mib(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn apiserver_pid(kubeconfig: &std::path::Path) -> String {
    std::fs::read_to_string(kubeconfig.with_file_name("kube-apiserver.pid"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

async fn client(kubeconfig: &std::path::Path) -> (kube::Client, Arc<AtomicUsize>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counter.fetch_add(1, Ordering::Relaxed);
        req
    });
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build();
    (client, calls)
}

async fn scale(n: u64, kubeconfig: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let (store, repo) = support::store_and_repo(dir.path()).await;
    let instance = format!("bench-{}", hex::encode(rand::random::<[u8; 4]>()));
    let config = Config {
        repos: vec!["Codertocat/Hello-World".into()],
        instance: instance.clone(),
        job: issueops_core::config::JobConfig {
            image: "registry.example/issueops/agent:hold".into(),
            ..Default::default()
        },
        ..Config::default()
    };
    let templates = Templates::embedded();
    let base_issue = 1_000_000 + rand::random::<u32>() as u64 % 1_000_000_000;

    // N active runs, committed at once and applied by the reconciler (setup).
    let setup = Instant::now();
    let mut changes = Vec::new();
    for issue in base_issue..base_issue + n {
        let (event, _) = support::event_for(issue);
        let plan = plan_run(
            &config,
            &templates,
            &format!("setup-{issue}"),
            &event,
            RunMode::Dev,
            &naming::branch_for_issue(issue),
            None,
        )
        .unwrap();
        for f in &plan.files {
            changes.push(Change::Write {
                path: f.path.clone(),
                content: f.content.clone().into_bytes(),
            });
        }
        let mut run = plan.run;
        run.state = RunState::Committed.as_str().into();
        store.insert_run(&run).await.unwrap();
    }
    repo.commit(&CommitRequest {
        subject: format!("{n} runs"),
        body: String::new(),
        trailers: vec![],
        changes,
    })
    .unwrap();
    let (client, calls) = client(kubeconfig).await;
    let control_plane = ControlPlane::new(store.clone(), repo.clone(), Arc::new(config), templates);
    let reconciler =
        Reconciler::new(store.clone(), repo.clone(), client.clone()).with_instance(&instance);
    let applied = reconciler.reconcile_once().await.unwrap();
    assert!(applied.converged(), "setup: {:?}", applied.failed);
    assert_eq!(
        applied.applied.len() as u64,
        n * support::OBJECTS_PER_NEW_ISSUE as u64
    );
    let setup_secs = setup.elapsed().as_secs_f64();

    // One new run: delivery in the inbox → commit → one incremental cycle.
    let issue = base_issue + n;
    let commit_ms = support::commit_new_run(&store, &control_plane, issue).await;
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
    assert!(
        resync.cycle.applied.is_empty(),
        "false drift: {:?}",
        &resync.cycle.applied[..resync.cycle.applied.len().min(5)]
    );
    assert_eq!(
        resync.live_objects as u64,
        (n + 1) * support::OBJECTS_PER_NEW_ISSUE as u64
    );

    let pid = apiserver_pid(kubeconfig);
    println!(
        "| {n:>6} | {commit_ms:>7.1} ms | {cycle_calls} calls, {cycle_ms:.1} ms | {resync_calls} calls ({} LIST), {:.2} s, 0 writes | {:.0} MiB | {:.0} MiB | (setup: {} applies in {setup_secs:.1} s)",
        resync.list_calls,
        resync_ms / 1000.0,
        memory_mib("self", "VmHWM:"),
        memory_mib(&pid, "VmRSS:"),
        n * support::OBJECTS_PER_NEW_ISSUE as u64,
    );

    // Leave the cluster empty again.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ours = namespaces
        .list(&ListParams::default().labels(&issueops_core::managed_selector(&instance)))
        .await
        .unwrap();
    for ns in ours.items {
        let _ = namespaces
            .delete(
                ns.metadata.name.as_deref().unwrap_or_default(),
                &DeleteParams::background(),
            )
            .await;
    }
}

#[tokio::main]
async fn main() {
    let kubeconfig: PathBuf = std::env::var_os("ISSUEOPS_TEST_KUBECONFIG")
        .expect("start the test cluster first: eval \"$(scripts/cluster up)\"")
        .into();
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000]
    } else {
        sizes
    };
    println!("| active runs | commit, one new run | incremental cycle, one new run | full resync | issueops peak RSS | API server RSS |");
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        scale(n, &kubeconfig).await;
    }
}

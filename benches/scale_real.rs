//! Benchmark: the scale figures on the real API server of the test cluster
//! (`eval "$(scripts/cluster up)"` first): kube-apiserver v1.37 with its
//! controllers, the node stand-in running every run's pod.
//!
//! For each size N (N issues with one active run each, 10 objects per issue):
//!
//! 1. setup: all N committed at once and applied by the reconciler itself;
//! 2. the watches start (the inventory's initial metadata lists);
//! 3. one new run: delivery → commit → one incremental cycle (API calls);
//! 4. a first full resync (every file checked once) and a second one;
//! 5. steady state: the reconciler's loop for 30 s with nothing changing
//!    (a cycle and a resync every 10 s), API calls beyond the watches;
//! 6. 1,000 new runs at once: signed webhooks over HTTP to the real gateway
//!    (8 senders), the control plane and the reconciler running, until every
//!    one of the 1,000 runs is applied;
//! 7. a restart: a new reconciler, its watches' first lists, and its first
//!    full resync (peak RSS measured afresh for this step).
//!
//! API calls are counted on the client (a tower layer); watch requests are
//! counted apart. "issueops peak RSS" is this process's own high-water mark
//! (the API server is another process), reset after the setup so steps 2–6
//! are reported apart from the first apply of the whole inventory.
//! Everything is deleted afterwards.
//!
//! `cargo bench --bench scale_real -- 100 1000 10000` (default: 100 and 1000).

mod support;

use issueops_control_plane::decide::RunMode;
use issueops_control_plane::render::Templates;
use issueops_control_plane::{plan_run, ControlPlane};
use issueops_core::state_repo::{Change, CommitRequest};
use issueops_core::store::runs::RunState;
use issueops_core::{naming, Config};
use issueops_gateway::{router, sign, AppState, Secrets};
use issueops_reconciler::Reconciler;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"bench-secret";
const BURST: u64 = 1_000;
const STEADY: Duration = Duration::from_secs(30);

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

/// Starts this process's peak RSS afresh (Linux: `5` to `clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn apiserver_pid(kubeconfig: &std::path::Path) -> String {
    std::fs::read_to_string(kubeconfig.with_file_name("kube-apiserver.pid"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// API calls, and watch requests apart.
#[derive(Default)]
struct Calls {
    api: AtomicUsize,
    watches: AtomicUsize,
}

impl Calls {
    fn take(&self) -> usize {
        self.api.swap(0, Ordering::Relaxed)
    }
}

async fn client(kubeconfig: &std::path::Path) -> (kube::Client, Arc<Calls>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let calls = Arc::new(Calls::default());
    let counter = calls.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let watch = req.uri().query().is_some_and(|q| q.contains("watch=true"));
        if watch {
            counter.watches.fetch_add(1, Ordering::Relaxed);
        } else {
            counter.api.fetch_add(1, Ordering::Relaxed);
        }
        req
    });
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build();
    (client, calls)
}

/// Runs in the applied or running state.
async fn started_runs(store: &issueops_core::Store) -> i64 {
    let states = store.count_runs_by_state().await.unwrap();
    [RunState::Applied, RunState::Running]
        .iter()
        .map(|s| states.get(s.as_str()).copied().unwrap_or(0))
        .sum()
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

    // 1. N active runs, committed at once and applied by the reconciler.
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
    let config = Arc::new(config);
    let control_plane = Arc::new(ControlPlane::new(
        store.clone(),
        repo.clone(),
        config.clone(),
        templates,
    ));
    let reconciler = Arc::new(
        Reconciler::new(store.clone(), repo.clone(), client.clone()).with_instance(&instance),
    );
    let applied = reconciler.reconcile_once().await.unwrap();
    assert!(applied.converged(), "setup: {:?}", applied.failed);
    assert_eq!(
        applied.applied.len() as u64,
        n * support::OBJECTS_PER_NEW_ISSUE as u64
    );
    let setup_secs = setup.elapsed().as_secs_f64();
    let setup_peak = memory_mib("self", "VmHWM:");
    reset_peak();

    // 2. The watches (the inventory lists once, then watches).
    let t = Instant::now();
    let watches = compat::start_watches(&reconciler);
    let watched_secs = compat::wait_watched(&reconciler)
        .await
        .then(|| t.elapsed().as_secs_f64());

    // 3. One new run: delivery in the inbox → commit → one incremental cycle.
    let issue = base_issue + n;
    let commit_ms = support::commit_new_run(&store, &control_plane, issue).await;
    calls.take();
    let t = Instant::now();
    let cycle = reconciler.reconcile_once().await.unwrap();
    let cycle_ms = t.elapsed().as_secs_f64() * 1000.0;
    let cycle_calls = calls.take();
    assert!(
        cycle.converged() && cycle.applied.len() == support::OBJECTS_PER_NEW_ISSUE,
        "{cycle:?}"
    );

    // 4. Two full resyncs.
    let mut resyncs = Vec::new();
    for _ in 0..2 {
        calls.take();
        let t = Instant::now();
        let resync = reconciler.resync(false).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(resync.cycle.converged(), "{:?}", resync.cycle);
        assert!(
            resync.cycle.applied.is_empty() && resync.cycle.deleted.is_empty(),
            "false drift: {:?}",
            &resync.cycle.applied[..resync.cycle.applied.len().min(5)]
        );
        assert_eq!(
            resync.live_objects as u64,
            (n + 1) * support::OBJECTS_PER_NEW_ISSUE as u64
        );
        resyncs.push((secs, calls.take(), compat::files_read(&resync)));
    }
    let resync_peak = memory_mib("self", "VmHWM:");

    // 5. Steady state: the loop with nothing to do.
    let stop = tokio_util::sync::CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    calls.take();
    let stopper = async {
        tokio::time::sleep(STEADY).await;
        stop.cancel();
    };
    tokio::join!(
        reconciler.run(
            wake,
            Duration::from_secs(10),
            Duration::from_secs(10),
            stop.clone()
        ),
        stopper
    );
    let steady_per_min = calls.take() as f64 * 60.0 / STEADY.as_secs_f64();
    let steady_peak = memory_mib("self", "VmHWM:");

    // 6. 1,000 new runs at once, through the gateway.
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
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let before = started_runs(&store).await;
    let burst_started = Instant::now();
    let http = reqwest::Client::new();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..8u64 {
        let (http, url) = (http.clone(), url.clone());
        senders.spawn(async move {
            for i in (s..BURST).step_by(8) {
                let (_, body) = support::event_for(base_issue + n + 1 + i);
                let resp = http
                    .post(&url)
                    .header("X-GitHub-Event", "issues")
                    .header("X-GitHub-Delivery", format!("burst-{i}"))
                    .header("X-Hub-Signature-256", sign(SECRET, body.as_bytes()))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 202);
            }
        });
    }
    let committed = Arc::new(tokio::sync::Notify::new());
    let planning = {
        let (control_plane, committed) = (control_plane.clone(), committed.clone());
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                control_plane.process_pending().await.unwrap();
                committed.notify_one();
                if store.list_runs().await.unwrap().len() as u64 >= n + 1 + BURST {
                    break burst_started.elapsed().as_secs_f64();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(200), committed.notified()).await;
        let r = reconciler.reconcile_once().await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        if started_runs(&store).await >= before + BURST as i64 {
            break;
        }
    }
    let burst_secs = burst_started.elapsed().as_secs_f64();
    senders.join_all().await;
    let committed_secs = planning.await.unwrap();
    server.abort();
    drop(watches);
    let burst_peak = memory_mib("self", "VmHWM:");

    // 7. A restart: a new reconciler (its own inventory, filled by its
    // watches' first lists) and its first full resync.
    drop(reconciler);
    reset_peak();
    let restarted =
        Reconciler::new(store.clone(), repo.clone(), client.clone()).with_instance(&instance);
    let restart_watches = compat::start_watches(&restarted);
    compat::wait_watched(&restarted).await;
    calls.take();
    let t = Instant::now();
    let after_restart = restarted.resync(false).await.unwrap();
    let restart_secs = t.elapsed().as_secs_f64();
    assert!(
        after_restart.cycle.converged() && after_restart.cycle.applied.is_empty(),
        "after a restart: {:?}",
        after_restart.cycle
    );
    let restart_calls = calls.take();
    let restart_peak = memory_mib("self", "VmHWM:");
    drop(restart_watches);

    let pid = apiserver_pid(kubeconfig);
    let (first, second) = (&resyncs[0], &resyncs[1]);
    println!(
        "| {n:>6} | {cycle_calls} calls, {cycle_ms:.1} ms (commit {commit_ms:.1} ms) | first {:.2} s ({} calls, {} files read), then {:.2} s ({} calls, {} read); after a restart {restart_secs:.2} s ({restart_calls} calls, {} read) | {steady_per_min:.0} | {burst_secs:.1} s (all committed after {committed_secs:.1} s) | {resync_peak:.0} / {steady_peak:.0} / {burst_peak:.0} MiB; restart {restart_peak:.0} MiB | {:.0} MiB | {:.0} MiB | setup {setup_secs:.1} s; watches in sync after {} |",
        first.0, first.1, first.2, second.0, second.1, second.2,
        compat::files_read(&after_restart),
        setup_peak,
        memory_mib(&pid, "VmRSS:"),
        watched_secs.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "-".into()),
    );

    // Leave the cluster empty again, and wait for it (not measured).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector = ListParams::default().labels(&issueops_core::managed_selector(&instance));
    for ns in namespaces.list(&selector).await.unwrap().items {
        let _ = namespaces
            .delete(
                ns.metadata.name.as_deref().unwrap_or_default(),
                &DeleteParams::background(),
            )
            .await;
    }
    let gone = Instant::now();
    while !namespaces
        .list_metadata(&selector.clone().limit(1))
        .await
        .unwrap()
        .items
        .is_empty()
        && gone.elapsed() < Duration::from_secs(1800)
    {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What only some builds have (this file is also run against the previous
/// build, with this module adapted: no watches, no files read).
mod compat {
    use issueops_reconciler::resync::ResyncReport;
    use issueops_reconciler::Reconciler;

    pub fn start_watches(reconciler: &Reconciler) -> Option<issueops_reconciler::Watches> {
        Some(reconciler.watch())
    }

    /// Whether watches are in sync (waits for them).
    pub async fn wait_watched(reconciler: &Reconciler) -> bool {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
        while !reconciler.inventory().is_watched() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "watches never in sync"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    pub fn files_read(report: &ResyncReport) -> usize {
        report.files_read
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
    println!("| active runs | incremental cycle, one new run | full resync | steady state, API calls/min beyond the watches | 1,000 new runs at once, webhook → all applied | issueops peak RSS after setup: through the resyncs / the steady state / the 1,000 new runs; after a restart | issueops peak RSS, first apply of all | API server RSS | notes |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        scale(n, &kubeconfig).await;
    }
}

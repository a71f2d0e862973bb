//! Killing issueops at any point loses nothing and duplicates nothing after a
//! restart. Each test leaves the store, the state repo and the cluster exactly
//! as a crash at one point would, then starts fresh components on them.

mod common;

use common::{labeled, set_job_status, test_config, Db, Harness, REPO};
use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::naming;
use issueops_core::state_repo::StateRepo;
use issueops_core::Store;
use issueops_reconciler::Reconciler;
use kube::Api;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A fresh control plane on the same store and repo: what a restart builds.
fn restarted_control_plane(h: &Harness, config: issueops_core::Config) -> ControlPlane {
    ControlPlane::new(
        h.store.clone(),
        h.repo.clone(),
        Arc::new(config),
        Templates::embedded(),
    )
}

async fn count(h: &Harness, kind: &str, run: &str) -> usize {
    h.store
        .audit_rows_for_run(run)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind == kind)
        .count()
}

async fn exec(h: &Harness, sql: &str) {
    sqlx::query(sql).execute(h.store.pool()).await.unwrap();
}

/// The database URL of the harness' store (the SQLite file, or the
/// PostgreSQL database).
fn database_url(h: &Harness) -> String {
    match &h.pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", h.dir.path().join("issueops.db").display()),
    }
}

/// A delivery answered 202 by a real `issueops gateway` process survives
/// that process being killed (SIGKILL, right after the answer) and is found
/// by a control plane on a store opened afresh from the file or server, which
/// starts its run once. Catches a gateway that answers before its delivery is
/// committed (in `GroupCommit::store`, the delivery handed to a spawned task
/// and `Ok(Inserted::Stored { .. })` returned at once): nothing is there to
/// reopen.
async fn crash_after_inbox_insert(db: Db) {
    let h = Harness::start(db).await;
    let url = database_url(&h);
    let port = common::free_port();
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_issueops"))
        .args(["gateway", "--metrics-listen", "127.0.0.1:0", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("ISSUEOPS_DATABASE_URL", &url)
        .env("ISSUEOPS_DATA_DIR", h.dir.path())
        .env("ISSUEOPS_WEBHOOK_SECRET", common::SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("issueops gateway starts");
    let base = format!("http://127.0.0.1:{port}");
    common::eventually("the gateway is ready", || async {
        h.http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let (status, text) = common::post_signed_issue(&h.http, &base, "crash-a", &body).await;
    // Crash: the gateway dies right after answering; the control plane never ran.
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    assert_eq!(status, 202, "{text}");
    // Restart: everything opened anew from what is on disk.
    let reopened = Store::connect(&url).await.unwrap();
    let cp = ControlPlane::new(
        reopened.clone(),
        h.repo.clone(),
        Arc::new(test_config()),
        Templates::embedded(),
    );
    assert_eq!(cp.process_pending().await.unwrap(), 1);
    let runs = reopened.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, naming::run_id_for_delivery("crash-a"));
    assert_eq!(h.repo.log().unwrap().len(), 1);
    reopened.pool().close().await;
    h.finish().await;
}

#[tokio::test]
async fn crash_after_inbox_insert_on_sqlite() {
    crash_after_inbox_insert(Db::Sqlite).await;
}

#[tokio::test]
async fn crash_after_inbox_insert_on_postgres() {
    crash_after_inbox_insert(Db::Postgres).await;
}

async fn crash_after_the_commit(db: Db) {
    let h = Harness::start(db).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    h.post_signed("issues", "crash-b", &body).await;
    h.control_plane.process_pending().await.unwrap();
    let run = naming::run_id_for_delivery("crash-b");
    let sha = h.repo.log().unwrap()[0].clone();
    // Crash right after the commit: the run not yet marked committed, the
    // delivery not yet marked processed.
    exec(
        &h,
        &format!("UPDATE runs SET state = 'accepted', commit_sha = NULL WHERE run_id = '{run}'"),
    )
    .await;
    exec(&h, "UPDATE inbox SET processed_at = NULL, outcome = NULL").await;
    let decisions = count(&h, "decision", &run).await;

    let cp = restarted_control_plane(&h, test_config());
    assert_eq!(cp.process_pending().await.unwrap(), 1);
    assert_eq!(h.repo.log().unwrap(), vec![sha.clone()], "no second commit");
    let r = h.store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.commit_sha.as_deref()),
        ("committed", Some(sha.as_str()))
    );
    assert_eq!(
        count(&h, "decision", &run).await,
        decisions,
        "no second decision row"
    );
    assert_eq!(count(&h, "commit", &run).await, 1);
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn crash_after_the_commit_on_sqlite() {
    crash_after_the_commit(Db::Sqlite).await;
}

#[tokio::test]
async fn crash_after_the_commit_on_postgres() {
    crash_after_the_commit(Db::Postgres).await;
}

/// The API server fails the run's objects mid-cycle: the commit is not
/// marked applied, a restarted reconciler applies it all again, and the Job
/// is applied exactly once (its audit rows: one failed try, one apply; the
/// next cycle applies nothing). A count of Jobs by name cannot see a second
/// apply (the fake keeps one object per name); the audit rows can. Catches
/// a Job step executed twice (`group.iter()` in `Reconciler::execute_all`
/// chained with the group's Job steps again).
#[tokio::test]
async fn crash_mid_apply() {
    // The API server goes away after some objects were applied.
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let client = kube_fake_client::ClientBuilder::new()
        .with_interceptor_funcs(
            kube_fake_client::interceptor::Funcs::new().patch(move |ctx| {
                if flag.load(Ordering::SeqCst) && ctx.name.starts_with("run-") {
                    return Err(kube_fake_client::Error::InvalidRequest(
                        "connection reset".into(),
                    ));
                }
                Ok(None)
            }),
        )
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
    let h = Harness::start_with(Db::Sqlite, dir, repo, client).await;
    h.post_signed(
        "issues",
        "crash-c",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    let first = h.reconciler.reconcile_once().await.unwrap();
    // The issue's eight objects went through; the run's two (`run-*`) did not.
    assert_eq!((first.applied.len(), first.failed.len()), (8, 2));
    assert_eq!(h.store.last_applied_commit("default").await.unwrap(), None);

    down.store(false, Ordering::SeqCst);
    let restarted = Reconciler::new(h.store.clone(), h.repo.clone(), h.client.clone());
    let second = restarted.reconcile_once().await.unwrap();
    assert!(second.converged(), "{second:?}");
    assert_eq!(
        second.applied.len(),
        10,
        "the whole commit is applied again, idempotently"
    );
    assert_eq!(
        h.store.last_applied_commit("default").await.unwrap(),
        Some(h.repo.log().unwrap()[0].clone())
    );
    let ns = naming::namespace_for_issue(REPO, 1);
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(h.client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1, "exactly one Job");
    assert!(restarted.reconcile_once().await.unwrap().applied.is_empty());
    // The fake keys objects by name, so a second apply would still show one
    // Job: the audit says how often it was really applied.
    let run = naming::run_id_for_delivery("crash-c");
    let job_rows: Vec<_> = h
        .store
        .audit_rows_for_run(&run)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.kind == "apply" && r.object.as_deref() == Some(&format!("Job/{ns}/run-{run}"))
        })
        .map(|r| r.outcome)
        .collect();
    assert_eq!(job_rows, ["error", "applied"], "one failed try, one apply");
    h.finish().await;
}

#[tokio::test]
async fn crash_mid_prune() {
    let mut config = test_config();
    config.lifecycle.run_retention_seconds = 0;
    config.lifecycle.issue_idle_seconds = 0;
    let h = Harness::start_configured(Db::Sqlite, config.clone()).await;
    h.post_signed(
        "issues",
        "crash-d",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    let run = naming::run_id_for_delivery("crash-d");
    let ns = naming::namespace_for_issue(REPO, 1);
    set_job_status(&h.client, &ns, &run, "succeeded").await;
    issueops_reconciler::observe::observe_jobs(
        &h.client,
        &h.store,
        issueops_core::DEFAULT_INSTANCE,
    )
    .await
    .unwrap();
    let now = issueops_core::now_ms() + 1;
    assert_eq!(h.control_plane.prune_due(now).await.unwrap().len(), 1);
    // Crash after the prune commit, before the run was marked pruned.
    exec(
        &h,
        &format!("UPDATE runs SET state = 'succeeded' WHERE run_id = '{run}'"),
    )
    .await;

    let cp = restarted_control_plane(&h, config);
    assert!(
        cp.prune_due(now).await.unwrap().is_empty(),
        "no second prune commit"
    );
    assert_eq!(
        h.store.get_run(&run).await.unwrap().unwrap().state,
        "pruned"
    );
    assert_eq!(
        count(&h, "prune", &run).await,
        1,
        "the prune is audited once"
    );
    assert_eq!(h.repo.log().unwrap().len(), 2);
    // And a reconciler killed before deleting converges on restart.
    let restarted = Reconciler::new(h.store.clone(), h.repo.clone(), h.client.clone());
    let report = restarted.reconcile_once().await.unwrap();
    assert_eq!(report.deleted.len(), 10, "{report:?}");
    h.finish().await;
}

//! The reconciler against kube-fake-client: retries of transient API errors,
//! failures that hold the last applied commit back, and deletes that never
//! touch an object without the managed-by label.

mod common;

use common::{labeled, Db, Harness};
use issueops_core::state_repo::{Change, CommitRequest, StateRepo};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube_fake_client::{interceptor, ClientBuilder, Error};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A client whose first `failures` patches of Jobs fail with `make_error`.
async fn flaky_client(
    failures: usize,
    make_error: fn() -> Error,
) -> (kube::Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let client = ClientBuilder::new()
        .with_interceptor_funcs(interceptor::Funcs::new().patch(move |ctx| {
            // The run's Job (`run-<id>`), not its prompt ConfigMap (`run-<id>-prompt`).
            let job = ctx.name.starts_with("run-") && !ctx.name.ends_with("-prompt");
            if job && seen.fetch_add(1, Ordering::SeqCst) < failures {
                return Err(make_error());
            }
            Ok(None)
        }))
        .build()
        .await
        .unwrap();
    (client, calls)
}

async fn harness_with(client: kube::Client) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
    Harness::start_with(Db::Sqlite, dir, repo, client).await
}

async fn commit_one_run(h: &Harness) {
    let body = labeled("issues/labeled.payload.json", "run:dev");
    assert_eq!(h.post_signed("issues", "d-1", &body).await.0, 202);
    h.control_plane.process_pending().await.unwrap();
}

#[tokio::test]
async fn conflicts_and_server_errors_are_retried_until_they_converge() {
    for make_error in [
        (|| Error::Conflict("the object has been modified".into())) as fn() -> Error,
        || Error::Internal("etcd timeout".into()),
    ] {
        let (client, calls) = flaky_client(2, make_error).await;
        let h = harness_with(client).await;
        commit_one_run(&h).await;
        let report = h.reconciler.reconcile_once().await.unwrap();
        assert!(report.converged(), "{report:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two failures, then success"
        );
        h.finish().await;
    }
}

#[tokio::test]
async fn a_persistent_error_holds_the_commit_back_and_the_next_cycle_retries() {
    let (client, _) = flaky_client(usize::MAX, || Error::Internal("down".into())).await;
    let h = harness_with(client).await;
    commit_one_run(&h).await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(h.store.last_applied_commit("default").await.unwrap(), None);
    let job_rows: Vec<_> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.object.as_deref().is_some_and(|o| o.starts_with("Job/")))
        .collect();
    assert_eq!(job_rows.len(), 1);
    assert_eq!(job_rows[0].outcome, "error");
    assert!(job_rows[0].detail.contains("down"));
    // The run is not marked applied while its Job is not.
    assert_eq!(h.store.list_runs().await.unwrap()[0].state, "committed");
    h.finish().await;
}

#[tokio::test]
async fn deletes_only_objects_that_carry_the_managed_by_label() {
    let h = harness_with(ClientBuilder::new().build().await.unwrap()).await;
    // Two ConfigMaps in the state repo; one of them exists in the cluster
    // without the managed-by label (someone else's object of the same name).
    let cm = |name: &str| {
        format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app.kubernetes.io/managed-by: issueops\ndata: {{}}\n"
    )
    };
    let commit = |changes: Vec<Change>| CommitRequest {
        subject: "t".into(),
        body: String::new(),
        trailers: vec![],
        changes,
    };
    h.repo
        .commit(&commit(vec![
            Change::Write {
                path: "extra/ours.yaml".into(),
                content: cm("ours").into_bytes(),
            },
            Change::Write {
                path: "extra/theirs.yaml".into(),
                content: cm("theirs").into_bytes(),
            },
        ]))
        .unwrap();
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    let api = Api::<ConfigMap>::namespaced(h.client.clone(), "default");
    // "theirs" is replaced in the cluster by an object issueops does not manage.
    api.delete("theirs", &Default::default()).await.unwrap();
    let mut foreign = ConfigMap::default();
    foreign.metadata.name = Some("theirs".into());
    api.create(&PostParams::default(), &foreign).await.unwrap();

    h.repo
        .commit(&commit(vec![Change::Remove {
            path: "extra".into(),
        }]))
        .unwrap();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.deleted, vec!["ConfigMap/default/ours".to_string()]);
    assert_eq!(report.skipped, vec!["ConfigMap/default/theirs".to_string()]);
    assert!(api.get_opt("ours").await.unwrap().is_none());
    assert!(
        api.get_opt("theirs").await.unwrap().is_some(),
        "an unmanaged object must never be deleted"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_secret_in_the_state_repo_is_refused_not_applied() {
    let h = harness_with(ClientBuilder::new().build().await.unwrap()).await;
    h.repo
        .commit(&CommitRequest {
            subject: "t".into(),
            body: String::new(),
            trailers: vec![],
            changes: vec![Change::Write {
                path: "x/secret.yaml".into(),
                content: b"apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\nstringData: {token: x}\n".to_vec(),
            }],
        })
        .unwrap();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].contains("Secret"), "{report:?}");
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), "default");
    assert!(secrets.get_opt("s").await.unwrap().is_none());
    h.finish().await;
}

/// A request that times out (the transport gives up) is retried: the first
/// patch of each Job fails with tower's timeout error before reaching the API.
#[tokio::test]
async fn timeouts_are_retried_until_they_converge() {
    let fake = ClientBuilder::new().build().await.unwrap();
    let timed_out = Arc::new(AtomicUsize::new(0));
    let seen = timed_out.clone();
    let inner = fake.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let seen = seen.clone();
        async move {
            let is_job_patch =
                req.method() == http::Method::PATCH && req.uri().path().contains("/jobs/");
            if is_job_patch && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                let elapsed: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(tower::timeout::error::Elapsed::new());
                return Err(elapsed);
            }
            inner
                .send(req)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        }
    });
    let client = kube::Client::new(service, "default");
    let h = harness_with(client).await;
    commit_one_run(&h).await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert_eq!(
        timed_out.load(Ordering::SeqCst),
        2,
        "one timeout, one retry"
    );
    let ns = issueops_core::naming::namespace_for_issue(common::REPO, 1);
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(fake, &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1);
    h.finish().await;
}

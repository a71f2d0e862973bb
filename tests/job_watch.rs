//! The kube-runtime Job watcher against an API server that speaks the watch
//! protocol: kube-fake-client serves no watches, so this test answers the
//! watcher's LIST and WATCH requests itself, over kube's own client stack.

mod common;

use bytes::Bytes;
use common::{labeled, Db, Harness};
use http_body_util::Full;
use issueops_core::naming;
use std::sync::{Arc, Mutex};

/// A Job of `run_id` that has completed, as a JobList page.
fn completed_job_list(namespace: &str, run_id: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "batch/v1", "kind": "JobList",
        "metadata": { "resourceVersion": "10" },
        "items": [{
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "name": format!("run-{run_id}"), "namespace": namespace, "resourceVersion": "10",
                "labels": { "app.kubernetes.io/managed-by": "issueops", "issueops.dev/run-id": run_id }
            },
            "status": { "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] }
        }]
    })
}

#[tokio::test]
async fn the_watcher_moves_runs_from_the_jobs_it_is_sent() {
    let h = Harness::start(Db::Sqlite).await;
    h.post_signed(
        "issues",
        "watch-1",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    let run = naming::run_id_for_delivery("watch-1");
    let ns = naming::namespace_for_issue(common::REPO, 1);

    let list = completed_job_list(&ns, &run);
    let (watch_started_tx, watch_started) = tokio::sync::oneshot::channel::<String>();
    let watch_started_tx = Arc::new(Mutex::new(Some(watch_started_tx)));
    let seen_queries = Arc::new(Mutex::new(Vec::<String>::new()));
    let queries = seen_queries.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let list = list.clone();
        let tx = watch_started_tx.clone();
        let queries = queries.clone();
        async move {
            let query = req.uri().query().unwrap_or_default().to_string();
            queries
                .lock()
                .unwrap()
                .push(format!("{} {query}", req.uri().path()));
            let body = if query.contains("watch=true") {
                // The watcher only watches once the listed Jobs were handled.
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(query);
                }
                Bytes::new()
            } else {
                Bytes::from(list.to_string())
            };
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
        }
    });
    let client = kube::Client::new(service, "default");
    let store = h.store.clone();
    let watcher = tokio::spawn(async move {
        issueops_reconciler::observe::watch_jobs(client, store, issueops_core::DEFAULT_INSTANCE)
            .await
    });
    let watch_query = tokio::time::timeout(std::time::Duration::from_secs(30), watch_started)
        .await
        .expect("the watcher never started watching")
        .unwrap();
    watcher.abort();

    assert_eq!(
        h.store.get_run(&run).await.unwrap().unwrap().state,
        "succeeded"
    );
    assert!(
        watch_query.contains("resourceVersion=10"),
        "watches from the listed version: {watch_query}"
    );
    let queries = seen_queries.lock().unwrap().clone();
    assert!(
        queries[0].starts_with("/apis/batch/v1/jobs "),
        "{queries:?}"
    );
    assert!(
        queries[0].contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dissueops"),
        "{queries:?}"
    );
    h.finish().await;
}

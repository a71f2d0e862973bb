//! The README's promises about the cluster, on a real API server: Kubernetes
//! v1.37 (or the oldest supported minor, by `ISSUEOPS_KUBE_MINOR`) built from source (`scripts/cluster`), with its Job, namespace and
//! garbage-collector controllers, RBAC and admission, and a node stand-in that
//! moves pods to Running and then Succeeded. Each test has its own install
//! name and issue number, so the tests share the cluster without meeting.

mod common;

use common::{
    counting_client, eventually, labeled_issue, real_cluster, real_cluster_config, real_config,
    unique_issue, writes, Db, Harness, REPO,
};
use issueops_core::audit::kind;
use issueops_core::naming;
use issueops_reconciler::observe::observe_jobs;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// A harness whose reconciler talks to the real cluster through a client that
/// records its requests.
async fn start(
    config: issueops_core::Config,
) -> (Harness, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (client, log) = counting_client(real_config().await).await;
    let dir = tempfile::tempdir().unwrap();
    let repo =
        issueops_core::state_repo::StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
    (
        Harness::start_full(Db::Sqlite, dir, repo, client, config).await,
        log,
    )
}

async fn trigger(h: &Harness, issue: u64, delivery: &str) -> String {
    let (status, text) = h
        .post_signed("issues", delivery, &labeled_issue("run:dev", issue))
        .await;
    assert_eq!(status, 202, "{text}");
    h.control_plane.process_pending().await.unwrap();
    naming::run_id_for_delivery(delivery)
}

async fn state(h: &Harness, run: &str) -> String {
    h.store.get_run(run).await.unwrap().unwrap().state
}

async fn run_reason(h: &Harness, run: &str) -> String {
    h.store
        .get_run(run)
        .await
        .unwrap()
        .unwrap()
        .reason
        .unwrap_or_default()
}

/// Observes Jobs until the run is in `want`.
async fn observe_until(h: &Harness, run: &str, want: &str) {
    let instance = h.reconciler.instance().to_string();
    eventually(&format!("run {run} {want}"), || async {
        observe_jobs(&h.client, &h.store, &instance).await.unwrap();
        state(h, run).await == want
    })
    .await;
}

async fn run_pod(h: &Harness, namespace: &str, run: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name=run-{run}");
    common::wait_for(
        &format!("the Job controller makes a pod for run {run}"),
        std::time::Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap();
            list.items.into_iter().next()
        },
    )
    .await
}

/// Tells the node stand-in how the run's pod ends.
async fn finish_pod(h: &Harness, namespace: &str, pod: &Pod, outcome: &str) {
    common::set_pod_outcome(
        &h.client,
        namespace,
        pod.metadata.name.as_deref().unwrap(),
        outcome,
    )
    .await;
}

async fn namespace_gone(client: &kube::Client, namespace: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    eventually(&format!("namespace {namespace} is gone"), || async {
        api.get_opt(namespace).await.unwrap().is_none()
    })
    .await;
}

/// Removes a test's namespace however the test ended.
async fn cleanup(client: &kube::Client, namespace: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(namespace, &DeleteParams::background()).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => panic!("deleting {namespace}: {e}"),
    }
    namespace_gone(client, namespace).await;
}

/// A new issue's run, applied, with the cluster's own controllers done with
/// its objects: the test cluster provisions the agent-home claim, and its
/// binding changes the claim (a watch event, so a file to read at the next
/// resync). Returns the issue's namespace.
async fn applied_and_bound(h: &Harness, delivery: &str) -> String {
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    trigger(h, issue, delivery).await;
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(h.client.clone(), &namespace);
    eventually("the agent-home claim is bound", || async {
        claims
            .get("agent-home")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Bound")
    })
    .await;
    namespace
}

/// Agent image whose pods the node stand-in keeps Running until told.
fn holding(mut config: issueops_core::Config) -> issueops_core::Config {
    config.job.image = "registry.example/issueops/agent:hold".into();
    config
}

#[tokio::test]
async fn a_new_run_applies_ten_objects_and_a_resync_right_after_writes_nothing() {
    let mut config = holding(real_cluster_config());
    // Quantities as people write them; the API server stores 500m, 1, 1Gi, 2G.
    config.job.cpu_request = "0.5".into();
    config.job.cpu_limit = "1000m".into();
    config.job.memory_request = "1024Mi".into();
    config.job.memory_limit = "2G".into();
    let (h, log) = start(config).await;
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    let run = trigger(&h, issue, "real-apply-1").await;

    let report = h.reconciler.reconcile_once().await.unwrap();
    h.assert_no_audit_errors().await;
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.applied.len(), 10, "{report:?}");
    let applied: Vec<String> = writes(&log.lock().unwrap());
    assert_eq!(
        applied.iter().filter(|l| l.starts_with("PATCH ")).count(),
        10,
        "one server-side apply per object: {applied:?}"
    );
    assert_eq!(state(&h, &run).await, "applied");

    // The objects are ours by server-side apply, field manager "issueops".
    let job = Api::<Job>::namespaced(h.client.clone(), &namespace)
        .get(&format!("run-{run}"))
        .await
        .unwrap();
    let managers: Vec<(String, String)> = job
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|f| {
            (
                f.manager.clone().unwrap_or_default(),
                f.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("issueops".into(), "Apply".into())),
        "{managers:?}"
    );
    let resources = job.spec.unwrap().template.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(
        resources.requests.unwrap()["cpu"].0,
        "500m",
        "normalised by the API server"
    );

    // No false drift: a full resync right after makes no write at all.
    log.lock().unwrap().clear();
    let resync = h.reconciler.resync(false).await.unwrap();
    assert!(resync.cycle.converged(), "{resync:?}");
    assert!(resync.cycle.applied.is_empty(), "{resync:?}");
    assert!(resync.cycle.deleted.is_empty(), "{resync:?}");
    assert_eq!(resync.live_objects, 10);
    assert_eq!(writes(&log.lock().unwrap()), Vec::<String>::new());

    cleanup(&h.client, &namespace).await;
    h.finish().await;
}

#[tokio::test]
async fn drift_by_another_field_manager_is_found_and_corrected_by_the_watched_resync() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    use kube::api::{Patch, PatchParams};
    let (h, log) = start(holding(real_cluster_config())).await;
    let namespace = applied_and_bound(&h, "real-drift-1").await;

    // With the watches running, a resync lists nothing. What the applies
    // answered was checked then; the first resync reads only the file of the
    // one object changed since (the claim, bound by the controller), and
    // writes nothing.
    let _watches = h.reconciler.watch();
    let first = h.reconciler.resync(false).await.unwrap();
    assert_eq!(first.list_calls, 0, "{first:?}");
    assert_eq!(first.files_read, 1, "{first:?}");
    assert!(first.cycle.applied.is_empty(), "{first:?}");

    // `kubectl edit`: a merge patch by field manager kubectl-edit that
    // changes a value issueops applied and removes a label it applied.
    let quotas: Api<ResourceQuota> = Api::namespaced(h.client.clone(), &namespace);
    let edited = quotas
        .patch(
            "issueops-quota",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {"issueops.dev/scope": null}},
                "spec": {"hard": {"pods": "99"}}
            })),
        )
        .await
        .unwrap();
    let reference = format!("ResourceQuota/{namespace}/issueops-quota");
    let version: u64 = edited.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        h.reconciler
            .inventory()
            .wait_for(&reference, version, std::time::Duration::from_secs(30))
            .await,
        "the watch never delivered the edit"
    );

    log.lock().unwrap().clear();
    let repaired = h.reconciler.resync(false).await.unwrap();
    assert_eq!(repaired.list_calls, 0, "{repaired:?}");
    assert_eq!(
        repaired.files_read, 1,
        "only the edited object's file is read"
    );
    assert_eq!(repaired.cycle.applied, vec![reference.clone()]);
    assert_eq!(
        writes(&log.lock().unwrap()),
        vec![format!(
            "PATCH /api/v1/namespaces/{namespace}/resourcequotas/issueops-quota"
        )],
        "one apply, no LIST"
    );
    let quota = quotas.get("issueops-quota").await.unwrap();
    assert_eq!(quota.spec.unwrap().hard.unwrap()["pods"].0, "4");
    assert!(quota
        .metadata
        .labels
        .unwrap()
        .contains_key("issueops.dev/scope"));
    let audit = h.audit().await;
    let row = audit
        .iter()
        .rev()
        .find(|r| r.kind == kind::APPLY && r.object.as_deref() == Some(reference.as_str()))
        .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&row.detail).unwrap();
    let why = detail["resync"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("kubectl-edit"), "{why}");
    let again = h.reconciler.resync(false).await.unwrap();
    assert!(again.cycle.applied.is_empty(), "{again:?}");

    cleanup(&h.client, &namespace).await;
    h.finish().await;
}

#[tokio::test]
async fn a_restart_keeps_the_resync_verdicts_and_still_catches_what_changed_while_down() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    use kube::api::{Patch, PatchParams};
    let config = holding(real_cluster_config());
    let (h, _log) = start(config.clone()).await;
    let namespace = applied_and_bound(&h, "real-restart-1").await;
    // The first run's resync: what the applies verified needs no read.
    let watches = h.reconciler.watch();
    let first = h.reconciler.resync(false).await.unwrap();
    assert!(
        first.cycle.converged() && first.cycle.applied.is_empty(),
        "{first:?}"
    );
    drop(watches);

    // While issueops is down, someone edits an object it applied.
    let quotas: Api<ResourceQuota> = Api::namespaced(h.client.clone(), &namespace);
    quotas
        .patch(
            "issueops-quota",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({ "spec": {"hard": {"pods": "99"}} })),
        )
        .await
        .unwrap();

    // A new process: a new inventory, filled by its watches' first lists.
    let restarted = || {
        issueops_reconciler::Reconciler::new(h.store.clone(), h.repo.clone(), h.client.clone())
            .with_instance(config.instance.clone())
            .with_cluster(&config.cluster)
    };
    let second = restarted();
    let watches = second.watch();
    let after_restart = second.resync(false).await.unwrap();
    assert_eq!(after_restart.live_objects, 10, "{after_restart:?}");
    assert_eq!(
        after_restart.files_read, 1,
        "only the object edited while down is read: {after_restart:?}"
    );
    let reference = format!("ResourceQuota/{namespace}/issueops-quota");
    assert_eq!(after_restart.cycle.applied, vec![reference]);
    assert_eq!(
        quotas
            .get("issueops-quota")
            .await
            .unwrap()
            .spec
            .unwrap()
            .hard
            .unwrap()["pods"]
            .0,
        "4"
    );
    drop(watches);

    // The repair's apply was verified and kept too: the next start reads nothing.
    let third = restarted();
    let _watches = third.watch();
    let quiet = third.resync(false).await.unwrap();
    assert_eq!(
        (quiet.files_read, quiet.cycle.applied.len()),
        (0, 0),
        "{quiet:?}"
    );

    cleanup(&h.client, &namespace).await;
    h.finish().await;
}

#[tokio::test]
async fn a_run_goes_running_succeeded_then_pruned_job_first_namespace_last() {
    let mut config = holding(real_cluster_config());
    config.lifecycle.run_retention_seconds = 0;
    config.lifecycle.issue_idle_seconds = 0;
    let (h, log) = start(config).await;
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    let run = trigger(&h, issue, "real-life-1").await;
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());

    // The real Job controller creates the pod; the stand-in runs it.
    let pod = run_pod(&h, &namespace, &run).await;
    observe_until(&h, &run, "running").await;
    finish_pod(&h, &namespace, &pod, "succeed").await;
    observe_until(&h, &run, "succeeded").await;

    let pruned = h
        .control_plane
        .prune_due(issueops_core::now_ms() + 1)
        .await
        .unwrap();
    assert_eq!(pruned.len(), 1);
    log.lock().unwrap().clear();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.deleted.len(), 10, "{report:?}");
    let deletes: Vec<String> = writes(&log.lock().unwrap())
        .into_iter()
        .filter(|l| l.starts_with("DELETE "))
        .collect();
    assert!(
        deletes.first().is_some_and(|d| d.contains("/jobs/")),
        "the Job first: {deletes:?}"
    );
    assert!(
        deletes
            .last()
            .is_some_and(|d| d.ends_with(&format!("/namespaces/{namespace}"))),
        "the namespace last: {deletes:?}"
    );
    // The namespace controller empties it, then it is gone.
    let ns = Api::<Namespace>::all(h.client.clone())
        .get_opt(&namespace)
        .await
        .unwrap();
    if let Some(ns) = ns {
        assert_eq!(
            ns.status.and_then(|s| s.phase).as_deref(),
            Some("Terminating")
        );
    }
    namespace_gone(&h.client, &namespace).await;

    let audit = h.audit().await;
    let deleted: Vec<&str> = audit
        .iter()
        .filter(|r| r.kind == kind::DELETE && r.outcome == "deleted")
        .filter_map(|r| r.object.as_deref())
        .collect();
    assert_eq!(deleted.len(), 10, "{deleted:?}");
    assert_eq!(deleted[0], format!("Job/{namespace}/run-{run}"));
    assert_eq!(*deleted.last().unwrap(), format!("Namespace/{namespace}"));
    assert!(audit
        .iter()
        .any(|r| r.kind == kind::JOB_STATUS && r.outcome == "succeeded"));
    h.finish().await;
}

/// A Job deleted by a person (while its run runs) cancels the run and is
/// never applied again (its apply is audited once, ever), and the issue
/// takes a new run. Each of the two guards is tried where it stands alone:
/// - a resync before the observer has seen the deletion (the run still
///   `running`) must not re-create it. Catches `if self.job_started(&object)`
///   in `reconciler/src/resync.rs` made `if false`;
/// - a cycle that applies the Job's file again (a person's commit touching
///   it, after the issue's next run started) must skip it. Catches `if
///   finished` in `Reconciler::execute` made `if false`.
#[tokio::test]
async fn a_job_deleted_by_a_person_is_not_recreated_and_the_issue_is_free_again() {
    let (h, _log) = start(holding(real_cluster_config())).await;
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    let run = trigger(&h, issue, "real-deleted-1").await;
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    run_pod(&h, &namespace, &run).await;
    observe_until(&h, &run, "running").await;

    // A person deletes the active Job (as `kubectl delete job` does).
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), &namespace);
    let job_name = format!("run-{run}");
    jobs.delete(&job_name, &DeleteParams::background())
        .await
        .unwrap();
    eventually("the Job is gone", || async {
        jobs.get_opt(&job_name).await.unwrap().is_none()
    })
    .await;
    // A resync that comes before the observer: the run still says running.
    assert_eq!(state(&h, &run).await, "running");
    let early = h.reconciler.resync(false).await.unwrap();
    assert!(early.cycle.applied.is_empty(), "{early:?}");
    assert!(jobs.get_opt(&job_name).await.unwrap().is_none());

    observe_until(&h, &run, "cancelled").await;
    assert!(
        run_reason(&h, &run)
            .await
            .contains("deleted outside issueops"),
        "{}",
        run_reason(&h, &run).await
    );
    // Neither a resync nor a cycle brings it back.
    let resync = h.reconciler.resync(false).await.unwrap();
    assert!(resync.cycle.converged(), "{resync:?}");
    assert!(resync.cycle.applied.is_empty(), "{resync:?}");
    assert!(jobs.get_opt(&job_name).await.unwrap().is_none());

    // The issue takes a new run.
    let next = trigger(&h, issue, "real-deleted-2").await;
    assert_eq!(state(&h, &next).await, "committed");
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    assert!(jobs
        .get_opt(&format!("run-{next}"))
        .await
        .unwrap()
        .is_some());
    run_pod(&h, &namespace, &next).await;
    observe_until(&h, &next, "running").await;

    // And it stays so when its file is applied again: a person's commit
    // touches the deleted Job's file (the cycle applies what a commit changed).
    let head = h.repo.head().unwrap().unwrap();
    let files = h.repo.files_at(&head).unwrap();
    let (path, content) = files
        .iter()
        .find(|(p, _)| p.ends_with(&format!("runs/{run}/job.yaml")))
        .expect("the deleted run's Job file is still in the state repo");
    let touched = format!(
        "# touched by a person\n{}",
        String::from_utf8_lossy(content)
    );
    h.repo
        .commit(&issueops_core::state_repo::CommitRequest {
            subject: "touch an old Job file".into(),
            body: String::new(),
            trailers: vec![("Actor".into(), "a-person".into())],
            changes: vec![issueops_core::state_repo::Change::Write {
                path: path.clone(),
                content: touched.into_bytes(),
            }],
        })
        .unwrap();
    let cycle = h.reconciler.reconcile_once().await.unwrap();
    assert!(cycle.applied.is_empty(), "{cycle:?}");
    assert!(
        cycle
            .skipped
            .contains(&format!("Job/{namespace}/{job_name}")),
        "{cycle:?}"
    );
    assert!(
        jobs.get_opt(&job_name).await.unwrap().is_none(),
        "the deleted Job came back"
    );
    assert_eq!(state(&h, &run).await, "cancelled");
    let applied_jobs: Vec<_> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| {
            r.kind == kind::APPLY
                && r.outcome == "applied"
                && r.object.as_deref() == Some(&format!("Job/{namespace}/{job_name}"))
        })
        .collect();
    assert_eq!(applied_jobs.len(), 1, "{applied_jobs:?}");

    cleanup(&h.client, &namespace).await;
    h.finish().await;
}

#[tokio::test]
async fn an_existing_object_without_our_labels_is_never_taken_over_nor_deleted() {
    let mut config = real_cluster_config();
    config.lifecycle.run_retention_seconds = 0;
    config.lifecycle.issue_idle_seconds = 0;
    let (h, _log) = start(config).await;
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    // Someone made a namespace with our name, and an `agent` ServiceAccount in it.
    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(namespace.clone());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(h.client.clone(), &namespace);
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some("agent".into());
    accounts.create(&PostParams::default(), &sa).await.unwrap();

    let run = trigger(&h, issue, "real-takeover-1").await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    h.assert_no_audit_errors().await;
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(state(&h, &run).await, "failed");
    let reason = run_reason(&h, &run).await;
    assert!(
        reason.contains(&format!(
            "Namespace/{namespace} already exists and is not managed by this issueops install"
        )),
        "{reason}"
    );
    let audit = h.audit().await;
    assert!(
        audit.iter().any(|r| r.outcome == "refused-not-ours"
            && r.object.as_deref() == Some(&format!("Namespace/{namespace}"))),
        "{audit:?}"
    );
    // Nothing of theirs carries our labels, and no Job was made.
    let sa = accounts.get("agent").await.unwrap();
    assert!(sa.metadata.labels.unwrap_or_default().is_empty());
    let ns = namespaces.get(&namespace).await.unwrap();
    assert!(!ns
        .metadata
        .labels
        .unwrap_or_default()
        .contains_key("app.kubernetes.io/managed-by"));
    assert!(Api::<Job>::namespaced(h.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // Pruning the failed run's issue deletes nothing of theirs.
    h.control_plane
        .prune_due(issueops_core::now_ms() + 1)
        .await
        .unwrap();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    let deleted: Vec<_> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == kind::DELETE && r.outcome == "deleted")
        .collect();
    assert!(deleted.is_empty(), "{deleted:?}");
    assert!(accounts.get_opt("agent").await.unwrap().is_some());
    assert!(namespaces.get_opt(&namespace).await.unwrap().is_some());

    cleanup(&h.client, &namespace).await;
    h.finish().await;
}

#[tokio::test]
async fn a_stranger_in_the_cluster_is_not_an_orphan_of_ours() {
    // Two installs on one cluster: a resync of one never prunes the other's.
    let (a, _) = start(holding(real_cluster_config())).await;
    let (b, _) = start(holding(real_cluster_config())).await;
    let (issue_a, issue_b) = (unique_issue(), unique_issue());
    trigger(&a, issue_a, "real-two-a").await;
    trigger(&b, issue_b, "real-two-b").await;
    assert!(a.reconciler.reconcile_once().await.unwrap().converged());
    assert!(b.reconciler.reconcile_once().await.unwrap().converged());
    let r = a.reconciler.resync(false).await.unwrap();
    assert!(r.cycle.deleted.is_empty(), "{r:?}");
    assert_eq!(r.live_objects, 10, "only its own objects are listed");
    for (h, issue) in [(&a, issue_a), (&b, issue_b)] {
        cleanup(&h.client, &naming::namespace_for_issue(REPO, issue)).await;
    }
    a.finish().await;
    b.finish().await;
}

#[tokio::test]
async fn the_cluster_is_the_kubernetes_release_scripts_cluster_built_from_source() {
    // v1.37 unless ISSUEOPS_KUBE_MINOR picked the oldest supported minor.
    let expected = std::env::var("ISSUEOPS_TEST_KUBE_VERSION").unwrap();
    let client = kube::Client::try_from(real_config().await).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, expected, "{version:?}");
    let minor = expected
        .trim_start_matches("v1.")
        .split('.')
        .next()
        .unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", minor)
    );
    assert!(real_cluster().volumes.is_absolute());
}

#[tokio::test]
async fn the_agent_token_reaches_the_pod_as_a_file_and_a_refresh_shows_in_it() {
    const FIRST: &str = "ghs_realCLUSTERfirstTOKEN000001";
    const SECOND: &str = "ghs_realCLUSTERsecondTOKEN00002";
    let server = common::fake_github_app(&[
        (FIRST, "2030-01-01T00:10:00Z"),
        (SECOND, "2030-01-01T01:00:00Z"),
    ])
    .await;
    let config = holding(real_cluster_config());
    let (mut h, _log) = start(config.clone()).await;
    h.reconciler =
        issueops_reconciler::Reconciler::new(h.store.clone(), h.repo.clone(), h.client.clone())
            .with_instance(config.instance.clone())
            .with_credentials(common::github_app_client(&server), "issueops-github-token");
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    let run = trigger(&h, issue, "real-token-1").await;
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());

    // The Secret is there before the Job, so before any pod of it.
    let secret =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), &namespace)
            .get("issueops-github-token")
            .await
            .unwrap();
    let job = Api::<Job>::namespaced(h.client.clone(), &namespace)
        .get(&format!("run-{run}"))
        .await
        .unwrap();
    let created = |m: &kube::core::ObjectMeta| m.creation_timestamp.clone().unwrap().0;
    assert!(created(&secret.metadata) <= created(&job.metadata));

    // The pod reads it from a Secret volume, not from an env var frozen at start.
    let pod = run_pod(&h, &namespace, &run).await;
    let spec = pod.spec.clone().unwrap();
    let env = spec.containers[0].env.clone().unwrap_or_default();
    assert!(env.iter().all(|e| e
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .is_none()));
    assert!(env.iter().any(|e| e.name == "GITHUB_TOKEN_FILE"
        && e.value.as_deref() == Some("/var/run/secrets/issueops/github/token")));
    let volume = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "github-token")
        .unwrap();
    assert_eq!(
        volume.secret.unwrap().secret_name.as_deref(),
        Some("issueops-github-token")
    );

    let file = real_cluster()
        .volumes
        .join(&namespace)
        .join(pod.metadata.name.as_deref().unwrap())
        .join("github-token/token");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    eventually("the token file holds the first token", || async {
        read() == FIRST
    })
    .await;
    observe_until(&h, &run, "running").await;

    // Ten minutes before it expires, the reconciler replaces it; the file follows.
    let refreshed = h
        .reconciler
        .refresh_credentials(1_893_456_000)
        .await
        .unwrap();
    assert_eq!(refreshed.minted, vec![namespace.clone()]);
    eventually("the token file holds the refreshed token", || async {
        read() == SECOND
    })
    .await;

    cleanup(&h.client, &namespace).await;
    h.finish().await;
}

#[tokio::test]
async fn the_agent_pod_spec_is_accepted_and_its_result_decides_the_run() {
    let (h, _log) = start(holding(real_cluster_config())).await;
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    let run = trigger(&h, issue, "real-agent-1").await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    h.assert_no_audit_errors().await;

    // What the API server stored: the Job's pod spec as the runner needs it.
    let job = Api::<Job>::namespaced(h.client.clone(), &namespace)
        .get(&format!("run-{run}"))
        .await
        .unwrap();
    let spec = job.spec.unwrap();
    let policy = spec.pod_failure_policy.expect("podFailurePolicy kept");
    let final_exits: Vec<_> = policy
        .rules
        .iter()
        .map(|r| {
            let codes = r.on_exit_codes.as_ref().unwrap();
            (
                r.action.as_str(),
                codes.container_name.clone().unwrap_or_default(),
                codes.values.clone(),
            )
        })
        .collect();
    assert_eq!(
        final_exits,
        ["clone", "agent", "publish"].map(|c| ("FailJob", c.to_string(), vec![1, 2, 3]))
    );
    let pod = run_pod(&h, &namespace, &run).await;
    let pod_spec = pod.spec.clone().unwrap();
    let volume = |name: &str| {
        pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    assert_eq!(
        volume("github-token")
            .secret
            .unwrap()
            .secret_name
            .as_deref(),
        Some("issueops-github-token")
    );
    assert_eq!(
        volume("prompt").config_map.unwrap().name,
        format!("run-{run}-prompt")
    );
    assert_eq!(
        volume("agent-home")
            .persistent_volume_claim
            .unwrap()
            .claim_name,
        "agent-home"
    );
    // Each Secret volume projects one key: the token's only the token, the
    // agent's only the model API key.
    let keys = |name: &str| -> Vec<String> {
        let secret = volume(name).secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("issueops-github-token"));
        secret.items.unwrap().into_iter().map(|i| i.key).collect()
    };
    assert_eq!(keys("github-token"), ["token"]);
    assert_eq!(keys("agent-api-key"), ["agent-api-key"]);
    // The steps, in order; the agent's container has no token mount and no
    // variable naming one, the others no model API key.
    let steps: Vec<_> = pod_spec
        .init_containers
        .iter()
        .flatten()
        .chain(&pod_spec.containers)
        .collect();
    assert_eq!(
        steps.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["clone", "agent", "publish"]
    );
    assert_eq!(
        pod_spec.containers.len(),
        1,
        "publish is the only main container"
    );
    for container in &steps {
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        let env: Vec<&str> = container
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        let is_agent = container.name == "agent";
        assert_eq!(mounts.contains(&"github-token"), !is_agent, "{mounts:?}");
        assert_eq!(env.contains(&"GITHUB_TOKEN_FILE"), !is_agent, "{env:?}");
        assert_eq!(mounts.contains(&"handoff"), !is_agent, "{mounts:?}");
        assert_eq!(mounts.contains(&"agent-api-key"), is_agent, "{mounts:?}");
        assert_eq!(mounts.contains(&"agent-home"), is_agent, "{mounts:?}");
        assert_eq!(
            container.args.as_deref(),
            Some(&[container.name.clone()][..])
        );
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let sc = container.security_context.clone().unwrap();
        assert_eq!(
            (
                sc.run_as_non_root,
                sc.read_only_root_filesystem,
                sc.allow_privilege_escalation
            ),
            (Some(true), Some(true), Some(false))
        );
    }
    let publish_workspace = steps[2]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "workspace")
        .unwrap();
    assert_eq!(
        publish_workspace.read_only,
        Some(true),
        "publish reads the agent's work as data"
    );
    let claim = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
        h.client.clone(),
        &namespace,
    )
    .get("agent-home")
    .await
    .unwrap();
    assert_eq!(claim.spec.unwrap().access_modes.unwrap(), ["ReadWriteOnce"]);
    let prompt =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(h.client.clone(), &namespace)
            .get(&format!("run-{run}-prompt"))
            .await
            .unwrap();
    assert!(prompt.data.unwrap()["prompt.md"].contains("{{ issue.title }}"));

    // The runner exits 3 ("no changes"): the Job fails at once by its policy,
    // and the result it left makes the run a success that opened nothing.
    let message = r#"{"outcome":"no-changes","head_commit":"0123456789abcdef0123","reason":"the agent changed nothing","resumed_session":false}"#;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &namespace);
    let annotate = serde_json::json!({ "metadata": { "annotations": {
        "standin.issueops.dev/termination-message": message,
        "standin.issueops.dev/outcome": "fail",
    } } });
    pods.patch(
        pod.metadata.name.as_deref().unwrap(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&annotate),
    )
    .await
    .unwrap();
    observe_until(&h, &run, "succeeded").await;
    let result = h
        .store
        .run_result(&run)
        .await
        .unwrap()
        .expect("result recorded");
    assert_eq!(result.outcome, "no-changes");
    assert_eq!(result.head_commit.as_deref(), Some("0123456789abcdef0123"));
    let audit = h.store.audit_rows_for_run(&run).await.unwrap();
    assert!(audit
        .iter()
        .any(|r| r.kind == kind::AGENT_RESULT && r.outcome == "no-changes"));

    cleanup(&h.client, &namespace).await;
    h.finish().await;
}

/// Leader election on a real `coordination.k8s.io` Lease: one holder at a
/// time; a standby takes over once the holder stops renewing for the lease
/// duration, and at once when the holder releases it.
#[tokio::test]
async fn the_reconciler_lease_has_one_holder_and_passes_on() {
    use issueops_reconciler::lease::LeaseLock;
    let client = kube::Client::try_from(real_config().await).unwrap();
    let name = format!("issueops-test-{}", hex::encode(rand::random::<[u8; 4]>()));
    let duration = std::time::Duration::from_secs(2);
    let a = LeaseLock::new(client.clone(), "default", &name, "replica-a", duration);
    let b = LeaseLock::new(client.clone(), "default", &name, "replica-b", duration);
    assert!(
        a.acquire_or_renew().await.unwrap(),
        "the first candidate wins"
    );
    assert!(!b.acquire_or_renew().await.unwrap(), "two holders");
    assert!(a.acquire_or_renew().await.unwrap(), "the holder renews");
    // a stops renewing (it died): b takes over after the duration, not before.
    let stopped = std::time::Instant::now();
    let took_over = common::wait_for(
        "the standby takes the Lease over",
        std::time::Duration::from_secs(10),
        || async {
            b.acquire_or_renew()
                .await
                .unwrap()
                .then_some(stopped.elapsed())
        },
    )
    .await;
    assert!(took_over >= duration, "taken over after {took_over:?}");
    assert!(
        took_over < duration * 2,
        "took {took_over:?} for a {duration:?} Lease"
    );
    assert!(
        !a.acquire_or_renew().await.unwrap(),
        "the old holder is out"
    );
    let lease =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), "default")
            .get(&name)
            .await
            .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // Released on shutdown: the standby does not wait for the duration.
    b.release().await.unwrap();
    assert!(a.acquire_or_renew().await.unwrap());
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client, "default")
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Issue namespaces enforce Pod Security `restricted` (the API server refuses
/// a privileged pod there), and the egress policy leaves the cluster's own
/// ranges out of its HTTPS rule.
#[tokio::test]
async fn issue_namespaces_enforce_restricted_pods_and_keep_egress_off_cluster_ranges() {
    let (h, _) = start(holding(real_cluster_config())).await;
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    trigger(&h, issue, "real-psa-1").await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    let ns = Api::<Namespace>::all(h.client.clone())
        .get(&namespace)
        .await
        .unwrap();
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    // A plain pod: root allowed, privilege escalation, no seccomp profile.
    let privileged: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "unhardened" },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] }
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(h.client.clone(), &namespace)
        .create(&PostParams::default(), &privileged)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "{refused}"
    );
    let policy = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(
        h.client.clone(),
        &namespace,
    )
    .get("issueops-default-deny")
    .await
    .unwrap();
    let egress = policy.spec.unwrap().egress.unwrap();
    let https = egress
        .iter()
        .find(|r| {
            r.ports.iter().flatten().any(|p| {
                p.port == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(443))
            })
        })
        .unwrap();
    let v4 = https
        .to
        .iter()
        .flatten()
        .filter_map(|peer| peer.ip_block.as_ref())
        .find(|b| b.cidr == "0.0.0.0/0")
        .unwrap();
    let except = v4.except.clone().unwrap_or_default();
    for range in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
    ] {
        assert!(
            except.iter().any(|e| e == range),
            "{range} not excluded: {except:?}"
        );
    }
    // IPv6 too, by default: on a dual-stack cluster `::/0` without these
    // would reach every in-cluster HTTPS service.
    let v6 = https
        .to
        .iter()
        .flatten()
        .filter_map(|peer| peer.ip_block.as_ref())
        .find(|b| b.cidr == "::/0")
        .unwrap();
    let except = v6.except.clone().unwrap_or_default();
    for range in ["fc00::/7", "fe80::/10", "::1/128"] {
        assert!(
            except.iter().any(|e| e == range),
            "{range} not excluded: {except:?}"
        );
    }
    h.finish().await;
}

/// A namespace of an issue's name that someone else made is not ours: no
/// object goes into it, the run fails with the reason, and nothing of it is
/// deleted later.
#[tokio::test]
async fn a_namespace_someone_else_made_is_never_used() {
    let (h, _) = start(holding(real_cluster_config())).await;
    let issue = unique_issue();
    let namespace = naming::namespace_for_issue(REPO, issue);
    let theirs: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": namespace, "labels": { "team": "someone-else" } }
    }))
    .unwrap();
    Api::<Namespace>::all(h.client.clone())
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let run = trigger(&h, issue, "real-foreign-ns-1").await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(state(&h, &run).await, "failed");
    assert!(
        run_reason(&h, &run)
            .await
            .contains("not managed by this issueops install"),
        "{}",
        run_reason(&h, &run).await
    );
    let jobs = Api::<Job>::namespaced(h.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty());
    Api::<Namespace>::all(h.client.clone())
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    h.finish().await;
}

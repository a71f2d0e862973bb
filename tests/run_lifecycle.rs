//! A run's whole life through the state repo: observe, prune, rollback,
//! revise, one active run per issue, closing, and the guard on mass deletion.

mod common;

use common::{labeled, set_job_status, test_config, Db, Harness, REPO};
use issueops_core::config::ActiveRunPolicy;
use issueops_core::naming;
use issueops_core::state_repo::issue_dir;
use issueops_reconciler::observe::observe_jobs;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;

fn ns() -> String {
    naming::namespace_for_issue(REPO, 1)
}

async fn trigger(h: &Harness, delivery: &str, label: &str) -> String {
    let (status, text) = h
        .post_signed(
            "issues",
            delivery,
            &labeled("issues/labeled.payload.json", label),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    h.control_plane.process_pending().await.unwrap();
    naming::run_id_for_delivery(delivery)
}

async fn event(h: &Harness, delivery: &str, fixture: &str, action: &str, label: &str) {
    let mut v: serde_json::Value = serde_json::from_slice(&labeled(fixture, label)).unwrap();
    v["action"] = action.into();
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(h.post_signed("issues", delivery, &body).await.0, 202);
    h.control_plane.process_pending().await.unwrap();
}

async fn state(h: &Harness, run: &str) -> String {
    h.store.get_run(run).await.unwrap().unwrap().state
}

async fn job_exists(h: &Harness, run: &str) -> bool {
    Api::<Job>::namespaced(h.client.clone(), &ns())
        .get_opt(&format!("run-{run}"))
        .await
        .unwrap()
        .is_some()
}

fn lifecycle_config(retention: u64, idle: u64) -> issueops_core::Config {
    let mut c = test_config();
    c.lifecycle.run_retention_seconds = retention;
    c.lifecycle.issue_idle_seconds = idle;
    c
}

async fn run_goes_label_to_pruned_and_rollback_does_not_rerun_it(db: Db) {
    let h = Harness::start_configured(db, lifecycle_config(0, 0)).await;
    let run = trigger(&h, "life-1", "run:dev").await;
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    assert_eq!(state(&h, &run).await, "applied");

    set_job_status(&h.client, &ns(), &run, "running").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    assert_eq!(state(&h, &run).await, "running");
    set_job_status(&h.client, &ns(), &run, "succeeded").await;
    let seen = observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    assert_eq!(seen.list_calls, 1, "one LIST, no GET per Job");
    assert_eq!(state(&h, &run).await, "succeeded");
    // Observing again changes nothing (states only move forward).
    assert!(
        observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
            .await
            .unwrap()
            .moved
            .is_empty()
    );

    // Retention 0: the run is due; the issue has no other run, so it goes too.
    let now = issueops_core::now_ms() + 1;
    let pruned = h.control_plane.prune_due(now).await.unwrap();
    assert_eq!(pruned.len(), 1);
    let prune_commit = pruned[0].clone();
    let info = h.repo.commit_info(&prune_commit).unwrap();
    assert!(
        info.trailers
            .contains(&("Action".into(), "prune-issue".into())),
        "{:?}",
        info.trailers
    );
    assert!(info.trailers.contains(&("Run-Id".into(), run.clone())));
    assert_eq!(state(&h, &run).await, "pruned");
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.deleted.len(), 10, "{report:?}");
    assert_eq!(
        report.deleted[0],
        format!("Job/{}/run-{run}", ns()),
        "Jobs first, namespace last"
    );
    assert!(Api::<Namespace>::all(h.client.clone())
        .get_opt(&ns())
        .await
        .unwrap()
        .is_none());
    assert!(
        h.control_plane.prune_due(now).await.unwrap().is_empty(),
        "pruning twice does nothing"
    );

    // Every step is in the audit table and in git.
    let kinds: Vec<String> = h
        .store
        .audit_rows_for_run(&run)
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{}/{}", r.kind, r.outcome))
        .collect();
    for expected in [
        "decision/accepted",
        "commit/committed",
        "apply/applied",
        "job.status/running",
        "job.status/succeeded",
        "prune/prune-issue",
        "delete/deleted",
    ] {
        assert!(
            kinds.contains(&expected.to_string()),
            "missing {expected} in {kinds:?}"
        );
    }
    assert_eq!(h.repo.log().unwrap().len(), 2);

    // Roll back the prune: the namespace objects come back, the Job does not run again.
    let start_commit = h.repo.log().unwrap()[1].clone();
    let rollback = h
        .control_plane
        .rollback(&start_commit, "alice")
        .await
        .unwrap()
        .unwrap();
    let info = h.repo.commit_info(&rollback).unwrap();
    assert!(info.trailers.contains(&("Actor".into(), "alice".into())));
    assert!(info
        .trailers
        .contains(&("Rollback-To".into(), start_commit.clone())));
    assert_eq!(h.repo.log().unwrap().len(), 3, "history is kept");
    let report = h.reconciler.reconcile_once().await.unwrap();
    // The issue's eight objects and the run's prompt; its Job is skipped.
    assert_eq!(report.applied.len(), 9, "{report:?}");
    assert_eq!(report.skipped, vec![format!("Job/{}/run-{run}", ns())]);
    assert!(Api::<ServiceAccount>::namespaced(h.client.clone(), &ns())
        .get_opt("agent")
        .await
        .unwrap()
        .is_some());
    assert!(
        !job_exists(&h, &run).await,
        "a finished run's Job is never re-created"
    );
    // Nor by a full resync.
    let resync = h.reconciler.resync(false).await.unwrap();
    assert!(resync.cycle.applied.is_empty(), "{resync:?}");
    assert!(!job_exists(&h, &run).await);
    h.finish().await;
}

#[tokio::test]
async fn run_goes_label_to_pruned_and_rollback_does_not_rerun_it_on_sqlite() {
    run_goes_label_to_pruned_and_rollback_does_not_rerun_it(Db::Sqlite).await;
}

#[tokio::test]
async fn run_goes_label_to_pruned_and_rollback_does_not_rerun_it_on_postgres() {
    run_goes_label_to_pruned_and_rollback_does_not_rerun_it(Db::Postgres).await;
}

#[tokio::test]
async fn retention_keeps_recent_runs_and_idle_keeps_the_namespace() {
    let h = Harness::start_configured(Db::Sqlite, lifecycle_config(3600, 7 * 86400)).await;
    let run = trigger(&h, "ret-1", "run:dev").await;
    h.reconciler.reconcile_once().await.unwrap();
    set_job_status(&h.client, &ns(), &run, "failed").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    let failed = h.store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(failed.state, "failed");
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded: too slow"));
    let now = issueops_core::now_ms();
    assert!(
        h.control_plane.prune_due(now).await.unwrap().is_empty(),
        "within retention"
    );
    let later = now + 3601 * 1000;
    let pruned = h.control_plane.prune_due(later).await.unwrap();
    let info = h.repo.commit_info(&pruned[0]).unwrap();
    assert!(
        info.trailers
            .contains(&("Action".into(), "prune-run".into())),
        "not idle yet: only the run goes"
    );
    assert!(h
        .repo
        .path_exists(&format!("{}/namespace.yaml", issue_dir(&ns())))
        .unwrap());
    assert!(!h
        .repo
        .path_exists(&format!("{}/runs/{run}", issue_dir(&ns())))
        .unwrap());
    // A week later the idle issue goes too.
    let idle = h
        .control_plane
        .prune_due(now + 8 * 86400 * 1000)
        .await
        .unwrap();
    assert_eq!(idle.len(), 1);
    assert!(!h.repo.path_exists(&issue_dir(&ns())).unwrap());
    h.finish().await;
}

#[tokio::test]
async fn revise_continues_the_earlier_runs_branch_or_is_refused() {
    let h = Harness::start(Db::Sqlite).await;
    trigger(&h, "rev-0", "run:dev:revise").await;
    let refused = h
        .audit()
        .await
        .into_iter()
        .rfind(|r| r.kind == "decision")
        .unwrap();
    assert_eq!(refused.outcome, "refused");
    assert!(refused.detail.contains("earlier run"), "{}", refused.detail);
    assert!(h.store.list_runs().await.unwrap().is_empty());

    let first = trigger(&h, "rev-1", "run:dev").await;
    h.reconciler.reconcile_once().await.unwrap();
    set_job_status(&h.client, &ns(), &first, "succeeded").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    let revise = trigger(&h, "rev-2", "run:dev:revise").await;
    let run = h.store.get_run(&revise).await.unwrap().unwrap();
    assert_eq!(
        (run.mode.as_str(), run.branch.as_str()),
        ("revise", "issueops/issue-1")
    );
    h.reconciler.reconcile_once().await.unwrap();
    let job = Api::<Job>::namespaced(h.client.clone(), &ns())
        .get(&format!("run-{revise}"))
        .await
        .unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let mode = env
        .iter()
        .find(|e| e.name == "ISSUEOPS_MODE")
        .and_then(|e| e.value.clone());
    assert_eq!(mode.as_deref(), Some("revise"));
    h.finish().await;
}

#[tokio::test]
async fn a_trigger_while_a_run_is_active_is_refused_by_default() {
    let h = Harness::start(Db::Sqlite).await;
    let first = trigger(&h, "one-1", "run:dev").await;
    let second = trigger(&h, "one-2", "run:dev").await;
    assert!(h.store.get_run(&second).await.unwrap().is_none());
    let last = h
        .audit()
        .await
        .into_iter()
        .rfind(|r| r.kind == "decision")
        .unwrap();
    assert_eq!(last.outcome, "refused");
    assert!(last.detail.contains(&first), "{}", last.detail);
    assert_eq!(h.repo.log().unwrap().len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn queued_triggers_start_first_in_first_out_when_the_active_run_ends() {
    let mut config = test_config();
    config.lifecycle.on_active_run = ActiveRunPolicy::Queue;
    let h = Harness::start_configured(Db::Sqlite, config).await;
    let first = trigger(&h, "q-1", "run:dev").await;
    let second = trigger(&h, "q-2", "run:dev").await;
    let third = trigger(&h, "q-3", "run:dev").await;
    assert_eq!(state(&h, &second).await, "queued");
    assert_eq!(state(&h, &third).await, "queued");
    h.reconciler.reconcile_once().await.unwrap();
    assert!(
        !job_exists(&h, &second).await,
        "never two Jobs at once for one issue"
    );

    set_job_status(&h.client, &ns(), &first, "succeeded").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    h.control_plane.process_pending().await.unwrap();
    assert_eq!(state(&h, &second).await, "committed");
    assert_eq!(state(&h, &third).await, "queued");
    h.reconciler.reconcile_once().await.unwrap();
    assert!(job_exists(&h, &second).await);
    assert!(!job_exists(&h, &third).await);
    h.finish().await;
}

#[tokio::test]
async fn closing_the_issue_cancels_its_run_and_prunes_its_namespace() {
    let h = Harness::start(Db::Sqlite).await;
    let run = trigger(&h, "close-1", "run:dev").await;
    h.reconciler.reconcile_once().await.unwrap();
    event(
        &h,
        "close-2",
        "issues/labeled.payload.json",
        "closed",
        "run:dev",
    )
    .await;
    let r = h.store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.reason.as_deref()),
        ("pruned", Some("issue closed"))
    );
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.deleted.len(), 10, "{report:?}");
    assert!(Api::<Namespace>::all(h.client.clone())
        .get_opt(&ns())
        .await
        .unwrap()
        .is_none());
    // Reopened: new triggers start runs again.
    event(
        &h,
        "close-3",
        "issues/reopened.payload.json",
        "reopened",
        "run:dev",
    )
    .await;
    let again = trigger(&h, "close-4", "run:dev").await;
    assert_eq!(state(&h, &again).await, "committed");
    h.finish().await;
}

#[tokio::test]
async fn unlabeling_is_recorded_and_cancels_only_when_configured() {
    let h = Harness::start(Db::Sqlite).await;
    let run = trigger(&h, "un-1", "run:dev").await;
    event(
        &h,
        "un-2",
        "issues/unlabeled.payload.json",
        "unlabeled",
        "run:dev",
    )
    .await;
    assert_eq!(state(&h, &run).await, "committed");
    let last = h
        .audit()
        .await
        .into_iter()
        .rfind(|r| r.kind == "decision")
        .unwrap();
    assert!(last.detail.contains("cancel_on_unlabel"), "{}", last.detail);
    h.finish().await;

    let mut config = test_config();
    config.lifecycle.cancel_on_unlabel = true;
    let h = Harness::start_configured(Db::Sqlite, config).await;
    let run = trigger(&h, "un-3", "run:dev").await;
    h.reconciler.reconcile_once().await.unwrap();
    event(
        &h,
        "un-4",
        "issues/unlabeled.payload.json",
        "unlabeled",
        "run:dev",
    )
    .await;
    assert_eq!(state(&h, &run).await, "cancelled");
    h.reconciler.reconcile_once().await.unwrap();
    assert!(!job_exists(&h, &run).await);
    h.finish().await;
}

#[tokio::test]
async fn an_emptied_state_repo_does_not_wipe_the_cluster_without_force() {
    let h = Harness::start(Db::Sqlite).await;
    // Five issues, 40 objects.
    for issue in 1..=5u64 {
        let mut v: serde_json::Value =
            serde_json::from_slice(&labeled("issues/labeled.payload.json", "run:dev")).unwrap();
        v["issue"]["number"] = issue.into();
        h.post_signed(
            "issues",
            &format!("empty-{issue}"),
            &serde_json::to_vec(&v).unwrap(),
        )
        .await;
    }
    h.control_plane.process_pending().await.unwrap();
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    let applied_head = h.store.last_applied_commit("default").await.unwrap();

    h.repo
        .commit(&issueops_core::state_repo::CommitRequest {
            subject: "oops".into(),
            body: String::new(),
            trailers: vec![],
            changes: vec![issueops_core::state_repo::Change::Remove {
                path: "issues".into(),
            }],
        })
        .unwrap();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(
        report
            .blocked
            .as_deref()
            .is_some_and(|r| r.contains("--force")),
        "{report:?}"
    );
    assert!(report.deleted.is_empty());
    assert_eq!(
        h.store.last_applied_commit("default").await.unwrap(),
        applied_head
    );
    assert!(Api::<Namespace>::all(h.client.clone())
        .get_opt(&ns())
        .await
        .unwrap()
        .is_some());
    let blocked = h
        .audit()
        .await
        .into_iter()
        .rfind(|r| r.kind == "reconcile")
        .unwrap();
    assert_eq!(blocked.outcome, "blocked-prune-safety");

    let forced = h.reconciler.reconcile(true).await.unwrap();
    assert_eq!(forced.deleted.len(), 50, "{forced:?}");
    assert!(Api::<Namespace>::all(h.client.clone())
        .get_opt(&ns())
        .await
        .unwrap()
        .is_none());
    h.finish().await;
}

#[tokio::test]
async fn resync_repairs_drift_and_deletes_orphans_but_never_unmanaged_objects() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams, PostParams};
    let h = Harness::start(Db::Sqlite).await;
    let run = trigger(&h, "drift-1", "run:dev").await;
    h.reconciler.reconcile_once().await.unwrap();
    let sa: Api<ServiceAccount> = Api::namespaced(h.client.clone(), &ns());
    sa.delete("agent", &Default::default()).await.unwrap();
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(h.client.clone(), &ns());
    // Another manager takes a field over. (kube-fake-client records field
    // ownership for applies only; tests/real_cluster.rs makes the same drift
    // with `kubectl edit`'s merge patch on the real API server.)
    quotas
        .patch(
            "issueops-quota",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": "issueops-quota", "namespace": ns()},
                "spec": {"hard": {"pods": "99"}}
            })),
        )
        .await
        .unwrap();
    // An orphan carrying our label, and someone else's object without it.
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &ns());
    let mut orphan = ConfigMap::default();
    orphan.metadata.name = Some("leftover".into());
    orphan.metadata.labels = Some(
        [
            (
                "app.kubernetes.io/managed-by".to_string(),
                "issueops".to_string(),
            ),
            ("issueops.dev/instance".to_string(), "default".to_string()),
        ]
        .into(),
    );
    cms.create(&PostParams::default(), &orphan).await.unwrap();
    let mut foreign = ConfigMap::default();
    foreign.metadata.name = Some("not-ours".into());
    cms.create(&PostParams::default(), &foreign).await.unwrap();

    let r = h.reconciler.resync(false).await.unwrap();
    assert!(r.cycle.converged(), "{r:?}");
    let mut applied = r.cycle.applied.clone();
    applied.sort();
    assert_eq!(
        applied,
        vec![
            format!("ResourceQuota/{}/issueops-quota", ns()),
            format!("ServiceAccount/{}/agent", ns())
        ]
    );
    assert_eq!(
        r.cycle.deleted,
        vec![format!("ConfigMap/{}/leftover", ns())]
    );
    assert_eq!(r.list_calls, 10, "one LIST per managed kind");
    assert!(sa.get_opt("agent").await.unwrap().is_some());
    let quota = quotas.get("issueops-quota").await.unwrap();
    assert_eq!(quota.spec.unwrap().hard.unwrap()["pods"].0, "4");
    assert!(
        cms.get_opt("not-ours").await.unwrap().is_some(),
        "unmanaged objects are never touched"
    );
    assert!(job_exists(&h, &run).await);
    // A converged cluster: a second resync changes nothing.
    let again = h.reconciler.resync(false).await.unwrap();
    assert!(
        again.cycle.applied.is_empty() && again.cycle.deleted.is_empty(),
        "{again:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_git_revert_pushed_by_a_person_works_like_a_rollback() {
    let h = Harness::start_configured(Db::Sqlite, lifecycle_config(0, 0)).await;
    let run = trigger(&h, "revert-1", "run:dev").await;
    h.reconciler.reconcile_once().await.unwrap();
    set_job_status(&h.client, &ns(), &run, "succeeded").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    h.control_plane
        .prune_due(issueops_core::now_ms() + 1)
        .await
        .unwrap();
    h.reconciler.reconcile_once().await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let bare = h.dir.path().join("state.git");
    let git = |args: &[&str]| {
        common::git_http::git(work.path(), args);
    };
    git(&["clone", "-q", bare.to_str().unwrap(), "."]);
    git(&["revert", "--no-edit", "HEAD"]);
    git(&["push", "-q", "origin", "main"]);

    let report = h.reconciler.reconcile_once().await.unwrap();
    // The issue's eight objects and the run's prompt; its Job is skipped.
    assert_eq!(report.applied.len(), 9, "{report:?}");
    assert_eq!(report.skipped.len(), 1);
    assert!(Api::<Namespace>::all(h.client.clone())
        .get_opt(&ns())
        .await
        .unwrap()
        .is_some());
    assert!(!job_exists(&h, &run).await);
    h.finish().await;
}

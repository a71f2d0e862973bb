//! A signed `run:dev` delivery, end to end on real parts: HTTP gateway →
//! inbox → control plane → git commit → reconciler → (fake) cluster → audit,
//! on SQLite and on PostgreSQL.

mod common;

use common::{fixture, labeled, Db, Harness, REPO};
use issueops_core::naming;
use issueops_core::state_repo::issue_dir;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;

const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

fn expected_files(ns: &str, run: &str) -> Vec<String> {
    let mut files: Vec<String> = [
        "agent-home",
        "limitrange",
        "namespace",
        "networkpolicy",
        "resourcequota",
        "role",
        "rolebinding",
        "serviceaccount",
    ]
    .iter()
    .map(|f| format!("{}/{f}.yaml", issue_dir(ns)))
    .collect();
    files.push(format!("{}/runs/{run}/job.yaml", issue_dir(ns)));
    files.push(format!("{}/runs/{run}/prompt.yaml", issue_dir(ns)));
    files.sort();
    files
}

async fn labeled_run_is_committed_applied_and_audited(db: Db) {
    let h = Harness::start(db).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let (status, text) = h.post_signed("issues", DELIVERY, &body).await;
    assert_eq!(status, 202, "{text}");

    assert_eq!(h.control_plane.process_pending().await.unwrap(), 1);
    let runs = h.store.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let ns = naming::namespace_for_issue(REPO, 1);
    assert_eq!(run.run_id, naming::run_id_for_delivery(DELIVERY));
    assert_eq!(run.namespace, ns);

    // Exactly one commit, with the expected files and trailers.
    let log = h.repo.log().unwrap();
    assert_eq!(log.len(), 1);
    let sha = run.commit_sha.clone().unwrap();
    assert_eq!(log[0], sha);
    let info = h.repo.commit_info(&sha).unwrap();
    let mut files = info.changed_files.clone();
    files.sort();
    assert_eq!(files, expected_files(&ns, &run.run_id));
    let trailers: Vec<(&str, &str)> = info
        .trailers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        trailers,
        vec![
            ("Delivery-Id", DELIVERY),
            ("Run-Id", run.run_id.as_str()),
            ("Issue", "Codertocat/Hello-World#1"),
            ("Actor", "Codertocat"),
            ("Action", "start-run"),
        ]
    );

    // The reconciler applies every object.
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.applied.len(), 10, "{report:?}");
    assert_eq!(
        report.applied[0],
        format!("Namespace/{ns}"),
        "cluster-scoped first"
    );
    let namespace = Api::<Namespace>::all(h.client.clone())
        .get(&ns)
        .await
        .unwrap();
    assert_eq!(
        namespace
            .metadata
            .labels
            .unwrap()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("issueops")
    );
    Api::<ServiceAccount>::namespaced(h.client.clone(), &ns)
        .get("agent")
        .await
        .unwrap();
    Api::<NetworkPolicy>::namespaced(h.client.clone(), &ns)
        .get("issueops-default-deny")
        .await
        .unwrap();
    let job = Api::<Job>::namespaced(h.client.clone(), &ns)
        .get(&format!("run-{}", run.run_id))
        .await
        .unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("ISSUEOPS_REPO").as_deref(), Some(REPO));
    assert_eq!(
        value("ISSUEOPS_RUN_ID").as_deref(),
        Some(run.run_id.as_str())
    );
    assert_eq!(
        h.store.get_run(&run.run_id).await.unwrap().unwrap().state,
        "applied"
    );

    // The run's audit rows link its delivery, decision, commit and every object.
    let rows = h.store.audit_rows_for_run(&run.run_id).await.unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        &kinds[..4],
        ["delivery.received", "decision", "decision", "commit"]
    );
    assert_eq!(rows[0].delivery_id.as_deref(), Some(DELIVERY));
    assert_eq!(rows[1].outcome, "authorized");
    assert!(
        rows[1].detail.contains("GitHub not configured"),
        "{}",
        rows[1].detail
    );
    assert_eq!(rows[2].outcome, "accepted");
    assert_eq!(rows[3].commit_sha.as_deref(), Some(sha.as_str()));
    let applied: Vec<&str> = rows
        .iter()
        .filter(|r| r.kind == "apply")
        .map(|r| r.object.as_deref().unwrap())
        .collect();
    assert_eq!(applied.len(), 10);
    for row in rows.iter().filter(|r| r.kind == "apply") {
        assert_eq!(row.outcome, "applied");
        assert_eq!(row.commit_sha.as_deref(), Some(sha.as_str()));
        assert_eq!(row.delivery_id.as_deref(), Some(DELIVERY));
        assert_eq!(row.actor.as_deref(), Some("Codertocat"));
    }

    // Redelivery, and the same event through the org hook: nothing new.
    let audit_before = h.audit().await.len();
    let (status, _) = h.post_signed("issues", DELIVERY, &body).await;
    assert_eq!(status, 200);
    let org_body = labeled("issues/labeled.with-organization.payload.json", "run:dev");
    let (status, _) = h.post_signed("issues", DELIVERY, &org_body).await;
    assert_eq!(status, 200);
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 0);
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(h.repo.log().unwrap().len(), 1);
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    assert_eq!(h.store.count_deliveries().await.unwrap(), 1);
    assert_eq!(h.audit().await.len(), audit_before);

    // A forged delivery: only a rejected-delivery audit row.
    let forged = issueops_gateway::sign(b"guessed", &body);
    let (status, _) = h
        .post(Some("issues"), Some("forged-1"), &body, Some(forged))
        .await;
    assert_eq!(status, 401);
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 0);
    let rows = h.audit().await;
    assert_eq!(rows.len(), audit_before + 1);
    let last = rows.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.outcome.as_str()),
        ("delivery.rejected", "rejected")
    );
    assert_eq!(
        last.delivery_id, None,
        "an unauthenticated id must not link to anything"
    );
    assert!(last.detail.contains("forged-1"));
    assert_eq!(h.store.count_deliveries().await.unwrap(), 1);
    assert_eq!(h.repo.log().unwrap().len(), 1);

    h.finish().await;
}

#[tokio::test]
async fn labeled_run_is_committed_applied_and_audited_on_sqlite() {
    labeled_run_is_committed_applied_and_audited(Db::Sqlite).await;
}

#[tokio::test]
async fn labeled_run_is_committed_applied_and_audited_on_postgres() {
    labeled_run_is_committed_applied_and_audited(Db::Postgres).await;
}

async fn second_run_commits_and_applies_only_its_job(db: Db) {
    let h = Harness::start(db).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    h.post_signed("issues", "delivery-a", &body).await;
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    // One run at a time: the first finishes before the second is triggered.
    let ns = naming::namespace_for_issue(REPO, 1);
    let first = naming::run_id_for_delivery("delivery-a");
    common::set_job_status(&h.client, &ns, &first, "succeeded").await;
    issueops_reconciler::observe::observe_jobs(
        &h.client,
        &h.store,
        issueops_core::DEFAULT_INSTANCE,
    )
    .await
    .unwrap();

    h.post_signed("issues", "delivery-b", &body).await;
    h.control_plane.process_pending().await.unwrap();
    let second = naming::run_id_for_delivery("delivery-b");
    let head = h.repo.log().unwrap()[0].clone();
    let info = h.repo.commit_info(&head).unwrap();
    let ns = naming::namespace_for_issue(REPO, 1);
    assert_eq!(
        info.changed_files,
        vec![
            format!("{}/runs/{second}/job.yaml", issue_dir(&ns)),
            format!("{}/runs/{second}/prompt.yaml", issue_dir(&ns))
        ]
    );
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(
        report.applied,
        vec![
            format!("ConfigMap/{ns}/run-{second}-prompt"),
            format!("Job/{ns}/run-{second}")
        ]
    );
    h.finish().await;
}

#[tokio::test]
async fn second_run_commits_and_applies_only_its_job_on_sqlite() {
    second_run_commits_and_applies_only_its_job(Db::Sqlite).await;
}

#[tokio::test]
async fn second_run_commits_and_applies_only_its_job_on_postgres() {
    second_run_commits_and_applies_only_its_job(Db::Postgres).await;
}

async fn audit_rows_cannot_be_changed_or_deleted(db: Db) {
    let h = Harness::start(db).await;
    let (status, _) = h
        .post_signed("ping", "ping-1", fixture("ping/payload.json").as_bytes())
        .await;
    assert_eq!(status, 202);
    let before = h.audit().await;
    assert!(!before.is_empty());
    let update = sqlx::query("UPDATE audit_events SET outcome = 'tampered'")
        .execute(h.store.pool())
        .await;
    let err = update
        .expect_err("UPDATE of an audit row must be refused")
        .to_string();
    assert!(err.contains("append-only"), "{err}");
    let delete = sqlx::query("DELETE FROM audit_events")
        .execute(h.store.pool())
        .await;
    assert!(delete
        .expect_err("DELETE must be refused")
        .to_string()
        .contains("append-only"));
    assert_eq!(h.audit().await, before);
    h.finish().await;
}

#[tokio::test]
async fn audit_rows_cannot_be_changed_or_deleted_on_sqlite() {
    audit_rows_cannot_be_changed_or_deleted(Db::Sqlite).await;
}

#[tokio::test]
async fn audit_rows_cannot_be_changed_or_deleted_on_postgres() {
    audit_rows_cannot_be_changed_or_deleted(Db::Postgres).await;
}

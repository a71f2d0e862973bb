//! The state repo's bucket layout (`issues/<bucket>/<namespace>/`): a repo in
//! the first layout is moved in one commit by the control plane, and the
//! reconciler applies and deletes nothing for it, so live runs are untouched.

mod common;

use common::{labeled, Db, Harness};
use issueops_core::naming;
use issueops_core::state_repo::{issue_dir, Change, CommitRequest};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;

fn by_hand(changes: Vec<Change>) -> CommitRequest {
    CommitRequest {
        subject: "by hand".into(),
        body: String::new(),
        trailers: Vec::new(),
        changes,
    }
}

/// A harness with one run committed and applied; its namespace.
async fn one_run_applied() -> (Harness, String) {
    let h = Harness::start(Db::Sqlite).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    assert_eq!(h.post_signed("issues", "d-1", &body).await.0, 202);
    h.control_plane.process_pending().await.unwrap();
    let first = h.reconciler.reconcile_once().await.unwrap();
    assert!(first.converged() && first.applied.len() >= 10, "{first:?}");
    (h, naming::namespace_for_issue("Codertocat/Hello-World", 1))
}

#[tokio::test]
async fn a_repo_in_the_first_layout_moves_in_one_commit_and_nothing_is_reapplied_or_deleted() {
    let (h, ns) = one_run_applied().await;
    let jobs = Api::<Job>::namespaced(h.client.clone(), &ns);
    let job = jobs.list(&Default::default()).await.unwrap().items;
    assert_eq!(job.len(), 1);

    // The state repo as an older build made it: the issue straight under issues/.
    let legacy = format!("issues/{ns}");
    h.repo
        .commit(&by_hand(vec![Change::Move {
            from: issue_dir(&ns),
            to: legacy.clone(),
        }]))
        .unwrap()
        .unwrap();
    let moved_back = h.reconciler.reconcile_once().await.unwrap();
    assert!(moved_back.converged(), "{moved_back:?}");
    assert!(
        moved_back.applied.is_empty() && moved_back.deleted.is_empty(),
        "{moved_back:?}"
    );
    assert!(h
        .repo
        .path_exists(&format!("{legacy}/namespace.yaml"))
        .unwrap());

    let tip = h.repo.head().unwrap();
    assert_eq!(h.control_plane.migrate_layout().await.unwrap(), 1);
    let moved = h.repo.head().unwrap().unwrap();
    assert_eq!(h.repo.first_parent(&moved).unwrap(), tip, "one commit");
    assert!(h
        .repo
        .path_exists(&format!("{}/namespace.yaml", issue_dir(&ns)))
        .unwrap());
    assert!(!h.repo.path_exists(&legacy).unwrap());
    let info = h.repo.commit_info(&moved).unwrap();
    assert!(info.summary.starts_with("move 1 issue folders"), "{info:?}");
    assert!(info
        .trailers
        .iter()
        .any(|(k, v)| k == "Action" && v == "layout-move"));

    let after = h.reconciler.reconcile_once().await.unwrap();
    assert!(after.converged(), "{after:?}");
    assert!(
        after.applied.is_empty() && after.deleted.is_empty(),
        "{after:?}"
    );
    let still = jobs.list(&Default::default()).await.unwrap().items;
    assert_eq!(
        still[0].metadata.uid, job[0].metadata.uid,
        "the Job was not recreated"
    );
    // Done once: a second start finds nothing to move.
    assert_eq!(h.control_plane.migrate_layout().await.unwrap(), 0);
    assert_eq!(h.repo.head().unwrap().as_deref(), Some(moved.as_str()));
    // The move has its audit row, so the trail still verifies.
    let v = issueops_core::audit::verify::verify_and_record(&h.store, &h.repo, "test")
        .await
        .unwrap();
    assert!(v.first_break().is_none(), "{:?}", v.first_break());
    h.finish().await;
}

#[tokio::test]
async fn an_object_moved_with_new_content_is_applied_never_deleted() {
    let (h, ns) = one_run_applied().await;
    let old = format!("{}/limitrange.yaml", issue_dir(&ns));
    let files = h.repo.files_at(&h.repo.head().unwrap().unwrap()).unwrap();
    let content = String::from_utf8(files[&old].clone()).unwrap();
    let changed = format!("{content}# moved by hand\n");
    h.repo
        .commit(&by_hand(vec![
            Change::Remove { path: old.clone() },
            Change::Write {
                path: format!("{}/limits.yaml", issue_dir(&ns)),
                content: changed.into_bytes(),
            },
        ]))
        .unwrap();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.applied.len(), 1, "{report:?}");
    assert!(report.deleted.is_empty(), "{report:?}");
    h.finish().await;
}

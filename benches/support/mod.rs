//! What the benchmarks share: GitHub's example payload for any issue, a fresh
//! store and state repo, and one new run taken through the control plane.
#![allow(dead_code)]

use issueops_control_plane::ControlPlane;
use issueops_core::event::IssuesEvent;
use issueops_core::state_repo::StateRepo;
use issueops_core::store::inbox::NewDelivery;
use issueops_core::Store;
use std::time::Instant;

pub const FIXTURE: &str = include_str!("../../tests/data/github/issues/labeled.payload.json");

/// GitHub's `issues.labeled` example for `issue`, labelled `run:dev`: parsed, and as text.
pub fn event_for(issue: u64) -> (IssuesEvent, String) {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    v["label"]["name"] = "run:dev".into();
    v["issue"]["number"] = issue.into();
    let text = v.to_string();
    (serde_json::from_str(&text).unwrap(), text)
}

/// A migrated SQLite store and a local state repo in `dir`.
pub async fn store_and_repo(dir: &std::path::Path) -> (Store, StateRepo) {
    let store = Store::connect(&format!("sqlite://{}", dir.join("b.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let repo = StateRepo::local(&dir.join("state.git"), "main").unwrap();
    (store, repo)
}

/// Stores GitHub's `issues.labeled` example for `issue` in the inbox as
/// delivery `id`; returns its inbox sequence number.
pub async fn store_delivery(store: &Store, id: &str, issue: u64) -> i64 {
    let (_, payload) = event_for(issue);
    let stored = store
        .insert_delivery(&NewDelivery {
            delivery_id: id.into(),
            event: "issues".into(),
            action: Some("labeled".into()),
            repo: Some("Codertocat/Hello-World".into()),
            sender: Some("Codertocat".into()),
            payload,
        })
        .await
        .unwrap();
    match stored {
        issueops_core::store::inbox::Inserted::Stored { seq } => seq,
        issueops_core::store::inbox::Inserted::Duplicate => panic!("delivery {id} stored twice"),
    }
}

/// Puts a new run's delivery for `issue` in the inbox and lets the control
/// plane decide, render and commit it; returns the milliseconds that took.
pub async fn commit_new_run(store: &Store, control_plane: &ControlPlane, issue: u64) -> f64 {
    store_delivery(store, "bench-new", issue).await;
    let t = Instant::now();
    assert_eq!(control_plane.process_pending().await.unwrap(), 1);
    t.elapsed().as_secs_f64() * 1000.0
}

/// Objects a new issue with its first run renders: the issue's eight
/// (namespace, RBAC, quota, limits, network policy, agent-home claim) and the
/// run's two (Job, prompt ConfigMap).
pub const OBJECTS_PER_NEW_ISSUE: usize = 10;

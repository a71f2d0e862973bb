//! What the staff UI reads and the decisions it makes, on SQLite and on
//! PostgreSQL: runs paged and filtered with their trigger event and result,
//! the inbox with a failed attempt, audit search, the reconciler's cycle
//! record; cancelling a run and deciding a request as an established approver;
//! the allowlist as the only check without GitHub.

mod common;

use common::{labeled_issue, test_config, Db, Harness};
use issueops_control_plane::ControlPlaneError;
use issueops_core::naming;
use issueops_core::store::views::{AuditFilter, RunFilter, PAGE};
use serde_json::json;

async fn views_on(db: Db) {
    let mut config = test_config();
    config.github.trigger_allowlist = vec!["Codertocat".into()];
    let h = Harness::start_configured(db, config).await;
    for n in 1..=(PAGE as u64 + 3) {
        let body = labeled_issue("run:dev", 1000 + n);
        assert_eq!(
            h.post_signed("issues", &format!("view-{n}"), &body).await.0,
            202
        );
    }
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();

    // Paged, newest first, with the count of all that match.
    let all = RunFilter::default();
    let (first, total) = h.store.runs_page(&all, 0).await.unwrap();
    assert_eq!(total, PAGE + 3);
    assert_eq!(first.len() as i64, PAGE);
    let (second, _) = h.store.runs_page(&all, 1).await.unwrap();
    assert_eq!(second.len(), 3);
    assert!(first[0].created_at >= second[0].created_at);
    let run = &first[0];
    assert_eq!(run.event.as_deref(), Some("issues"));
    assert_eq!(
        run.title.as_deref(),
        Some("Spelling error in the README file")
    );
    assert_eq!(run.state, "applied");

    // Filters: by issue, state, mode, event, repo (case-insensitive).
    let one = RunFilter {
        issue_number: Some(1001),
        repo: common::REPO.to_uppercase(),
        ..Default::default()
    };
    let (runs, n) = h.store.runs_page(&one, 0).await.unwrap();
    assert_eq!((runs.len(), n), (1, 1));
    assert_eq!(runs[0].run_id, naming::run_id_for_delivery("view-1"));
    for (filter, want) in [
        (
            RunFilter {
                state: "applied".into(),
                ..Default::default()
            },
            PAGE + 3,
        ),
        (
            RunFilter {
                state: "failed".into(),
                ..Default::default()
            },
            0,
        ),
        (
            RunFilter {
                mode: "revise".into(),
                ..Default::default()
            },
            0,
        ),
        (
            RunFilter {
                event: "pull_request_review".into(),
                ..Default::default()
            },
            0,
        ),
        (
            RunFilter {
                repo: "someone/else".into(),
                ..Default::default()
            },
            0,
        ),
    ] {
        assert_eq!(
            h.store.runs_page(&filter, 0).await.unwrap().1,
            want,
            "{filter:?}"
        );
    }

    // Someone off the allowlist, without GitHub: an approval request.
    let mut outsider: serde_json::Value =
        serde_json::from_slice(&labeled_issue("run:dev", 2001)).unwrap();
    outsider["sender"]["login"] = "octocat".into();
    let body = serde_json::to_vec(&outsider).unwrap();
    h.post_signed("issues", "view-outsider", &body).await;
    h.control_plane.process_pending().await.unwrap();
    let requests = h.store.list_approvals().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].state.as_str(), requests[0].requester.as_str()),
        ("pending", "octocat")
    );
    let id = requests[0].id.clone();
    let refused = h
        .control_plane
        .decide_request_as_approver(&id, "ann", true, "  ")
        .await;
    assert!(matches!(refused, Err(ControlPlaneError::Refused(m)) if m.contains("reason")));
    // The CLI's path still checks the decider: ann is no approver.
    assert!(matches!(
        h.control_plane.decide_request(&id, "ann", true, "ok").await,
        Err(ControlPlaneError::Refused(_))
    ));
    let outcome = h
        .control_plane
        .decide_request_as_approver(&id, "ann", true, "in scope")
        .await
        .unwrap();
    assert!(outcome.contains("approved"), "{outcome}");
    let decided = h.store.get_approval(&id).await.unwrap().unwrap();
    assert_eq!(decided.decided_by.as_deref(), Some("ann"));
    assert!(decided.decided_at.is_some());

    // Cancel from the UI: a commit with the person and the reason.
    let victim = naming::run_id_for_delivery("view-2");
    let before = h.repo.log().unwrap().len();
    h.control_plane
        .cancel_run(&victim, "ann", "wrong issue")
        .await
        .unwrap();
    let cancelled = h.store.get_run(&victim).await.unwrap().unwrap();
    assert_eq!(cancelled.state, "cancelled");
    assert_eq!(
        cancelled.reason.as_deref(),
        Some("cancelled by ann: wrong issue")
    );
    assert_eq!(h.repo.log().unwrap().len(), before + 1);
    let head = h.repo.log().unwrap()[0].clone();
    let info = h.repo.commit_info(&head).unwrap();
    assert!(
        info.trailers.contains(&("Actor".into(), "ann".into())),
        "{info:?}"
    );
    let again = h.control_plane.cancel_run(&victim, "ann", "twice").await;
    assert!(matches!(again, Err(ControlPlaneError::Refused(m)) if m.contains("already cancelled")));
    assert!(matches!(
        h.control_plane.cancel_run("rnope", "ann", "x").await,
        Err(ControlPlaneError::Refused(_))
    ));

    // Audit search by run, actor, kind, commit prefix; newest first.
    let by_run = AuditFilter {
        run_id: victim.clone(),
        ..Default::default()
    };
    let rows = h.store.search_audit(&by_run, 500).await.unwrap();
    assert!(rows.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(rows[0].outcome, "run-cancelled");
    let by_actor = AuditFilter {
        actor: "ANN".into(),
        kind: "approval".into(),
        ..Default::default()
    };
    let rows = h.store.search_audit(&by_actor, 500).await.unwrap();
    assert_eq!(rows.len(), 1);
    let prefix = AuditFilter {
        commit: head[..8].into(),
        ..Default::default()
    };
    let rows = h.store.search_audit(&prefix, 500).await.unwrap();
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| r.commit_sha.as_deref() == Some(head.as_str()))
    );
    let high = h.store.audit_high_water().await.unwrap();
    assert_eq!(
        Some(high),
        h.store.audit_rows().await.unwrap().last().map(|r| r.id)
    );

    // The inbox, with a failed attempt kept on a pending delivery.
    let (rows, total) = h.store.deliveries_page(false, 0).await.unwrap();
    assert_eq!(total, PAGE + 4);
    assert_eq!(rows[0].delivery_id, "view-outsider");
    let (stuck, n) = h.store.deliveries_page(true, 0).await.unwrap();
    assert_eq!((stuck.len(), n), (0, 0));
    h.post_signed("issues", "view-stuck", &labeled_issue("run:dev", 3001))
        .await;
    let seq = h.store.pending_deliveries(10).await.unwrap()[0].seq;
    h.store
        .fail_delivery(seq, "GitHub is down", Some(0))
        .await
        .unwrap();
    h.store
        .fail_delivery(seq, "GitHub is still down", Some(0))
        .await
        .unwrap();
    let (stuck, _) = h.store.deliveries_page(true, 0).await.unwrap();
    assert_eq!(stuck[0].attempts, 2);
    assert_eq!(stuck[0].last_error.as_deref(), Some("GitHub is still down"));
    assert_eq!(stuck[0].dead_at, None);
    // Given up on: a dead letter, shown on the deliveries and health pages.
    h.store
        .fail_delivery(seq, "GitHub refuses for good", None)
        .await
        .unwrap();

    // Every page renders on this database, paged past the first 20 runs.
    let pages = [
        "/runs".to_string(),
        "/runs?page=1".to_string(),
        "/runs?state=applied&mode=dev&label=run:dev&page=1".to_string(),
        format!("/runs/{victim}"),
        format!("/issues/{}/1001", common::REPO),
        "/approvals".to_string(),
        format!("/approvals?decided={id}"),
        "/audit?actor=ann".to_string(),
        format!("/audit.jsonl?run={victim}"),
        "/deliveries?stuck=1".to_string(),
        "/deliveries?page=1".to_string(),
        "/health".to_string(),
    ];
    let ui = common::staff_ui_http::serve_ui(
        &h,
        issueops_control_plane::ControlPlane::new(
            h.store.clone(),
            h.repo.clone(),
            std::sync::Arc::new(test_config()),
            issueops_control_plane::render::Templates::embedded(),
        ),
    )
    .await;
    for page in &pages {
        let (status, body) = ui.get(page).await;
        assert_eq!(status, 200, "{page}: {body}");
    }
    let (_, deliveries) = ui.get("/deliveries?stuck=1").await;
    assert!(
        deliveries.contains("dead letter")
            && deliveries.contains("gave up after 3 attempts: GitHub refuses for good"),
        "{deliveries}"
    );
    let (_, health) = ui.get("/health").await;
    assert!(health.contains("1 given up on"), "{health}");
    let (_, second) = ui.get("/runs?page=1").await;
    assert!(second.contains("page 2 of 2"), "{second}");
    let (_, run_page) = ui.get(&format!("/runs/{victim}")).await;
    assert!(
        run_page.contains("cancelled by ann: wrong issue"),
        "{run_page}"
    );
    assert!(
        run_page.contains("kind: Job"),
        "the commit's diff: {run_page}"
    );

    // The cycle record is one row per key, overwritten.
    h.store
        .record_cycle("k", Some("abc"), "converged", &json!({"applied": 1}))
        .await
        .unwrap();
    h.store
        .record_cycle("k", None, "error", &json!({"error": "x"}))
        .await
        .unwrap();
    let cycle = h.store.last_cycle("k").await.unwrap().unwrap();
    assert_eq!((cycle.outcome.as_str(), cycle.head), ("error", None));
    assert_eq!(h.store.last_cycle("other").await.unwrap(), None);
    h.finish().await;
}

#[tokio::test]
async fn staff_views_and_decisions_on_sqlite() {
    views_on(Db::Sqlite).await;
}

#[tokio::test]
async fn staff_views_and_decisions_on_postgres() {
    views_on(Db::Postgres).await;
}

/// The session store on both databases: a session is live until it expires
/// or is revoked (by its id as listed, or by login), and ended ones are
/// dropped when the next is made.
#[tokio::test]
async fn ui_sessions_on_both_databases() {
    use issueops_core::store::sessions::{Revoke, UiSession};
    for db in [Db::Sqlite, Db::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let (store, pg) = common::store_for(db, dir.path()).await;
        let now = issueops_core::now_ms();
        let session = |hash: &str, login: &str, expires_at: i64| UiSession {
            id_hash: hash.into(),
            login: login.into(),
            role: "viewer".into(),
            how: "github".into(),
            identity: "{}".into(),
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        store
            .create_ui_session(&session("aa11", "ann", now + 60_000))
            .await
            .unwrap();
        store
            .create_ui_session(&session("bb22", "bob", now + 60_000))
            .await
            .unwrap();
        store
            .create_ui_session(&session("cc33", "bob", now - 1))
            .await
            .unwrap();
        assert!(store.live_ui_session("aa11").await.unwrap().is_some());
        assert!(
            store.live_ui_session("cc33").await.unwrap().is_none(),
            "expired"
        );
        assert_eq!(store.live_ui_sessions().await.unwrap().len(), 2);
        // Not a hex prefix: matches nothing (no LIKE wildcards from outside).
        assert!(store
            .revoke_ui_sessions(Revoke::Id("%"))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.revoke_ui_sessions(Revoke::Id("AA")).await.unwrap(),
            ["ann"]
        );
        assert!(
            store.live_ui_session("aa11").await.unwrap().is_none(),
            "revoked"
        );
        assert_eq!(
            store
                .revoke_ui_sessions(Revoke::Login("bob"))
                .await
                .unwrap(),
            ["bob"]
        );
        assert!(store
            .revoke_ui_sessions(Revoke::All)
            .await
            .unwrap()
            .is_empty());
        // A new session drops the ended rows.
        store
            .create_ui_session(&session("dd44", "ann", now + 60_000))
            .await
            .unwrap();
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ui_sessions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);
        store.pool().close().await;
        if let Some(pg) = pg {
            pg.drop_db().await;
        }
    }
}

//! The audit trail anyone can verify: the hash chain over the audit table and
//! the state repo's commits held against the rows, on SQLite and PostgreSQL,
//! through the real gateway and control plane; tampered with as the
//! database's owner (triggers lifted) and with git; and `issueops audit
//! verify` from the command line.

mod common;

use common::{labeled, Db, Harness};
use issueops_core::audit::verify::{verify_and_record, VERIFY_KIND};
use issueops_core::AuditEvent;
use std::process::Command;

/// Two runs committed through the real gateway and control plane, and the
/// audit rows of everything on the way.
async fn two_runs(db: Db) -> Harness {
    let h = Harness::start(db).await;
    for (delivery, issue) in [("chain-1", 1), ("chain-2", 2)] {
        let mut v: serde_json::Value =
            serde_json::from_slice(&labeled("issues/labeled.payload.json", "run:dev")).unwrap();
        v["issue"]["number"] = issue.into();
        let (status, text) = h
            .post_signed("issues", delivery, &serde_json::to_vec(&v).unwrap())
            .await;
        assert_eq!(status, 202, "{text}");
    }
    h.control_plane.process_pending().await.unwrap();
    assert_eq!(h.repo.log().unwrap().len(), 2, "two commits");
    h
}

/// Lets the database's owner change and remove audit rows (what the chain
/// must still catch).
async fn lift_triggers(h: &Harness) {
    let statements: &[&str] = if h.pg.is_some() {
        &["ALTER TABLE audit_events DISABLE TRIGGER USER"]
    } else {
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        ]
    };
    for s in statements {
        sqlx::query(s).execute(h.store.pool()).await.unwrap();
    }
}

/// Runs `statement` as the database's owner, the append-only triggers
/// lifted first: what the chain must still catch.
async fn tamper(h: &Harness, statement: &str) {
    lift_triggers(h).await;
    sqlx::query(statement)
        .execute(h.store.pool())
        .await
        .unwrap();
}

/// The newest `audit.verify` row (what the health page shows).
async fn last_verification(h: &Harness) -> issueops_core::AuditRow {
    h.store
        .last_audit_of_kind(VERIFY_KIND)
        .await
        .unwrap()
        .unwrap()
}

fn row_id(h: &[issueops_core::AuditRow], kind: &str, outcome: &str, delivery: &str) -> i64 {
    h.iter()
        .find(|r| {
            r.kind == kind && r.outcome == outcome && r.delivery_id.as_deref() == Some(delivery)
        })
        .unwrap_or_else(|| panic!("no {kind} {outcome} row of {delivery}"))
        .id
}

async fn untouched_install_verifies(db: Db) {
    let h = two_runs(db).await;
    // Concurrent appends (as the gateway, control plane and reconciler make
    // them) line up one after the other: the chain stays whole.
    let appends: Vec<_> = (0..40)
        .map(|i| {
            let store = h.store.clone();
            tokio::spawn(async move {
                store
                    .append_audit(&AuditEvent::new("test", &format!("concurrent-{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for a in appends {
        a.await.unwrap();
    }
    let v = verify_and_record(&h.store, &h.repo, "auditor")
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.breaks);
    assert_eq!(v.commits, Some(2));
    assert_eq!(v.unchained, 0);
    assert!(v.rows >= 45, "{}", v.rows);
    let recorded = last_verification(&h).await;
    assert_eq!(recorded.outcome, "verified");
    assert_eq!(recorded.actor.as_deref(), Some("auditor"));
    // The control plane's leader verifies on its own too (every
    // `audit.verify_every_hours`), as issueops.
    h.control_plane.verify_audit().await;
    let own = last_verification(&h).await;
    assert_eq!(
        (own.outcome.as_str(), own.actor.as_deref()),
        ("verified", Some("issueops"))
    );
    // Its own row extends the chain: the next verification still holds.
    assert!(verify_and_record(&h.store, &h.repo, "auditor")
        .await
        .unwrap()
        .ok());
    h.finish().await;
}

/// Catches: appends that read the head without holding its lock (40
/// concurrent appends then fork the chain).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_untouched_install_verifies_on_sqlite() {
    untouched_install_verifies(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_untouched_install_verifies_on_postgres() {
    untouched_install_verifies(Db::Postgres).await;
}

async fn deleted_row_is_named(db: Db) {
    let h = two_runs(db).await;
    let rows = h.audit().await;
    let gone = row_id(&rows, "decision", "accepted", "chain-1");
    let next = rows.iter().find(|r| r.id > gone).unwrap().id;
    tamper(&h, &format!("DELETE FROM audit_events WHERE id = {gone}")).await;
    let v = verify_and_record(&h.store, &h.repo, "auditor")
        .await
        .unwrap();
    let first = v.first_break().expect("the removal is found");
    assert_eq!(first.row, Some(next), "{first}");
    assert!(
        first
            .what
            .contains(&format!("does not follow row {}", gone - 1))
            && first.what.contains("removed"),
        "{first}"
    );
    let recorded = last_verification(&h).await;
    assert_eq!(recorded.outcome, "broken");
    assert!(
        recorded.detail.contains(&format!("audit row {next}")),
        "{}",
        recorded.detail
    );
    h.finish().await;
}

/// Catches: a chain that only hashes rows without naming the one before.
#[tokio::test]
async fn a_deleted_row_is_named_on_sqlite() {
    deleted_row_is_named(Db::Sqlite).await;
}

#[tokio::test]
async fn a_deleted_row_is_named_on_postgres() {
    deleted_row_is_named(Db::Postgres).await;
}

async fn edited_row_is_named(db: Db) {
    let h = two_runs(db).await;
    let rows = h.audit().await;
    let commit = rows
        .iter()
        .find(|r| r.kind == "commit" && r.delivery_id.as_deref() == Some("chain-2"))
        .unwrap();
    tamper(
        &h,
        &format!(
            "UPDATE audit_events SET actor = 'someone-else' WHERE id = {}",
            commit.id
        ),
    )
    .await;
    let v = verify_and_record(&h.store, &h.repo, "auditor")
        .await
        .unwrap();
    let first = v.first_break().expect("the edit is found");
    assert_eq!(first.row, Some(commit.id), "{first}");
    assert!(first.what.contains("was altered"), "{first}");
    // The commit's trailers disagree with the row too.
    assert!(
        v.breaks
            .iter()
            .any(|b| b.commit.as_deref() == commit.commit_sha.as_deref()
                && b.what.contains("actor someone-else")
                && b.what.contains("actor Codertocat")),
        "{:?}",
        v.breaks
    );
    h.finish().await;
}

/// Catches: a canonical form that leaves out a column (the actor).
#[tokio::test]
async fn an_edited_row_is_named_on_sqlite() {
    edited_row_is_named(Db::Sqlite).await;
}

#[tokio::test]
async fn an_edited_row_is_named_on_postgres() {
    edited_row_is_named(Db::Postgres).await;
}

/// Rows cut from the end leave a whole chain behind: the recorded head
/// names them. Catches: a verification that only walks the rows.
#[tokio::test]
async fn rows_cut_from_the_end_are_named() {
    let h = two_runs(Db::Sqlite).await;
    let rows = h.audit().await;
    let last = rows.last().unwrap().id;
    tamper(&h, &format!("DELETE FROM audit_events WHERE id = {last}")).await;
    let v = verify_and_record(&h.store, &h.repo, "auditor")
        .await
        .unwrap();
    let first = v.first_break().expect("the cut is found");
    assert_eq!(first.row, Some(last - 1), "{first}");
    assert!(
        first.what.contains(&format!("recorded head is row {last}")),
        "{first}"
    );
    h.finish().await;
}

/// A state-repo commit removed with git (the branch moved back past it) is
/// named by the audit row that recorded it. Catches: a verification that
/// reads only the database.
#[tokio::test]
async fn a_removed_state_repo_commit_is_named() {
    let h = two_runs(Db::Sqlite).await;
    let log = h.repo.log().unwrap();
    let git = git2::Repository::open_bare(h.dir.path().join("state.git")).unwrap();
    git.reference(
        "refs/heads/main",
        git2::Oid::from_str(&log[1]).unwrap(),
        true,
        "drop the newest commit",
    )
    .unwrap();
    let v = verify_and_record(&h.store, &h.repo, "auditor")
        .await
        .unwrap();
    let first = v.first_break().expect("the removal is found");
    assert_eq!(first.commit.as_deref(), Some(log[0].as_str()), "{first}");
    assert!(
        first
            .what
            .contains("which the state repo's branch does not have"),
        "{first}"
    );
    let rows = h.audit().await;
    let row = rows
        .iter()
        .find(|r| r.kind == "commit" && r.commit_sha.as_deref() == Some(log[0].as_str()))
        .unwrap();
    assert_eq!(first.row, Some(row.id));
    h.finish().await;
}

fn issueops() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_issueops"));
    cmd.env_remove("ISSUEOPS_DATABASE_URL")
        .env_remove("ISSUEOPS_STATE_REPO")
        .env_remove("ISSUEOPS_CONFIG");
    cmd
}

/// `issueops audit verify` passes on an untouched install, then fails with
/// exit 1 naming the row once one is removed; the health page's source (the
/// newest `audit.verify` row) says so.
#[tokio::test]
async fn audit_verify_from_the_command_line() {
    let h = two_runs(Db::Sqlite).await;
    let verify = || {
        issueops()
            .arg("--data-dir")
            .arg(h.dir.path())
            .args(["audit", "verify", "--actor", "alice"])
            .output()
            .unwrap()
    };
    let out = verify();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("verified:") && said.contains("2 commits"),
        "{said}"
    );

    let rows = h.audit().await;
    let gone = row_id(&rows, "commit", "committed", "chain-1");
    tamper(&h, &format!("DELETE FROM audit_events WHERE id = {gone}")).await;
    let out = verify();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("BROKEN: audit row {}", gone + 1)),
        "{said}"
    );
    // The row held the first run's commit: that commit has no row now.
    assert!(said.contains("has no audit row"), "{said}");
    let recorded = last_verification(&h).await;
    assert_eq!(
        (recorded.outcome.as_str(), recorded.actor.as_deref()),
        ("broken", Some("alice"))
    );
    h.finish().await;
}

/// The roles of `deploy/postgres/service-role.sql`, applied with psql as the
/// docs say: the service role works the inbox and appends to the audit table,
/// but cannot change, remove or truncate audit rows, nor drop or disable the
/// trigger that guards them. Catches: a grant file that gives the service
/// role the audit table's UPDATE or DELETE, or makes it the owner.
#[tokio::test]
async fn the_service_role_cannot_drop_the_trigger_or_change_rows() {
    let pg = common::PgDatabase::create().await;
    let owner = issueops_core::Store::connect(&pg.url).await.unwrap();
    owner.migrate().await.unwrap();
    let grants =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postgres/service-role.sql");
    let service_base = std::env::var("ISSUEOPS_TEST_POSTGRES_SERVICE_URL").unwrap_or_else(|_| {
        "postgres://issueops_test_service:issueops_test_service@127.0.0.1:5432".into()
    });
    let service_role = service_base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split([':', '@']).next())
        .unwrap()
        .to_string();
    let out = Command::new("psql")
        .arg(&pg.url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-v"])
        .arg(format!("service={service_role}"))
        .arg("-f")
        .arg(&grants)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let service = issueops_core::Store::connect(&format!("{service_base}/{}", pg.name))
        .await
        .unwrap();
    service.ensure_migrated().await.unwrap();
    // What the service does: store a delivery, handle it, audit it.
    let stored = service
        .insert_delivery(&issueops_core::store::inbox::NewDelivery {
            delivery_id: "svc-1".into(),
            event: "issues".into(),
            action: Some("labeled".into()),
            repo: Some(common::REPO.into()),
            sender: Some("octocat".into()),
            payload: "{}".into(),
        })
        .await
        .unwrap();
    let issueops_core::store::inbox::Inserted::Stored { seq } = stored else {
        panic!("{stored:?}")
    };
    service.mark_processed(seq, "handled").await.unwrap();
    service
        .append_audit(&AuditEvent::new("test", "by-the-service-role"))
        .await
        .unwrap();

    for attempt in [
        "UPDATE audit_events SET actor = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "DROP TRIGGER audit_events_no_update_delete ON audit_events",
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        "DROP TABLE audit_events",
    ] {
        let refused = sqlx::query(attempt)
            .execute(service.pool())
            .await
            .expect_err(attempt)
            .to_string();
        assert!(
            refused.contains("permission denied") || refused.contains("must be owner"),
            "{attempt}: {refused}"
        );
    }
    let v = service.verify_audit_chain().await.unwrap().chain_only();
    assert!(v.ok(), "{:?}", v.breaks);
    assert_eq!(v.rows, 1);
    service.pool().close().await;
    owner.pool().close().await;
    pg.drop_db().await;
}

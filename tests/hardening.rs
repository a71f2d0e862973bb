//! Production hardening: dead letters and per-repo order in the inbox, claims
//! that two consumers never share, writer locks, and the lifecycle holes
//! (replays of finished runs, stuck runs, prunes decided before a new run,
//! numbers out of range).

mod common;

use common::{test_config, Db, Harness, REPO};
use issueops_core::state_repo::issue_dir;
use issueops_core::store::StoreError;
use issueops_github::Credentials;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OTHER_REPO: &str = "octo-org/other";

/// GitHub's example delivery, for `repo` and `issue`.
fn trigger_for(repo: &str, issue: u64) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&common::labeled_issue("run:dev", issue)).unwrap();
    v["repository"]["full_name"] = repo.into();
    serde_json::to_vec(&v).unwrap()
}

/// A fake GitHub answering the permission of the fixture's sender per repo.
async fn github_with(answers: &[(&str, ResponseTemplate)]) -> MockServer {
    let server = MockServer::start().await;
    for (repo, answer) in answers {
        Mock::given(method("GET"))
            .and(path(format!(
                "/repos/{repo}/collaborators/Codertocat/permission"
            )))
            .respond_with(answer.clone())
            .mount(&server)
            .await;
    }
    server
}

fn writer() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "permission": "write", "role_name": "write",
        "user": { "login": "Codertocat", "id": 1, "type": "User" }
    }))
}

/// What GitHub answers an App that is not installed on the repo.
fn not_installed() -> ResponseTemplate {
    ResponseTemplate::new(403).set_body_json(json!({
        "message": "Resource not accessible by integration",
        "documentation_url": "https://docs.github.com/rest"
    }))
}

async fn harness(db: Db, server: &MockServer, max_attempts: u32) -> Harness {
    let mut config = test_config();
    config.repos = vec![REPO.into(), OTHER_REPO.into()];
    config.inbox.max_attempts = max_attempts;
    let mut h = Harness::start_configured(db, config.clone()).await;
    h.use_github(
        common::github_client(server.uri(), Credentials::Token("ghp_fake".into()), 1),
        config,
    );
    h
}

/// Makes every waiting retry due now (as if the backoff had elapsed).
async fn backoff_elapses(h: &Harness) {
    sqlx::query("UPDATE inbox SET next_attempt_at = 0")
        .execute(h.store.pool())
        .await
        .unwrap();
}

async fn poison_delivery_is_dead_lettered_and_others_flow(db: Db) {
    let server = github_with(&[(REPO, not_installed()), (OTHER_REPO, writer())]).await;
    let h = harness(db, &server, 5).await;
    assert_eq!(
        h.post_signed("issues", "poison", &trigger_for(REPO, 1))
            .await
            .0,
        202
    );
    assert_eq!(
        h.post_signed("issues", "fine", &trigger_for(OTHER_REPO, 2))
            .await
            .0,
        202
    );
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 1);
    let runs = h.store.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].repo, OTHER_REPO, "the other repo's delivery flowed");
    // The permanent refusal made a dead letter at once, with its reason.
    let dead = h.store.dead_deliveries().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery_id, "poison");
    assert_eq!(dead[0].attempts, 1);
    assert!(dead[0].reason.contains("403"), "{:?}", dead[0]);
    let audit = h.audit().await;
    let row = audit
        .iter()
        .find(|r| r.kind == "delivery.dead")
        .expect("the dead letter is audited");
    assert_eq!(row.delivery_id.as_deref(), Some("poison"));
    assert!(row.detail.contains("not accessible"), "{}", row.detail);
    // A dead letter holds nothing back, not even its own repo.
    assert_eq!(
        h.store.pending_deliveries(10).await.unwrap().len(),
        0,
        "dead letters are not pending"
    );
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 0);
    h.finish().await;
}

#[tokio::test]
async fn poison_delivery_is_dead_lettered_and_others_flow_on_sqlite() {
    poison_delivery_is_dead_lettered_and_others_flow(Db::Sqlite).await;
}

#[tokio::test]
async fn poison_delivery_is_dead_lettered_and_others_flow_on_postgres() {
    poison_delivery_is_dead_lettered_and_others_flow(Db::Postgres).await;
}

/// A transient failure is retried after a backoff while the repo's later
/// deliveries wait behind it (their order matters) and other repos go on;
/// after `inbox.max_attempts` it becomes a dead letter.
#[tokio::test]
async fn transient_failures_back_off_keep_the_repo_in_order_then_dead_letter() {
    let server = github_with(&[(REPO, ResponseTemplate::new(502)), (OTHER_REPO, writer())]).await;
    let h = harness(Db::Sqlite, &server, 2).await;
    h.post_signed("issues", "first", &trigger_for(REPO, 1))
        .await;
    h.post_signed("issues", "second", &trigger_for(REPO, 3))
        .await;
    h.post_signed("issues", "elsewhere", &trigger_for(OTHER_REPO, 2))
        .await;
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 1);
    let (inbox, _) = h.store.deliveries_page(true, 0).await.unwrap();
    let by_id = |id: &str| inbox.iter().find(|d| d.delivery_id == id).unwrap().clone();
    assert_eq!(by_id("first").attempts, 1);
    assert!(by_id("first").last_error.unwrap().contains("502"));
    assert_eq!(
        by_id("second").attempts,
        0,
        "the repo's later delivery waits behind the failing one"
    );
    assert_eq!(h.store.list_runs().await.unwrap()[0].repo, OTHER_REPO);
    // Before the backoff has elapsed nothing is tried again.
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 0);
    assert_eq!(
        h.store.delivery_attempts(by_id("first").seq).await.unwrap(),
        1
    );
    // The second attempt is the last one allowed: a dead letter.
    backoff_elapses(&h).await;
    h.control_plane.process_pending().await.unwrap();
    let dead = h.store.dead_deliveries().await.unwrap();
    assert_eq!(
        dead.iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["first"]
    );
    assert_eq!(dead[0].attempts, 2);
    // With the first parked, the second is tried (and fails its own way).
    let second = h
        .store
        .delivery_attempts(by_id("second").seq)
        .await
        .unwrap();
    assert_eq!(second, 1);
    h.finish().await;
}

/// `issueops deliveries` lists dead letters; `deliveries retry ID` puts one
/// back in line (audited), and the next pass handles it.
#[tokio::test]
async fn a_dead_letter_is_listed_and_retried_from_the_command_line() {
    let server = github_with(&[(REPO, not_installed())]).await;
    let h = harness(Db::Sqlite, &server, 5).await;
    h.post_signed("issues", "not-installed-1", &trigger_for(REPO, 1))
        .await;
    h.control_plane.process_pending().await.unwrap();
    let issueops = |args: &[&str]| common::run_issueops(h.dir.path(), args);
    let (ok, list, err) = issueops(&["deliveries"]);
    assert!(ok, "{err}");
    assert!(
        list.contains("not-installed-1") && list.contains("403") && list.contains("attempts=1"),
        "{list}"
    );
    let (ok, _, err) = issueops(&["deliveries", "retry", "no-such-delivery"]);
    assert!(!ok && err.contains("no dead letter"), "{err}");
    // The App gets installed; the operator retries.
    Mock::given(method("GET"))
        .and(path(format!(
            "/repos/{REPO}/collaborators/Codertocat/permission"
        )))
        .respond_with(writer())
        .with_priority(1)
        .mount(&server)
        .await;
    let (ok, out, err) = issueops(&["deliveries", "retry", "not-installed-1", "--actor", "ops"]);
    assert!(ok && out.contains("back in line"), "{out}{err}");
    assert!(h.store.dead_deliveries().await.unwrap().is_empty());
    let retried = h
        .audit()
        .await
        .into_iter()
        .find(|r| r.kind == "delivery.retry");
    assert_eq!(retried.and_then(|r| r.actor), Some("ops".to_string()));
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 1);
    assert_eq!(h.store.list_runs().await.unwrap().len(), 1);
    h.finish().await;
}

/// Two consumers of one PostgreSQL inbox never claim the same delivery, and
/// a claim that runs out (its consumer died) is claimed again.
#[tokio::test]
async fn claims_are_disjoint_and_expire() {
    let h = Harness::start(Db::Postgres).await;
    for i in 0..10 {
        h.post_signed("issues", &format!("claim-{i}"), &trigger_for(REPO, i + 1))
            .await;
    }
    let other = issueops_core::Store::connect(&h.pg.as_ref().unwrap().url)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        h.store.claim_deliveries(6, 60_000),
        other.claim_deliveries(6, 60_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut seen: Vec<i64> = a.iter().chain(&b).map(|r| r.seq).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        a.len() + b.len(),
        "a delivery was claimed twice"
    );
    assert_eq!(seen.len(), 10);
    assert!(h
        .store
        .claim_deliveries(10, 60_000)
        .await
        .unwrap()
        .is_empty());
    // Claims of 0 ms have run out at once: the deliveries come back.
    sqlx::query("UPDATE inbox SET claimed_until = 1")
        .execute(h.store.pool())
        .await
        .unwrap();
    assert_eq!(
        h.store.claim_deliveries(10, 60_000).await.unwrap().len(),
        10
    );
    h.finish().await;
}

async fn one_leader_and_exclusive_turns(db: Db) {
    let h = Harness::start(db).await;
    let url = match &h.pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", h.dir.path().join("issueops.db").display()),
    };
    let second = issueops_core::Store::connect(&url).await.unwrap();
    let leader = h.store.try_leadership("control-plane").await.unwrap();
    let mut leader = leader.expect("the first replica leads");
    assert!(leader.still_held().await);
    assert!(
        second
            .try_leadership("control-plane")
            .await
            .unwrap()
            .is_none(),
        "two leaders of one role"
    );
    assert!(
        second.try_leadership("reconciler").await.unwrap().is_some(),
        "roles lead independently"
    );
    drop(leader);
    assert!(
        second
            .try_leadership("control-plane")
            .await
            .unwrap()
            .is_some(),
        "leadership passes on when the leader goes"
    );
    // Exclusive turns: a second taker waits, and gives up with a clear error.
    let turn = h
        .store
        .exclusive("control-plane", Duration::from_secs(1))
        .await
        .unwrap();
    let busy = second
        .exclusive("control-plane", Duration::from_millis(200))
        .await;
    match busy {
        Err(StoreError::Busy(m)) => assert!(
            m.contains("control-plane") && m.contains("try again"),
            "{m}"
        ),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two exclusive turns at once"),
    }
    let waiting = tokio::spawn(async move {
        second
            .exclusive("control-plane", Duration::from_secs(10))
            .await
            .map(|_| ())
    });
    drop(turn);
    waiting.await.unwrap().expect("the waiter gets its turn");
    h.finish().await;
}

#[tokio::test]
async fn one_leader_and_exclusive_turns_on_sqlite() {
    one_leader_and_exclusive_turns(Db::Sqlite).await;
}

#[tokio::test]
async fn one_leader_and_exclusive_turns_on_postgres() {
    one_leader_and_exclusive_turns(Db::Postgres).await;
}

/// A delivery handled again (an inbox replay, a retried dead letter) never
/// brings a finished run's folder back.
#[tokio::test]
async fn a_replay_of_a_finished_run_commits_nothing() {
    let h = Harness::start(Db::Sqlite).await;
    h.post_signed("issues", "replayed", &trigger_for(REPO, 1))
        .await;
    h.control_plane.process_pending().await.unwrap();
    let run = h.store.list_runs().await.unwrap().remove(0);
    h.store
        .advance_run(
            &run.run_id,
            issueops_core::store::runs::RunState::Succeeded,
            None,
            None,
        )
        .await
        .unwrap();
    let pruned = h.control_plane.prune_due(i64::MAX / 2).await.unwrap();
    assert_eq!(pruned.len(), 1);
    let commits = h.repo.log().unwrap().len();
    sqlx::query("UPDATE inbox SET processed_at = NULL, outcome = NULL")
        .execute(h.store.pool())
        .await
        .unwrap();
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 1);
    assert_eq!(h.repo.log().unwrap().len(), commits, "the replay committed");
    let (inbox, _) = h.store.deliveries_page(false, 0).await.unwrap();
    assert!(
        inbox[0]
            .outcome
            .as_deref()
            .unwrap()
            .contains("already ended"),
        "{inbox:?}"
    );
    h.finish().await;
}

/// A run whose Job never started fails after `lifecycle.stuck_seconds`, with
/// the reason, and its issue takes a new trigger.
#[tokio::test]
async fn a_stuck_run_fails_and_frees_its_issue() {
    let h = Harness::start(Db::Sqlite).await;
    h.post_signed("issues", "stuck-1", &trigger_for(REPO, 1))
        .await;
    h.control_plane.process_pending().await.unwrap();
    let run = h.store.list_runs().await.unwrap().remove(0);
    assert_eq!(run.state, "committed");
    let now = issueops_core::now_ms();
    assert_eq!(
        h.control_plane.fail_stuck_runs(now).await.unwrap(),
        0,
        "not stuck yet"
    );
    let later = now + 1_800_000 + 1_000;
    assert_eq!(h.control_plane.fail_stuck_runs(later).await.unwrap(), 1);
    let failed = h.store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(failed.state, "failed");
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("stuck in committed"),
        "{failed:?}"
    );
    assert!(h
        .audit()
        .await
        .iter()
        .any(|r| r.outcome == "failed-stuck" && r.run_id.as_deref() == Some(run.run_id.as_str())));
    h.post_signed("issues", "stuck-2", &trigger_for(REPO, 1))
        .await;
    h.control_plane.process_pending().await.unwrap();
    let runs = h.store.list_runs().await.unwrap();
    assert!(
        runs.iter()
            .any(|r| r.delivery_id == "stuck-2" && r.state == "committed"),
        "{runs:?}"
    );
    h.finish().await;
}

/// An idle prune decided before a new run of the issue was committed leaves
/// the issue's folder (and the new run) alone.
#[tokio::test]
async fn an_idle_prune_never_removes_a_run_committed_after_it_was_decided() {
    let mut config = test_config();
    config.lifecycle.run_retention_seconds = 0;
    config.lifecycle.issue_idle_seconds = 0;
    let h = Harness::start_configured(Db::Sqlite, config).await;
    h.post_signed("issues", "old-run", &trigger_for(REPO, 1))
        .await;
    h.control_plane.process_pending().await.unwrap();
    let old = h.store.list_runs().await.unwrap().remove(0);
    h.store
        .advance_run(
            &old.run_id,
            issueops_core::store::runs::RunState::Succeeded,
            None,
            None,
        )
        .await
        .unwrap();
    let plan = h
        .control_plane
        .plan_prunes(issueops_core::now_ms() + 1_000)
        .await
        .unwrap();
    assert!(plan
        .runs
        .iter()
        .any(|(r, idle)| r.run_id == old.run_id && *idle));
    // Meanwhile a new trigger starts a run on the same issue.
    h.post_signed("issues", "new-run", &trigger_for(REPO, 1))
        .await;
    h.control_plane.process_pending().await.unwrap();
    h.control_plane.execute_prunes(plan).await.unwrap();
    let namespace = issueops_core::naming::namespace_for_issue(REPO, 1);
    let new = h
        .store
        .list_runs()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.delivery_id == "new-run")
        .unwrap();
    assert_eq!(new.state, "committed");
    assert!(h
        .repo
        .path_exists(&format!("{}/namespace.yaml", issue_dir(&namespace)))
        .unwrap());
    assert!(h
        .repo
        .path_exists(&format!(
            "{}/runs/{}/job.yaml",
            issue_dir(&namespace),
            new.run_id
        ))
        .unwrap());
    assert!(
        !h.repo
            .path_exists(&format!("{}/runs/{}", issue_dir(&namespace), old.run_id))
            .unwrap(),
        "the old run itself is pruned"
    );
    h.finish().await;
}

/// A signed payload whose issue number does not fit is malformed: ignored
/// with the reason, and nothing is stored for a negative issue.
#[tokio::test]
async fn an_issue_number_out_of_range_is_refused_as_malformed() {
    let h = Harness::start(Db::Sqlite).await;
    let mut v: serde_json::Value = serde_json::from_slice(&trigger_for(REPO, 1)).unwrap();
    v["issue"]["number"] = json!(9_223_372_036_854_775_808u64);
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(h.post_signed("issues", "huge", &body).await.0, 202);
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 1);
    assert!(h.store.list_runs().await.unwrap().is_empty());
    assert!(h.repo.log().unwrap().is_empty());
    let decision = h
        .audit()
        .await
        .into_iter()
        .find(|r| r.kind == "decision")
        .unwrap();
    assert_eq!(decision.outcome, "ignored");
    assert!(
        decision.detail.contains("out of range"),
        "{}",
        decision.detail
    );
    h.finish().await;
}

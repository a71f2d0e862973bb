//! Capacity and budgets through the real gateway, control plane and
//! reconciler: caps on active runs with a queue fair across repositories
//! that survives a restart, the queued run's status comment, and the daily
//! budget per repository.

mod common;

use common::{fixture, set_job_status, test_config, Db, Harness};
use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::store::runs::RunState;
use issueops_core::{naming, Config};
use issueops_reconciler::observe::observe_jobs;
use std::collections::HashMap;
use std::sync::Arc;

const REPOS: [&str; 3] = ["acme/api", "acme/web", "beta/cli"];

/// GitHub's `issues.labeled` example, `run:dev` added to issue `issue` of `repo`.
fn labeled(repo: &str, issue: u64) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_str(&fixture("issues/labeled.payload.json")).unwrap();
    let (owner, name) = repo.split_once('/').unwrap();
    v["label"]["name"] = "run:dev".into();
    v["issue"]["number"] = issue.into();
    v["repository"]["full_name"] = repo.into();
    v["repository"]["name"] = name.into();
    v["repository"]["owner"]["login"] = owner.into();
    serde_json::to_vec(&v).unwrap()
}

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config();
    c.repos = REPOS.iter().map(|r| r.to_string()).collect();
    edit(&mut c);
    c
}

/// `repo` → its runs active now; checks the caps on the way.
async fn active(h: &Harness) -> HashMap<String, Vec<String>> {
    let mut by_repo: HashMap<String, Vec<String>> = HashMap::new();
    for r in h.store.list_runs().await.unwrap() {
        if r.run_state().is_some_and(RunState::is_active) {
            by_repo.entry(r.repo.clone()).or_default().push(r.run_id);
        }
    }
    let total: usize = by_repo.values().map(Vec::len).sum();
    assert!(total <= 2, "max_active_runs: {by_repo:?}");
    assert!(
        by_repo.values().all(|v| v.len() <= 1),
        "per repo: {by_repo:?}"
    );
    by_repo
}

/// Ten labels on three repositories, caps 2 and 1 per repository: never
/// more running than the caps, the repositories take turns (a repository
/// with four runs waiting does not hold back one with three), the queued
/// runs' comments give their place, a restart of the control plane in the
/// middle loses nothing and keeps the order, and all ten finish.
/// Catches: a queue in arrival order only (acme/api's four would run before
/// beta/cli's first), caps not checked when dequeuing, and a fairness that
/// forgets who went last across a restart.
#[tokio::test]
async fn ten_runs_on_three_repositories_take_fair_turns_within_the_caps() {
    let cfg = config(|c| {
        c.limits.max_active_runs = Some(2);
        c.limits.max_active_runs_per_repo = Some(1);
    });
    let mut h = Harness::start_configured(Db::Sqlite, cfg.clone()).await;
    let arrivals = [
        (REPOS[0], 1),
        (REPOS[0], 2),
        (REPOS[0], 3),
        (REPOS[0], 4),
        (REPOS[1], 1),
        (REPOS[1], 2),
        (REPOS[1], 3),
        (REPOS[2], 1),
        (REPOS[2], 2),
        (REPOS[2], 3),
    ];
    let mut name_of = HashMap::new();
    for (i, (repo, issue)) in arrivals.iter().enumerate() {
        let delivery = format!("cap-{i}");
        let (status, text) = h
            .post_signed("issues", &delivery, &labeled(repo, *issue))
            .await;
        assert_eq!(status, 202, "{text}");
        name_of.insert(
            naming::run_id_for_delivery(&delivery),
            format!("{}#{issue}", repo.split('/').nth(1).unwrap()),
        );
    }
    h.control_plane.process_pending().await.unwrap();
    h.control_plane.report_pass().await.unwrap();
    // api#1 and web#1 run; eight wait. beta/cli has nothing running, so its
    // first run is next, then api's second (api went before web).
    let bodies = h.store.report_bodies().await.unwrap();
    assert!(
        bodies["cap-7"].contains("is queued, position 1 of 8"),
        "{}",
        bodies["cap-7"]
    );
    assert!(
        bodies["cap-1"].contains("is queued, position 2 of 8"),
        "{}",
        bodies["cap-1"]
    );

    let mut started: Vec<String> = Vec::new();
    let mut rounds: Vec<Vec<String>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for round in 0..6 {
        let now = active(&h).await;
        let mut newly: Vec<String> = now
            .values()
            .flatten()
            .filter(|id| seen.insert((*id).clone()))
            .cloned()
            .collect();
        // Two start in the same pass: their order is the store's.
        newly.sort_by_key(|id| name_of[id].clone());
        started.extend(newly.iter().map(|id| name_of[id].clone()));
        rounds.push(newly.iter().map(|id| name_of[id].clone()).collect());
        if now.is_empty() {
            break;
        }
        h.reconciler.reconcile(false).await.unwrap();
        for id in now.values().flatten() {
            let run = h.store.get_run(id).await.unwrap().unwrap();
            set_job_status(&h.client, &run.namespace, id, "succeeded").await;
        }
        observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
            .await
            .unwrap();
        if round == 2 {
            // A restart: a new control plane on the same database and repo.
            h.control_plane = ControlPlane::new(
                h.store.clone(),
                h.repo.clone(),
                Arc::new(cfg.clone()),
                Templates::embedded(),
            );
        }
        h.control_plane.process_pending().await.unwrap();
    }
    assert_eq!(started.len(), 10, "all ten ran: {started:?}");
    // While nothing ran, arrival order; then beta/cli (never ran) and api
    // (went before web).
    assert_eq!(
        started[..4],
        ["api#1", "web#1", "api#2", "cli#1"],
        "{started:?}"
    );
    // Fair turns: a repository starts its next run only when every other
    // repository with runs waiting has started as many, or starts one in
    // the same pass.
    let total = |repo: &str| started.iter().filter(|s| s.starts_with(repo)).count();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for round in &rounds {
        let repo_of = |s: &String| s.split('#').next().unwrap().to_string();
        let in_round: Vec<String> = round.iter().map(repo_of).collect();
        for repo in &in_round {
            let mine = count.get(repo.as_str()).copied().unwrap_or(0);
            for other in ["api", "web", "cli"] {
                let theirs = count.get(other).copied().unwrap_or(0);
                if !in_round.iter().any(|r| r == other) && theirs < total(other) {
                    assert!(
                        theirs >= mine,
                        "{repo} started run {} before {other} had its turn: {rounds:?}",
                        mine + 1
                    );
                }
            }
        }
        for repo in ["api", "web", "cli"] {
            let n = in_round.iter().filter(|r| *r == repo).count();
            *count.entry(repo).or_default() += n;
        }
    }
    // /metrics: all ten passed through the queue (with a cap every trigger
    // does), and none waits now.
    let metrics = issueops_core::metrics::render();
    assert!(
        metrics.contains("issueops_queue_wait_seconds_count 10"),
        "{metrics}"
    );
    assert!(metrics.contains("issueops_queue_depth 0"), "{metrics}");
    // First in, first out within a repository.
    for repo in ["api", "web", "cli"] {
        let mine: Vec<&String> = started.iter().filter(|s| s.starts_with(repo)).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
    }
    let runs = h.store.list_runs().await.unwrap();
    assert!(
        runs.iter().all(|r| r.state == "succeeded"),
        "{:?}",
        runs.iter()
            .map(|r| (&r.run_id, &r.state))
            .collect::<Vec<_>>()
    );
    h.finish().await;
}

/// `limits.runs_per_day`: a repository's third trigger of the day is refused
/// with a comment naming the limit and when it resets, and leaves no run;
/// another repository still starts. Catches: a budget counted across all
/// repositories, or a refusal that does not say when it resets.
#[tokio::test]
async fn a_repository_over_its_daily_budget_is_refused_with_the_reset_time() {
    let h =
        Harness::start_configured(Db::Sqlite, config(|c| c.limits.runs_per_day = Some(2))).await;
    for (delivery, repo, issue) in [
        ("day-1", REPOS[0], 1),
        ("day-2", REPOS[0], 2),
        ("day-3", REPOS[0], 3),
        ("day-4", REPOS[1], 1),
    ] {
        let (status, text) = h
            .post_signed("issues", delivery, &labeled(repo, issue))
            .await;
        assert_eq!(status, 202, "{text}");
    }
    h.control_plane.process_pending().await.unwrap();
    let runs = h.store.list_runs().await.unwrap();
    let runs_of = |repo: &str| runs.iter().filter(|r| r.repo == repo).count();
    assert_eq!((runs_of(REPOS[0]), runs_of(REPOS[1])), (2, 1));
    let (_, tomorrow) = issueops_control_plane::capacity::utc_day(issueops_core::now_ms());
    let reset = issueops_control_plane::capacity::utc_text(tomorrow);
    let said = h.store.report_bodies().await.unwrap()["day-3"].clone();
    assert!(
        said.contains("this trigger was refused")
            && said.contains("limits.runs_per_day: 2")
            && said.contains(&format!("the count resets at {reset}")),
        "{said}"
    );
    h.finish().await;
}

//! Benchmark: label → agent started and label → pull request recorded, on
//! the test cluster's real node (`eval "$(scripts/cluster up)"` first): the
//! real `issueops serve` (as the gate starts it, polling every second),
//! kube-apiserver and the Job controller, the kubelet with containerd and
//! runc running the agent image built from agent/Dockerfile, already loaded.
//!
//! Each run is a new issue labelled `run:dev` with the stand-in agent's
//! `edit` model, posted as a signed webhook to the gateway. Times, from just
//! before the POST:
//! - applied: the reconciler's first `applied` audit row of the run;
//! - agent started: the agent's first act, reading its prompt into its home
//!   (the mtime of `session/last-prompt.md` in the issue's agent-home volume,
//!   a folder on this machine);
//! - PR recorded: the `agent.result` audit row (the reconciler read the
//!   runner's result after the pushed branch and the opened pull request).
//!
//! One warm-up run is not counted. Each issue is closed and pruned before
//! the next. `cargo bench --bench label_to_agent -- [RUNS]` (default 20);
//! `ISSUEOPS_E2E_BIN` runs another build's issueops binary.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/env.rs"]
mod env;

use env::{agent_home_on_the_node, close_and_prune, node_under_test, Env};
use issueops_core::naming;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Sample {
    applied: f64,
    agent_started: f64,
    pr_recorded: f64,
}

async fn one_run(env: &Env, delivery: &str) -> Sample {
    let issue = common::unique_issue();
    let namespace = naming::namespace_for_issue(common::REPO, issue);
    let run = naming::run_id_for_delivery(delivery);
    let labelled = ms(SystemTime::now());
    env.label_with(
        delivery,
        issue,
        "run:dev",
        "Codertocat",
        &["run:dev", "ai-model:edit"],
    )
    .await;
    env.wait_state(&run, &["succeeded", "failed", "cancelled", "pruned"])
        .await;
    let result = env.store.run_result(&run).await.unwrap();
    assert_eq!(
        result.as_ref().map(|r| r.outcome.as_str()),
        Some("pr-opened"),
        "{result:?}"
    );
    let audit = env.store.audit_rows_for_run(&run).await.unwrap();
    let at = |kind: Option<&str>, outcome: &str| {
        audit
            .iter()
            .find(|r| kind.is_none_or(|k| r.kind == k) && r.outcome == outcome)
            .map(|r| r.at as f64)
            .unwrap_or_else(|| panic!("no {outcome} audit row for {run}"))
    };
    let home = agent_home_on_the_node(env, &namespace).await;
    let prompt = home.join("session/last-prompt.md");
    let started = ms(std::fs::metadata(&prompt)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", prompt.display())));
    let sample = Sample {
        applied: at(None, "applied") - labelled,
        agent_started: started - labelled,
        pr_recorded: at(Some("agent.result"), "pr-opened") - labelled,
    };
    close_and_prune(env, &format!("{delivery}-close"), issue).await;
    sample
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let node = node_under_test();
    assert_eq!(
        node.kind, "real",
        "run on the real node: `eval \"$(scripts/cluster up)\"` (ISSUEOPS_NODE unset)"
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/label_to_agent");
    std::fs::create_dir_all(&root).unwrap();
    let env = Env::start(&root).await;
    let _warm_up = one_run(&env, &format!("bench-agent-warm-{}", env.instance)).await;
    let mut samples = Vec::new();
    for i in 0..runs {
        samples.push(one_run(&env, &format!("bench-agent-{i}-{}", env.instance)).await);
    }
    println!(
        "label → agent, {runs} runs on the real node, agent image {}, binary {}",
        node.image_id.as_deref().unwrap_or("?"),
        env::bin()
    );
    println!("| step | p50 | p95 | max |\n|---|---|---|---|");
    type Pick = fn(&Sample) -> f64;
    let steps: [(&str, Pick); 3] = [
        ("label → Job applied", |s| s.applied),
        ("label → agent started", |s| s.agent_started),
        ("label → PR recorded", |s| s.pr_recorded),
    ];
    for (name, pick) in steps {
        let mut v: Vec<f64> = samples.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms |",
            percentile(&v, 0.5),
            percentile(&v, 0.95),
            v[v.len() - 1]
        );
    }
    let mut serve = env.serve.lock().unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
}

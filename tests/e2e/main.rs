//! The regression gate (`scripts/e2e`): the scenario matrix against the real
//! `issueops serve` binary, through its gateway with signed webhooks, applying
//! to the real test cluster (`scripts/cluster`), with GitHub played by a local
//! fake answering GitHub's documented shapes. Scenarios run in order, each
//! recorded with its evidence (run ids, commit shas, audit ids) in
//! `target/e2e/report.json` and `report.md`; a failed one fails the gate.
//!
//! Not part of `cargo test` (`test = false`): `scripts/e2e` runs it.

#[path = "../common/mod.rs"]
mod common;

mod env;
mod hardening;
mod review;
mod scale;

use common::git_http;
use env::{
    agent_home_on_the_node, agent_image, bin, close_and_prune, node_report, token_file_on_the_node,
    Env, Evidence, AGENT_TOKEN, APPROVER, STRANGER,
};
use hardening::{
    forged_flood_leaves_no_trace_but_a_counter, poison_delivery_dead_lettered_others_flow,
    two_replicas_one_writer, unmanaged_object_not_taken_over,
};
use issueops_core::naming;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ListParams};
use review::{
    audit_trail_verifies, review_denied_leaves_nothing,
    review_label_proposes_then_approval_applies, untrusted_commit_waits_for_a_reviewer_signature,
};
use scale::kubectl_edit_drift_corrected_by_resync;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Issues {
    dev: u64,
    agent: u64,
    approval: u64,
    held: [u64; 3],
    /// Where the hostile agent runs, and the weakening commit is tried.
    hostile: u64,
    /// Where the hostile agent's link and huge file are refused.
    hostile_refused: u64,
    /// An issue whose namespace someone else created first.
    foreign: u64,
    /// Where the agent changes nothing, fails, and waits for a token refresh.
    nothing: u64,
    failing: u64,
    refresh: u64,
    /// Where the real Codex CLI runs (a second install).
    codex: u64,
    /// Proposed for review and approved; then an untrusted commit changes
    /// its quota.
    review: u64,
    /// Proposed for review and denied.
    review_denied: u64,
}

async fn dev_run_to_succeeded_and_pruned(env: &Env, issues: &Issues) -> Evidence {
    env.label("e2e-dev-1", issues.dev, "run:dev", "Codertocat")
        .await;
    let run = naming::run_id_for_delivery("e2e-dev-1");
    let namespace = naming::namespace_for_issue(common::REPO, issues.dev);
    env.let_succeed(&run).await;
    env.wait_state(&run, &["pruned"]).await;
    env.wait_until("the namespace is deleted", || async {
        !env.our_namespaces().await.contains(&namespace)
    })
    .await;
    let audit = env.store.audit_rows_for_run(&run).await.unwrap();
    for outcome in ["applied", "running", "succeeded", "deleted"] {
        assert!(
            audit.iter().any(|r| r.outcome == outcome),
            "no {outcome} audit row for {run}"
        );
    }
    let mut e = env.run_evidence(&run).await;
    e.insert("namespace".into(), namespace.into());
    e
}

/// The agent's run, once it has ended: its record, the runner's result, and
/// the head of its branch in the code repository.
async fn agent_run(env: &Env, run: &str) -> (issueops_core::store::results::RunResult, String) {
    let mut state = env
        .wait_state(run, &["succeeded", "failed", "cancelled", "pruned"])
        .await;
    // Pruned at once when it ended (retention 0): how it ended is audited.
    if state == "pruned" {
        state = env
            .store
            .audit_rows_for_run(run)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .find(|r| ["succeeded", "failed", "cancelled"].contains(&r.outcome.as_str()))
            .map(|r| r.outcome)
            .unwrap_or(state);
    }
    let record = env.store.get_run(run).await.unwrap().unwrap();
    assert_eq!(state, "succeeded", "run {run}: {:?}", record.reason);
    let result = env
        .store
        .run_result(run)
        .await
        .unwrap()
        .expect("the runner's result was recorded");
    let bare = env.git.root.join(format!("{}.git", common::REPO));
    let head = git_http::git(
        &bare,
        &["rev-parse", &format!("refs/heads/{}", record.branch)],
    )
    .trim()
    .to_string();
    (result, head)
}

/// The status comment issueops wants on the issue for `delivery`.
async fn status_comment(env: &Env, delivery: &str, wanted: &str) -> String {
    env.wait_for(&format!("the status comment says {wanted:?}"), || async {
        env.store
            .report_bodies()
            .await
            .unwrap()
            .get(delivery)
            .filter(|b| b.contains(wanted))
            .cloned()
    })
    .await
}

/// Labels `issue` for a dev run (`delivery`, the issue carrying `labels`),
/// waits for its agent to open a pull request, and checks that the pushed
/// head of the run's branch is the commit the runner reported, made for the
/// run. Returns the run, its result and that commit.
async fn agent_opens_a_pull_request(
    env: &Env,
    delivery: &str,
    issue: u64,
    labels: &[&str],
) -> (String, issueops_core::store::results::RunResult, String) {
    env.label_with(delivery, issue, "run:dev", "Codertocat", labels)
        .await;
    let run = naming::run_id_for_delivery(delivery);
    let (result, head) = agent_run(env, &run).await;
    assert_eq!(result.outcome, "pr-opened", "{result:?}");
    assert_eq!(
        result.head_commit.as_deref(),
        Some(head.as_str()),
        "the pushed commit is the reported one"
    );
    let bare = env.git.root.join(format!("{}.git", common::REPO));
    let message = git_http::git(&bare, &["log", "-1", "--format=%B", &head]);
    assert!(message.contains(&format!("Run-Id: {run}")), "{message}");
    (run, result, head)
}

async fn agent_dev_opens_a_pull_request(env: &Env, issues: &Issues) -> Evidence {
    // run:debug keeps the namespace (and the agent's home) for the revise.
    let (run, result, head) = agent_opens_a_pull_request(
        env,
        "e2e-agent-dev",
        issues.agent,
        &["run:dev", "ai-model:edit", "run:debug"],
    )
    .await;
    let branch = naming::branch_for_issue(issues.agent);
    let bare = env.git.root.join(format!("{}.git", common::REPO));
    let changes = git_http::git(&bare, &["show", &format!("{head}:CHANGES.md")]);
    assert!(
        changes.contains(&format!("run {run} (dev, edit/medium): new session")),
        "{changes}"
    );
    let pulls = env.api.pulls();
    let pr = pulls
        .iter()
        .find(|p| p.head == branch)
        .expect("a pull request from the run's branch");
    assert_eq!(result.pr_number, Some(pr.number as i64));
    assert!(
        pr.body.starts_with(&format!("Closes #{}", issues.agent)),
        "{}",
        pr.body
    );
    assert_eq!(pr.labels, ["state:in-review"]);
    let comment = status_comment(
        env,
        "e2e-agent-dev",
        &format!("opened pull request #{}", pr.number),
    )
    .await;
    let audit = env.store.audit_rows_for_run(&run).await.unwrap();
    let reported = audit
        .iter()
        .find(|r| r.kind == "agent.result" && r.outcome == "pr-opened")
        .expect("an agent.result audit row");
    let label_removed = env
        .wait_for("the trigger label is removed from the issue", || async {
            env.store
                .audit_rows_for_run(&run)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.kind == "labels" && r.outcome == "trigger-removed")
        })
        .await;
    let removed = env.api.state.lock().unwrap().removed_labels.clone();
    assert!(
        removed.contains(&(issues.agent, "run:dev".to_string())),
        "GitHub was asked to remove run:dev: {removed:?}"
    );
    let mut e = env.run_evidence(&run).await;
    e.extend(env.agent_placement(&run).await);
    e.insert("pr_number".into(), pr.number.into());
    e.insert("branch".into(), branch.into());
    e.insert("head_commit".into(), head.into());
    e.insert("agent_result_audit_id".into(), reported.id.into());
    e.insert("label_removed_audit_id".into(), label_removed.id.into());
    e.insert("status_comment".into(), comment.into());
    e
}

async fn agent_revise_updates_the_pull_request(env: &Env, issues: &Issues) -> Evidence {
    let branch = naming::branch_for_issue(issues.agent);
    let pr = env
        .api
        .pulls()
        .into_iter()
        .find(|p| p.head == branch)
        .expect("the dev scenario's pull request");
    let dev_run = naming::run_id_for_delivery("e2e-agent-dev");
    let dev_head = env
        .store
        .run_result(&dev_run)
        .await
        .unwrap()
        .unwrap()
        .head_commit
        .unwrap();
    env.api.review(
        pr.number,
        "e2e-reviewer",
        "Say which model ran.",
        "CHANGES.md",
        1,
    );
    env.label_with(
        "e2e-agent-revise",
        issues.agent,
        "run:dev:revise",
        "Codertocat",
        &["run:dev:revise", "ai-model:edit", "run:debug"],
    )
    .await;
    let run = naming::run_id_for_delivery("e2e-agent-revise");
    let (result, head) = agent_run(env, &run).await;
    let record = env.store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(
        (record.mode.as_str(), record.branch.as_str()),
        ("revise", branch.as_str())
    );
    assert_eq!(result.outcome, "pr-updated");
    assert_eq!(
        result.pr_number,
        Some(pr.number as i64),
        "the same pull request"
    );
    assert!(
        result.resumed_session,
        "the agent's home held the dev run's session"
    );
    assert_eq!(env.api.pulls().len(), 1, "no second pull request");
    let bare = env.git.root.join(format!("{}.git", common::REPO));
    let parent = git_http::git(&bare, &["rev-parse", &format!("{head}^")]);
    assert_eq!(
        parent.trim(),
        dev_head,
        "the revise commit follows the dev commit"
    );
    let changes = git_http::git(&bare, &["show", &format!("{head}:CHANGES.md")]);
    assert!(
        changes.contains(&format!(
            "run {run} (revise, edit/medium): resumed session {dev_run}"
        )),
        "{changes}"
    );
    let comment = status_comment(
        env,
        "e2e-agent-revise",
        &format!("updated pull request #{}", pr.number),
    )
    .await;
    assert!(
        comment.contains("resumed the agent's earlier session"),
        "{comment}"
    );
    let mut e = env.run_evidence(&run).await;
    e.extend(env.agent_placement(&run).await);
    e.insert("pr_number".into(), pr.number.into());
    e.insert("head_commit".into(), head.into());
    e.insert("status_comment".into(), comment.into());
    e
}

/// Labels `issue` for a dev run with the agent model `model` and waits for
/// the run to end; returns the run, its state and its result. Callers close
/// the issue after ([`close_and_prune`]), so the idle timer never prunes it
/// in a later scenario.
async fn agent_run_to_its_end(
    env: &Env,
    delivery: &str,
    issue: u64,
    model: &str,
) -> (String, String, issueops_core::store::results::RunResult) {
    env.label_with(
        delivery,
        issue,
        "run:dev",
        "Codertocat",
        &["run:dev", &format!("ai-model:{model}")],
    )
    .await;
    let run = naming::run_id_for_delivery(delivery);
    let state = env
        .wait_state(&run, &["succeeded", "failed", "cancelled", "pruned"])
        .await;
    let result = env
        .store
        .run_result(&run)
        .await
        .unwrap()
        .expect("the runner's result was recorded");
    (run, state, result)
}

/// The agent changes nothing: the run succeeds as `no-changes`, nothing is
/// pushed, no pull request is opened, and the status comment says so.
/// Caught: the pruned run's comment saying only "finished and was pruned"
/// (its first run, before `report.rs` kept the outcome).
async fn agent_without_changes_pushes_nothing(env: &Env, issues: &Issues) -> Evidence {
    let pulls_before = env.api.pulls().len();
    let (run, state, result) =
        agent_run_to_its_end(env, "e2e-agent-nothing", issues.nothing, "nothing").await;
    assert!(["succeeded", "pruned"].contains(&state.as_str()), "{state}");
    assert_eq!(result.outcome, "no-changes", "{result:?}");
    assert_eq!(result.pr_number, None);
    let bare = env.git.root.join(format!("{}.git", common::REPO));
    let branch = naming::branch_for_issue(issues.nothing);
    let branches = git_http::git(&bare, &["for-each-ref", "--format=%(refname)"]);
    assert!(
        !branches.contains(&branch),
        "a branch was pushed: {branches}"
    );
    assert_eq!(env.api.pulls().len(), pulls_before, "no pull request");
    let comment = status_comment(env, "e2e-agent-nothing", "finished without changes").await;
    let mut e = env.run_evidence(&run).await;
    e.extend(env.agent_placement(&run).await);
    close_and_prune(env, "e2e-agent-nothing-close", issues.nothing).await;
    e.insert("outcome".into(), result.outcome.into());
    e.insert("status_comment".into(), comment.into());
    e
}

/// The agent fails (exit 7, output on both streams): the run fails with the
/// agent's exit as its reason, the agent is not run again, nothing is
/// pushed, and the status comment carries the reason.
async fn agent_failure_is_reported(env: &Env, issues: &Issues) -> Evidence {
    let (run, state, result) =
        agent_run_to_its_end(env, "e2e-agent-fail", issues.failing, "fail").await;
    let record = env.store.get_run(&run).await.unwrap().unwrap();
    // Pruned at once (run_retention_seconds: 0); the result says it failed.
    assert!(
        ["failed", "pruned"].contains(&state.as_str()),
        "{state}: {:?}",
        record.reason
    );
    assert_eq!(result.outcome, "failed", "{result:?}");
    let reason = result.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("the agent exited with status 7"),
        "{reason}"
    );
    let namespace = naming::namespace_for_issue(common::REPO, issues.failing);
    let pods = Api::<Pod>::namespaced(env.kube.clone(), &namespace)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name=run-{run}")))
        .await
        .unwrap();
    assert!(
        pods.items.len() <= 1,
        "the agent ran again: {} pods",
        pods.items.len()
    );
    let bare = env.git.root.join(format!("{}.git", common::REPO));
    let branches = git_http::git(&bare, &["for-each-ref", "--format=%(refname)"]);
    assert!(
        !branches.contains(&naming::branch_for_issue(issues.failing)),
        "{branches}"
    );
    let comment = status_comment(env, "e2e-agent-fail", "the agent exited with status 7").await;
    let mut e = env.run_evidence(&run).await;
    e.extend(env.agent_placement(&run).await);
    close_and_prune(env, "e2e-agent-fail-close", issues.failing).await;
    e.insert("reason".into(), reason.into());
    e.insert("status_comment".into(), comment.into());
    e
}

/// The failing agent's run, pruned (its namespace and pod gone): its
/// transcript was kept when the Job ended, with what the agent printed on
/// both streams, and the run's page and `GET /api/v1/runs/{id}` (a viewer
/// token made by `issueops api-tokens create`) both still show it; the
/// viewer token cannot cancel. Caught: a transcript read after the prune
/// (the pod is gone by then, nothing is kept).
async fn pruned_run_keeps_its_transcript(env: &Env, issues: &Issues) -> Evidence {
    let run = naming::run_id_for_delivery("e2e-agent-fail");
    env.wait_state(&run, &["pruned"]).await;
    let namespace = naming::namespace_for_issue(common::REPO, issues.failing);
    env.wait_until("the failing run's namespace is gone", || async {
        !env.our_namespaces().await.contains(&namespace)
    })
    .await;
    let kept = env
        .store
        .transcript(&run)
        .await
        .unwrap()
        .expect("the transcript was kept when the Job ended");
    for said in [
        "===== agent =====",
        "agent: reading the repository",
        "agent: something broke",
    ] {
        assert!(kept.text.contains(said), "{said:?} not in:\n{}", kept.text);
    }
    assert!(
        !kept.text.contains(AGENT_TOKEN),
        "the token is in the transcript"
    );

    let token = env
        .cli(&[
            "api-tokens",
            "create",
            "--name",
            "e2e-viewer",
            "--role",
            "viewer",
        ])
        .trim()
        .to_string();
    let ui = env.ui_link.split("/signin").next().unwrap().to_string();
    let api: Value = env
        .http
        .get(format!("{ui}/api/v1/runs/{run}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["run"]["state"], "pruned", "{api}");
    assert_eq!(api["transcript"]["text"].as_str(), Some(kept.text.as_str()));
    let cancel = env
        .http
        .post(format!("{ui}/api/v1/runs/{run}/cancel"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "reason": "viewer tries" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cancel.status().as_u16(),
        403,
        "a viewer token cannot decide"
    );

    // The page, in Chromium, signed in by the last one-time link the server
    // printed, or (that one used) a fresh one: a visit to the sign-in page
    // prints it in the server's log.
    let printed = || {
        let log = std::fs::read_to_string(env.work.parent().unwrap().join("serve.log")).unwrap();
        log.lines()
            .rev()
            .find_map(|l| {
                l.split_once("one-time link): ")
                    .or_else(|| l.split_once("(one-time): "))
            })
            .map(|(_, link)| link.trim().to_string())
    };
    let b = common::browser::Browser::start().await;
    let last = printed().expect("serve printed a sign-in link");
    b.client.goto(&last).await.unwrap();
    if b.path().await != "/runs" {
        env.http.get(format!("{ui}/signin")).send().await.unwrap();
        let fresh = env
            .wait_for("a fresh sign-in link in the log", || async {
                printed().filter(|l| *l != last)
            })
            .await;
        b.client.goto(&fresh).await.unwrap();
        assert_eq!(b.path().await, "/runs", "signed in by the fresh link");
    }
    b.client.goto(&format!("{ui}/runs/{run}")).await.unwrap();
    let shown = b.wait_text("#transcript", "agent: something broke").await;
    assert!(shown.contains("agent: reading the repository"), "{shown}");
    assert_eq!(b.text("#run-state").await, "pruned");
    let mut e = Evidence::new();
    e.insert("run".into(), run.into());
    e.insert("transcript_bytes".into(), kept.size.into());
    e.insert("transcript".into(), kept.text.into());
    e
}

/// A run's token expires mid-run: the reconciler mints a new one into the
/// run's Secret, the node puts it in the publish container's token file,
/// and the push authenticates with it, the old token being refused by then.
/// The agent waits (in its home, the claim's folder on the node) until the
/// test has seen the new token in the container's volume.
/// Caught: the reconciler's refresh margin set to 0 (timed out waiting for
/// the new token in the container's volume).
async fn token_refreshed_mid_run_reaches_the_push(env: &Env, issues: &Issues) -> Evidence {
    const FIRST: &str = "ghs_e2eREFRESHfirstTOKEN0000001";
    const SECOND: &str = "ghs_e2eREFRESHsecondTOKEN000002";
    // Due for refresh at once (the reconciler refreshes 15 minutes ahead).
    let soon = k8s_openapi::jiff::Timestamp::now() + Duration::from_secs(600);
    env.app_token.set(FIRST, &soon.to_string());
    env.git.set_token(FIRST);
    let delivery = "e2e-token-refresh";
    env.label_with(
        delivery,
        issues.refresh,
        "run:dev",
        "Codertocat",
        &["run:dev", "ai-model:edit-when-told"],
    )
    .await;
    let run = naming::run_id_for_delivery(delivery);
    let namespace = naming::namespace_for_issue(common::REPO, issues.refresh);
    let home = agent_home_on_the_node(env, &namespace).await;
    env.wait_until("the agent waits in its home", || async {
        home.join("waiting").exists()
    })
    .await;
    let pod = env
        .wait_for("the run's pod", || async {
            Api::<Pod>::namespaced(env.kube.clone(), &namespace)
                .list(
                    &ListParams::default()
                        .labels(&format!("batch.kubernetes.io/job-name=run-{run}")),
                )
                .await
                .unwrap()
                .items
                .into_iter()
                .next()
        })
        .await;
    let token_file = token_file_on_the_node(&pod);
    let read = || std::fs::read_to_string(&token_file).unwrap_or_default();
    assert_eq!(read(), FIRST, "the pod started with the first token");

    // The first token is no longer good; the App mints a second one.
    env.app_token.set(SECOND, "2099-01-01T00:00:00Z");
    env.git.set_token(SECOND);
    env.wait_until("the container's token file holds the new token", || async {
        read() == SECOND
    })
    .await;
    std::fs::write(home.join("go"), "").unwrap();
    let (result, head) = agent_run(env, &run).await;
    env.app_token.set(AGENT_TOKEN, "2099-01-01T00:00:00Z");
    env.git.set_token(AGENT_TOKEN);
    assert_eq!(result.outcome, "pr-opened", "{result:?}");
    let seen = env.git.passwords_seen();
    assert_eq!(
        seen.iter()
            .rev()
            .find(|p| p.starts_with("ghs_e2eREFRESH"))
            .map(String::as_str),
        Some(SECOND),
        "the push authenticated with the refreshed token"
    );
    assert!(
        seen.iter().any(|p| p == FIRST),
        "the clone used the first token"
    );
    let minted = env
        .store
        .audit_rows_for_run(&run)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "credentials" && r.outcome == "written")
        .count();
    assert!(minted >= 2, "{minted} tokens minted for the run");
    let mut e = env.run_evidence(&run).await;
    e.extend(env.agent_placement(&run).await);
    close_and_prune(env, "e2e-token-refresh-close", issues.refresh).await;
    e.insert("tokens_minted".into(), minted.into());
    e.insert("head_commit".into(), head.into());
    e.insert("token_file".into(), token_file.display().to_string().into());
    e
}

/// Pod Security `restricted` in an issue namespace: a pod without the Job's
/// hardening is refused at admission, while the hardened Job's pod ran
/// (the dev run's, on the real node).
async fn pod_security_refuses_an_unhardened_pod(env: &Env, issues: &Issues) -> Evidence {
    let namespace = naming::namespace_for_issue(common::REPO, issues.agent);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "unhardened" },
        "spec": { "containers": [{ "name": "c", "image": agent_image(), "args": ["agent"] }] },
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(env.kube.clone(), &namespace)
        .create(&kube::api::PostParams::default(), &pod)
        .await;
    let message = match refused {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("an unhardened pod was not refused: {other:?}"),
    };
    for missing in [
        "allowPrivilegeEscalation",
        "capabilities",
        "runAsNonRoot",
        "seccompProfile",
    ] {
        assert!(message.contains(missing), "{missing}: {message}");
    }
    let dev_run = naming::run_id_for_delivery("e2e-agent-dev");
    let mut e = Evidence::new();
    e.insert("refused".into(), message.into());
    e.insert("hardened_run".into(), dev_run.clone().into());
    e.extend(env.agent_placement(&dev_run).await);
    e
}

/// The default agent argv (`AgentConfig::default()`: `codex exec …`, and
/// `… resume --last -` for revise) with a model provider pointing at the
/// scripted model put in before the prompt argument (or `resume`): the only
/// change a deployment with its own model endpoint makes.
fn codex_argv(default: &[String], model: &common::scripted_model::ScriptedModel) -> Vec<String> {
    let provider = [
        "--config".to_string(),
        "model_provider=\"scripted\"".to_string(),
        "--config".to_string(),
        format!(
            "model_providers.scripted={{ name = \"scripted model\", base_url = \"{}\", env_key = \"OPENAI_API_KEY\", wire_api = \"responses\" }}",
            model.base_url()
        ),
    ];
    let at = default
        .iter()
        .position(|a| a == "resume" || a == "-")
        .expect("the default argv ends with its prompt argument");
    let mut argv = default.to_vec();
    argv.splice(at..at, provider);
    argv
}

/// The real Codex CLI (`@openai/codex`, the version agent/Dockerfile pins,
/// in the agent image) runs the dev and the revise run of an issue with the
/// default argv, against a scripted model server speaking the Responses
/// API. A second install (its own `issueops serve`, fake GitHub and git
/// server) runs with that argv and a model API key. Checked: the key reaches
/// the model (and the token never does); the prompt the clone step rendered
/// reaches the model; the file the model's `apply_patch` call asked for is
/// the pushed change; Codex's session lands on the issue's agent-home claim;
/// the revise run's `resume --last` finds it (the model is sent the dev
/// conversation again) and its change updates the same pull request.
/// Caught: the revise argv without `resume --last` (Codex started afresh,
/// wrote the same file again: `no-changes`).
async fn codex_dev_and_revise_with_a_scripted_model(_env: &Env, issues: &Issues) -> Evidence {
    const KEY: &str = "sk-e2e-scripted-model-key-0001";
    let model = common::scripted_model::ScriptedModel::start().await;
    let defaults = issueops_core::config::AgentConfig::default();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e/codex");
    std::fs::create_dir_all(&root).unwrap();
    let codex = Env::start_with(
        &root,
        env::AgentSetup {
            command_dev: codex_argv(&defaults.command_dev, &model),
            command_revise: codex_argv(&defaults.command_revise, &model),
            models: defaults.models.clone(),
            default_model: defaults.default_model.clone(),
            api_key: Some(KEY.into()),
        },
    )
    .await;
    let issue = issues.codex;
    let (dev_run, dev, dev_head) =
        agent_opens_a_pull_request(&codex, "e2e-codex-dev", issue, &["run:dev", "run:debug"]).await;
    let bare = codex.git.root.join(format!("{}.git", common::REPO));
    let show = |head: &str, file: &str| git_http::git(&bare, &["show", &format!("{head}:{file}")]);
    assert!(
        show(&dev_head, "CODEX.md").contains("Written by Codex"),
        "the model's edit is the pushed change"
    );
    let seen = model.seen();
    assert!(
        !seen.is_empty(),
        "Codex never asked the model: {:?}",
        model.paths().await
    );
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert!(
            !s.body.to_string().contains(AGENT_TOKEN),
            "the token reached the model"
        );
    }
    let title = codex.api.state.lock().unwrap().issues[&issue].0.clone();
    assert!(
        seen[0].body["input"].to_string().contains(&title),
        "the rendered prompt (with the issue's title {title:?}) reached the model"
    );
    let namespace = naming::namespace_for_issue(common::REPO, issue);
    let home = agent_home_on_the_node(&codex, &namespace).await;
    let sessions = walk(&home.join(".codex/sessions"));
    assert!(
        sessions
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "jsonl")),
        "Codex's session is on the agent-home claim: {sessions:?}"
    );

    let pr = dev.pr_number.expect("the dev run's pull request") as u64;
    codex.api.review(
        pr,
        "e2e-reviewer",
        "Add a note on the revision.",
        "CODEX.md",
        1,
    );
    let asked_before = model.seen().len();
    codex
        .label_with(
            "e2e-codex-revise",
            issue,
            "run:dev:revise",
            "Codertocat",
            &["run:dev:revise", "run:debug"],
        )
        .await;
    let revise_run = naming::run_id_for_delivery("e2e-codex-revise");
    let (revised, revise_head) = agent_run(&codex, &revise_run).await;
    assert_eq!(revised.outcome, "pr-updated", "{revised:?}");
    assert_eq!(revised.pr_number, dev.pr_number, "the same pull request");
    assert!(show(&revise_head, "REVISED.md").contains("resumed session"));
    let resumed = model.seen()[asked_before..]
        .first()
        .map(|s| s.body["input"].to_string())
        .unwrap_or_default();
    assert!(
        resumed.contains(common::scripted_model::DEV_CALL),
        "resume --last sent the dev conversation again"
    );
    let mut e = codex.run_evidence(&dev_run).await;
    e.extend(codex.agent_placement(&dev_run).await);
    e.insert("revise_run".into(), revise_run.into());
    e.insert(
        "model_answered".into(),
        json!(model
            .seen()
            .iter()
            .map(|s| s.answered.clone())
            .collect::<Vec<_>>()),
    );
    e.insert("pr_number".into(), pr.into());
    e.insert(
        "sessions".into(),
        json!(sessions
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()),
    );
    close_and_prune(&codex, "e2e-codex-close", issue).await;
    codex.stop();
    e
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The staff UI in headless Chromium: the agent issue's runs, each with its
/// pull request, and the dev run's page with its state, PR, timeline and
/// state-repo diff; the token is never on a page.
async fn staff_ui_shows_the_run_and_its_pr(env: &Env, issues: &Issues) -> Evidence {
    let dev_run = naming::run_id_for_delivery("e2e-agent-dev");
    let result = env.store.run_result(&dev_run).await.unwrap().unwrap();
    let pr_url = result.pr_url.clone().expect("the dev run's PR url");
    let pr = result.pr_number.expect("the dev run's PR number");
    let b = common::browser::Browser::start().await;
    let c = &b.client;
    c.goto(&env.ui_link).await.unwrap();
    assert_eq!(b.path().await, "/runs", "signed in by the printed link");
    let ui = env.ui_link.split("/signin").next().unwrap().to_string();

    c.goto(&format!("{ui}/runs?label=run:dev")).await.unwrap();
    let row = b
        .wait_text(
            &format!("tr[data-run='{dev_run}']"),
            &format!("#{}", issues.agent),
        )
        .await;
    assert!(row.contains(&format!("#{pr}")), "PR in the list: {row}");
    c.goto(&format!("{ui}/issues/{}/{}", common::REPO, issues.agent))
        .await
        .unwrap();
    let revise_run = naming::run_id_for_delivery("e2e-agent-revise");
    let issue_page = b.wait_text("main", &revise_run).await;
    assert!(issue_page.contains(&dev_run), "{issue_page}");

    c.goto(&format!("{ui}/runs/{dev_run}")).await.unwrap();
    b.wait_text("#pr", &format!("#{pr}")).await;
    let href = c
        .find(fantoccini::Locator::Css("#pr a"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap();
    assert_eq!(href.as_deref(), Some(pr_url.as_str()));
    let state = b.text("#run-state").await;
    assert!(["succeeded", "pruned"].contains(&state.as_str()), "{state}");
    b.wait_text("#pr", "pr-opened").await;
    b.wait_text("#diff", "kind: Job").await;
    b.wait_text("table.timeline", "agent.result").await;
    b.wait_text("#token-secret", "never shown").await;
    // The pod's log tail per step, through the API server's pods/log
    // (proxied to the node stand-in's kubelet endpoint): publish's last line
    // is the run's result; the agent step's log has the agent's output.
    let log = b.wait_text("#log-publish", "issueops-result").await;
    assert!(log.contains("pr-opened"), "{log}");
    let agent_log = b.text("#log-agent").await;
    assert!(
        agent_log.contains("agent: edited CHANGES.md"),
        "{agent_log}"
    );
    let clone_log = b.text("#log-clone").await;
    assert!(
        clone_log.contains("cloned; the agent step is next"),
        "{clone_log}"
    );
    let source = c.source().await.unwrap();
    assert!(!source.contains(AGENT_TOKEN), "the token is on a page");
    let shot = b.screenshot("e2e-run").await;
    let kept = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e/staff-ui-run.png");
    std::fs::copy(&shot, &kept).unwrap();
    let mut e = Evidence::new();
    e.insert("run".into(), dev_run.into());
    e.insert("pr_url".into(), pr_url.into());
    e.insert("run_state_shown".into(), state.into());
    e.insert("screenshot".into(), kept.display().to_string().into());
    e
}

async fn redelivery_deduped(env: &Env, issues: &Issues) -> Evidence {
    let mut v: Value =
        serde_json::from_slice(&common::labeled_issue("run:dev", issues.dev)).unwrap();
    v["sender"]["login"] = "Codertocat".into();
    let body = serde_json::to_vec(&v).unwrap();
    let runs_before = env.store.list_runs().await.unwrap().len();
    let (status, text) = env.post_signed("e2e-dev-1", &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("duplicate"), "{text}");
    assert_eq!(
        env.store.list_runs().await.unwrap().len(),
        runs_before,
        "no new run"
    );
    let mut e = Evidence::new();
    e.insert("delivery_id".into(), "e2e-dev-1".into());
    e.insert("status".into(), status.into());
    e
}

async fn forged_delivery_refused(env: &Env, issues: &Issues) -> Evidence {
    let body = common::labeled_issue("run:dev", issues.dev);
    let forged = issueops_gateway::sign(b"not-the-secret", &body);
    let (status, _) = env.post("e2e-forged-1", &body, Some(forged)).await;
    assert_eq!(status, 401);
    let (unsigned, _) = env.post("e2e-forged-2", &body, None).await;
    assert_eq!(unsigned, 401);
    assert!(env
        .store
        .get_run(&naming::run_id_for_delivery("e2e-forged-1"))
        .await
        .unwrap()
        .is_none());
    let mut e = Evidence::new();
    e.insert("statuses".into(), json!([status, unsigned]));
    e
}

/// A trigger from someone without write access becomes a pending approval
/// and nothing else: the control plane finishes with the delivery without a
/// run or a state-repo commit, and a whole reconciler pass later the issue
/// still has no namespace. Catches a control plane that records the request
/// and starts the run anyway (`return self.request_approval(…)` in
/// `control-plane/src/lib.rs` made `self.request_approval(…)?;`).
async fn untrusted_sender_waits_for_approval(env: &Env, issues: &Issues) -> Evidence {
    env.label("e2e-approval-1", issues.approval, "run:dev", STRANGER)
        .await;
    let pending = env
        .wait_for("an approval request", || async {
            env.store
                .list_approvals()
                .await
                .unwrap()
                .into_iter()
                .find(|a| a.delivery_id == "e2e-approval-1" && a.state == "pending")
        })
        .await;
    let outcome = env
        .wait_for("the control plane is done with the delivery", || {
            env.processed("e2e-approval-1")
        })
        .await;
    let runs: Vec<_> = env
        .store
        .list_runs()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.delivery_id == "e2e-approval-1" || r.issue_number == issues.approval as i64)
        .collect();
    assert!(runs.is_empty(), "a run before the approval: {runs:?}");
    let commits = env.commits_for_delivery("e2e-approval-1");
    assert!(
        commits.is_empty(),
        "committed before the approval: {commits:?}"
    );
    // And it stays so: a whole reconciler pass later, nothing in the cluster.
    let requested = env
        .store
        .audit_rows()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.delivery_id.as_deref() == Some("e2e-approval-1"))
        .map(|r| r.id)
        .max()
        .expect("the request is audited");
    let resync = env.next_resync_after(requested).await;
    let namespace = naming::namespace_for_issue(common::REPO, issues.approval);
    assert!(
        !env.our_namespaces().await.contains(&namespace),
        "nothing runs before the approval"
    );
    let mut e = Evidence::new();
    e.insert("approval_id".into(), pending.id.into());
    e.insert("delivery_outcome".into(), outcome.into());
    e.insert("checked_after_resync_audit_id".into(), resync.into());
    e
}

async fn approval_then_run(env: &Env, _issues: &Issues) -> Evidence {
    let approval = env
        .store
        .list_approvals()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.delivery_id == "e2e-approval-1")
        .expect("the previous scenario's approval request");
    env.cli(&[
        "approve",
        &approval.id,
        "--reason",
        "e2e: reviewed",
        "--actor",
        APPROVER,
    ]);
    let run = env
        .wait_for("the approved run", || async {
            env.store
                .list_runs()
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.issue_number == approval.issue_number)
                .map(|r| r.run_id)
        })
        .await;
    env.let_succeed(&run).await;
    env.wait_state(&run, &["succeeded", "pruned"]).await;
    let mut e = env.run_evidence(&run).await;
    e.insert("approval_id".into(), approval.id.into());
    e
}

/// Rolling the state repo back to the commit that brought a finished run's
/// Job does not run it again: the cycle skips the Job (audited), and a
/// resync once the namespace is back, which finds the file without a Job,
/// leaves it so. A resync has two guards against that, each enough alone
/// (`real_cluster`'s deleted-Job test tries each): catches a resync with
/// both gone (`if self.job_started(&object)` in `reconciler/src/resync.rs`
/// made `if false`, and `if finished` in `Reconciler::execute` made `if
/// finished && step.note.is_none()`, i.e. cycles only), which re-creates the
/// Job while the first cycle still skips it; a check right after the skip
/// row let that through.
async fn rollback_does_not_rerun_a_finished_job(env: &Env, issues: &Issues) -> Evidence {
    let run = naming::run_id_for_delivery("e2e-dev-1");
    env.wait_state(&run, &["pruned"]).await;
    // run:debug holds the idle issue, so the restored folder is not pruned
    // again before the reconciler has applied the rollback.
    env.label("e2e-debug-hold", issues.dev, "run:debug", "Codertocat")
        .await;
    let hold = env
        .wait_for("the debug hold is recorded", || async {
            env.store.audit_rows().await.unwrap().into_iter().find(|r| {
                r.delivery_id.as_deref() == Some("e2e-debug-hold") && r.outcome == "debug-hold"
            })
        })
        .await;
    // The commit that first brought the run's Job: roll the state repo back to it.
    let commits = env.commits_of(&run);
    let with_job = commits.last().expect("the run's first commit").clone();
    // Review is on in this install: the rollback is a proposal, applied
    // once approved.
    let said = env.cli(&["rollback", &with_job, "--actor", "e2e"]);
    let proposal = said
        .split_whitespace()
        .skip_while(|w| *w != "as")
        .nth(1)
        .unwrap_or_else(|| panic!("the rollback was not proposed: {said}"))
        .to_string();
    assert!(
        env.store
            .get_proposal(&proposal)
            .await
            .unwrap()
            .is_some_and(|p| p.kind == "rollback" && p.state == "pending"),
        "{said}"
    );
    env.cli(&[
        "proposals",
        "approve",
        &proposal,
        "--reason",
        "restore the run's objects",
        "--actor",
        "e2e-reviewer",
    ]);
    let namespace = naming::namespace_for_issue(common::REPO, issues.dev);
    let skipped = env
        .wait_for("the reconciler skips the finished run's Job", || async {
            env.store
                .audit_rows_for_run(&run)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.outcome == "skipped-finished-run")
        })
        .await;
    let jobs = Api::<Job>::namespaced(env.kube.clone(), &namespace);
    let job = jobs.get_opt(&format!("run-{run}")).await.unwrap();
    assert!(job.is_none(), "the finished run's Job was created again");
    // And it stays so. The pruned namespace may still be terminating (then
    // nothing could be created in it): once the resync has made it again,
    // the resync after that, which finds the Job's file and no Job in a
    // namespace that takes objects, must not bring the Job back either.
    env.wait_until("the restored namespace is active", || async {
        env.our_namespaces().await.contains(&namespace)
    })
    .await;
    let mark = env.store.audit_high_water().await.unwrap();
    let resync = env.next_resync_after(mark).await;
    let job = jobs.get_opt(&format!("run-{run}")).await.unwrap();
    assert!(
        job.is_none(),
        "the finished run's Job was re-created by a resync"
    );
    assert_eq!(env.run_state(&run).await, "pruned", "the run moved again");
    let mut e = env.run_evidence(&run).await;
    e.insert("rolled_back_to".into(), with_job.into());
    e.insert("rollback_proposal".into(), proposal.into());
    e.insert("debug_hold_audit_id".into(), hold.id.into());
    e.insert("skip_audit_id".into(), skipped.id.into());
    e.insert("checked_after_resync_audit_id".into(), resync.into());
    e
}

/// A push that empties the state repo deletes nothing: the cycle is stopped
/// (audited), the resync that would delete orphans is stopped too, and the
/// cycle after that is stopped again; the three held runs' namespaces stay
/// and their runs keep running. Catches a resync without prune safety (`if
/// !force` before `self.safety.check` in `reconciler/src/resync.rs` made `if
/// false`): the guard blocked one cycle and the resync deleted everything.
/// The agent, as the `agent` step of a real Job's pod on the real API server
/// (its container sandboxed by the node stand-in: only its own mounts), is
/// hostile twice:
///
/// 1. It looks for the push token in every file it can read, every process
///    environment it can see and its own, and puts its report into its
///    change, as an agent would try to smuggle a secret out; then it turns
///    everything it can write against the push: the clone's `pushurl`,
///    `insteadOf` and `pushInsteadOf` pointing to a decoy repository on the
///    same git server (which would take the token), a credential helper, a
///    pre-push hook, and a `~/.gitconfig`. The report says no token was in its
///    reach (no token file, nothing token-shaped anywhere), the pushed tree
///    holds no token, the commit lands only on the run's branch of the run's
///    repository, and the decoy gets nothing.
/// 2. On another issue it also commits a link to the token's path and a
///    2 MiB file: nothing is pushed, and the run's result and the issue's
///    status comment say both were refused.
///
/// Mutation: mounting the `github-token` volume into the agent container
/// too (`manifests-templates/run/job.yaml`) turns step 1 red ("the agent
/// found the token").
async fn hostile_agent_never_reaches_the_token(env: &Env, issues: &Issues) -> Evidence {
    let decoy = env
        .git
        .create_repo("Codertocat/decoy", "main", &[("README.md", "decoy\n")]);
    // run:debug keeps the issue's folder for the next scenario.
    let (run, _, head) = agent_opens_a_pull_request(
        env,
        "e2e-hostile-agent",
        issues.hostile,
        &["run:dev", "ai-model:hostile-probe", "run:debug"],
    )
    .await;
    let bare = env.git.root.join(format!("{}.git", common::REPO));
    let report = git_http::git(&bare, &["show", &format!("{head}:probe-report.txt")]);
    let line = |prefix: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in the agent's report:\n{report}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        line("token-like strings found in:"),
        "nothing",
        "the agent found the token:\n{report}"
    );
    assert_eq!(line("token file:"), "absent", "{report}");
    assert_eq!(line("uid:"), "65532", "{report}");
    let readable: usize = line("readable files:").parse().unwrap();
    assert!(
        report.contains("  /workspace/repo/README.md"),
        "the probe did not see its own workspace:\n{report}"
    );
    assert!(!report.contains("/var/run/secrets"), "{report}");
    assert!(!report.contains("/var/run/issueops/handoff"), "{report}");
    assert!(!report.contains("GITHUB_TOKEN_FILE"), "{report}");
    // `git grep` exits 1 when nothing matches.
    let grep = Command::new("git")
        .args(["grep", "-c", "-F", AGENT_TOKEN, &head, "--", "."])
        .current_dir(&bare)
        .output()
        .unwrap();
    assert_eq!(
        grep.status.code(),
        Some(1),
        "the token was pushed: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    let decoy_refs = git_http::git(
        &decoy,
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );
    assert_eq!(
        decoy_refs.lines().count(),
        1,
        "the decoy was pushed to: {decoy_refs}"
    );
    assert!(decoy_refs.starts_with("refs/heads/main "), "{decoy_refs}");
    let environment: Vec<String> = report
        .split("environment:\n")
        .nth(1)
        .and_then(|rest| rest.split("files:\n").next())
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .collect();

    // The link to the token's path and the file too large: refused.
    let (refused_run, state, result) = agent_run_to_its_end(
        env,
        "e2e-hostile-refused",
        issues.hostile_refused,
        "hostile-refused",
    )
    .await;
    let record = env.store.get_run(&refused_run).await.unwrap().unwrap();
    let reason = result.reason.clone().unwrap_or_default();
    assert_eq!(result.outcome, "failed", "{result:?}");
    assert!(
        reason.contains("symbolic link token-link -> /var/run/secrets/issueops/github/token")
            && reason.contains("more than agent.max_push_bytes (1048576)"),
        "{reason}"
    );
    let comment = status_comment(env, "e2e-hostile-refused", "symbolic link token-link").await;
    let refused_branch = naming::branch_for_issue(issues.hostile_refused);
    let branches = git_http::git(&bare, &["for-each-ref", "--format=%(refname)"]);
    assert!(
        !branches.contains(&refused_branch),
        "the refused change was pushed: {branches}"
    );
    assert_eq!(
        git_http::git(&decoy, &["for-each-ref", "--format=%(refname)"]).trim(),
        "refs/heads/main"
    );
    // Done with that issue: closed and pruned now, not by the idle timer in
    // the middle of a later scenario.
    close_and_prune(env, "e2e-hostile-refused-close", issues.hostile_refused).await;

    let mut e = env.run_evidence(&run).await;
    e.extend(env.agent_placement(&run).await);
    e.insert(
        "pushed_to".into(),
        format!(
            "{}:{}",
            common::REPO,
            naming::branch_for_issue(issues.hostile)
        )
        .into(),
    );
    e.insert("head_commit".into(), head.into());
    e.insert("decoy_refs".into(), decoy_refs.trim().into());
    e.insert(
        "agent_found_token_in".into(),
        line("token-like strings found in:").into(),
    );
    e.insert("agent_token_file".into(), line("token file:").into());
    e.insert("agent_uid".into(), line("uid:").into());
    e.insert("agent_readable_files".into(), readable.into());
    e.insert("agent_environment".into(), json!(environment));
    e.insert("refused_run".into(), refused_run.clone().into());
    e.insert(
        "refused_run_state".into(),
        format!("{state} ({:?})", record.reason).into(),
    );
    e.insert("refused_reason".into(), reason.into());
    e.insert("refused_status_comment".into(), comment.into());
    e.insert(
        "refused_run_node".into(),
        env.agent_placement(&refused_run).await["node"].clone(),
    );
    e
}

/// Someone with write access to the state repo commits a weaker version of
/// what issueops rendered for an issue: its Namespace's Pod Security label
/// set to privileged, and a Job that mounts the node's root. serve's
/// reconciler refuses both files (audited, nothing applied) and the cluster
/// keeps the namespace as it was.
async fn weakening_state_repo_commit_is_refused(env: &Env, issues: &Issues) -> Evidence {
    let namespace = naming::namespace_for_issue(common::REPO, issues.hostile);
    let clone = env.person_clone("weakening-clone");
    let git = |args: &[&str]| git_http::git(&clone, args);
    let folder = clone.join(issueops_core::state_repo::issue_dir(&namespace));
    let ns_file = folder.join("namespace.yaml");
    let ns_yaml = std::fs::read_to_string(&ns_file).expect("the hostile run's issue folder");
    std::fs::write(
        &ns_file,
        ns_yaml.replace(
            "pod-security.kubernetes.io/enforce: restricted",
            "pod-security.kubernetes.io/enforce: privileged",
        ),
    )
    .unwrap();
    // The hostile run's Job as committed (its folder is pruned once it ended),
    // renamed, with the node's root mounted.
    let run = naming::run_id_for_delivery("e2e-hostile-agent");
    let started = env
        .commits_of(&run)
        .last()
        .cloned()
        .expect("the run's commit");
    let files = env.repo.files_at(&started).unwrap();
    let (_, job_yaml) = files
        .iter()
        .find(|(p, _)| p.ends_with(&format!("runs/{run}/job.yaml")))
        .expect("the run's Job file");
    let mut job: serde_yaml::Value = serde_yaml::from_slice(job_yaml).unwrap();
    job["metadata"]["name"] = "run-rootfs".into();
    job["spec"]["template"]["spec"]["volumes"]
        .as_sequence_mut()
        .unwrap()
        .push(serde_yaml::from_str("{name: node, hostPath: {path: /}}").unwrap());
    std::fs::create_dir_all(folder.join("runs/rootfs")).unwrap();
    std::fs::write(
        folder.join("runs/rootfs/job.yaml"),
        serde_yaml::to_string(&job).unwrap(),
    )
    .unwrap();
    git(&["add", "-A"]);
    git(&[
        "commit",
        "-qm",
        "a weaker namespace and a Job with the node's root",
    ]);
    git(&["push", "-q", "origin", "HEAD:main"]);
    let pushed = git(&["rev-parse", "HEAD"]).trim().to_string();
    let refusals = env
        .wait_for("both files are refused", || async {
            let rows: Vec<_> = env
                .store
                .audit_rows()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| {
                    r.outcome == "refused-out-of-scope"
                        && r.commit_sha.as_deref() == Some(pushed.as_str())
                })
                .collect();
            (rows.len() >= 2).then_some(rows)
        })
        .await;
    let reasons: Vec<&str> = refusals.iter().map(|r| r.detail.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("pod-security.kubernetes.io/enforce"))
            && reasons.iter().any(|r| r.contains("hostPath")),
        "{reasons:?}"
    );
    let live = Api::<Namespace>::all(env.kube.clone())
        .get(&namespace)
        .await
        .unwrap();
    assert_eq!(
        live.metadata.labels.unwrap_or_default()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let rootfs = Api::<Job>::namespaced(env.kube.clone(), &namespace)
        .get_opt("run-rootfs")
        .await
        .unwrap();
    assert!(rootfs.is_none(), "the hostPath Job was applied");
    // Put it back: a revert, as a person would.
    git(&["revert", "--no-edit", "HEAD"]);
    git(&["push", "-q", "origin", "HEAD:main"]);
    let mut e = Evidence::new();
    e.insert("commit".into(), pushed.into());
    e.insert(
        "refusal_audit_ids".into(),
        json!(refusals.iter().map(|r| r.id).collect::<Vec<_>>()),
    );
    e
}

async fn emptied_state_repo_trips_the_prune_guard(env: &Env, issues: &Issues) -> Evidence {
    // Runs that stay Running (the stand-in holds "hold" pods) on three issues.
    let mut runs = Vec::new();
    for (i, issue) in issues.held.iter().enumerate() {
        let delivery = format!("e2e-held-{i}");
        env.label(&delivery, *issue, "run:dev", "Codertocat").await;
        let run = naming::run_id_for_delivery(&delivery);
        env.wait_state(&run, &["running"]).await;
        runs.push(run);
    }
    // Someone empties the state repo (a broken force-push, a bad script).
    let clone = env.person_clone("person-clone");
    let git = |args: &[&str]| git_http::git(&clone, args);
    git(&["rm", "-rq", "issues"]);
    git(&["commit", "-qm", "empty the state repo"]);
    git(&["push", "-q", "origin", "HEAD:main"]);
    let blocked = env
        .wait_for("the prune guard stops the cycle", || async {
            env.store
                .audit_rows()
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.outcome == "blocked-prune-safety")
        })
        .await;
    let all_there = || async {
        let ours = env.our_namespaces().await;
        for issue in &issues.held {
            let namespace = naming::namespace_for_issue(common::REPO, *issue);
            assert!(ours.contains(&namespace), "{namespace} was deleted");
        }
        for run in &runs {
            assert_eq!(env.run_state(run).await, "running", "run {run}");
        }
    };
    all_there().await;
    // And it stays so: the resync (which deletes orphans) is stopped too,
    // and the next cycle after it blocks again rather than deleting.
    let resync = env.next_resync_after(blocked.id).await;
    let resync_row = env
        .store
        .audit_rows()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == resync)
        .unwrap();
    assert_eq!(
        resync_row.outcome, "blocked-prune-safety",
        "the resync after an emptied repo: {resync_row:?}"
    );
    let blocked_again = env
        .wait_for("the next cycle is stopped too", || async {
            env.store.audit_rows().await.unwrap().into_iter().find(|r| {
                r.id > resync
                    && r.outcome == "blocked-prune-safety"
                    && !r.detail.contains("\"resync\"")
            })
        })
        .await;
    all_there().await;
    // Put it back; nothing was lost.
    git(&["revert", "--no-edit", "HEAD"]);
    git(&["push", "-q", "origin", "HEAD:main"]);
    let mut e = Evidence::new();
    e.insert("run_ids".into(), json!(runs));
    e.insert("blocked_audit_id".into(), blocked.id.into());
    e.insert("blocked_resync_audit_id".into(), resync.into());
    e.insert("blocked_again_audit_id".into(), blocked_again.id.into());
    e
}

async fn nothing_left_behind(env: &Env, issues: &Issues) -> Evidence {
    // Let the held runs finish, and close every issue.
    for issue in &issues.held {
        let namespace = naming::namespace_for_issue(common::REPO, *issue);
        let pods: Api<Pod> = Api::namespaced(env.kube.clone(), &namespace);
        for pod in pods.list(&ListParams::default()).await.unwrap().items {
            common::set_pod_outcome(
                &env.kube,
                &namespace,
                pod.metadata.name.as_deref().unwrap(),
                "succeed",
            )
            .await;
        }
    }
    // One issue at a time: closing them all at once would delete every object
    // in one cycle, which the prune guard rightly stops.
    for (i, issue) in [issues.dev, issues.agent, issues.approval, issues.hostile]
        .iter()
        .chain(&issues.held)
        .enumerate()
    {
        env.close(&format!("e2e-close-{i}"), *issue).await;
        let namespace = naming::namespace_for_issue(common::REPO, *issue);
        env.wait_until(&format!("{namespace} is pruned"), || async {
            !env.our_namespaces().await.contains(&namespace)
        })
        .await;
    }
    let selector = issueops_core::managed_selector(&env.instance);
    let jobs = Api::<Job>::all(env.kube.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    let secrets_at_check = env.count_ours::<Secret>().await;
    let terminating = env.count_ours::<Namespace>().await;
    env.wait_until("terminating namespaces are gone", || async {
        env.count_ours::<Namespace>().await == 0
    })
    .await;
    assert!(jobs.items.is_empty(), "Jobs left: {}", jobs.items.len());
    // Agent token Secrets go with their run (the credentials pass) or with the
    // namespace, a moment after the namespace starts terminating.
    env.wait_until("no agent token Secret is left", || async {
        env.count_ours::<Secret>().await == 0
    })
    .await;
    let runs = env.store.list_runs().await.unwrap();
    let active: Vec<_> = runs
        .iter()
        .filter(|r| r.run_state().is_some_and(|s| s.is_active()))
        .collect();
    assert!(active.is_empty(), "active runs left: {active:?}");
    let mut e = Evidence::new();
    e.insert("runs".into(), runs.len().into());
    e.insert("terminating_at_check".into(), terminating.into());
    e.insert("secrets_at_check".into(), secrets_at_check.into());
    e
}

type ScenarioFn =
    for<'a> fn(
        &'a Env,
        &'a Issues,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Evidence> + Send + 'a>>;

macro_rules! scenario {
    ($f:ident) => {
        (
            stringify!($f),
            (|env, issues| Box::pin($f(env, issues))) as ScenarioFn,
        )
    };
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("e2e");
    std::fs::create_dir_all(&root).unwrap();
    let env = Arc::new(Env::start(&root).await);
    let version = env.kube.apiserver_version().await.unwrap();
    let issues = Arc::new(Issues {
        dev: common::unique_issue(),
        agent: common::unique_issue(),
        approval: common::unique_issue(),
        held: [
            common::unique_issue(),
            common::unique_issue(),
            common::unique_issue(),
        ],
        foreign: common::unique_issue(),
        hostile: common::unique_issue(),
        hostile_refused: common::unique_issue(),
        nothing: common::unique_issue(),
        failing: common::unique_issue(),
        refresh: common::unique_issue(),
        codex: common::unique_issue(),
        review: common::unique_issue(),
        review_denied: common::unique_issue(),
    });
    let scenarios: Vec<(&str, ScenarioFn)> = vec![
        scenario!(dev_run_to_succeeded_and_pruned),
        scenario!(redelivery_deduped),
        scenario!(forged_delivery_refused),
        scenario!(untrusted_sender_waits_for_approval),
        scenario!(approval_then_run),
        scenario!(rollback_does_not_rerun_a_finished_job),
        scenario!(review_label_proposes_then_approval_applies),
        scenario!(untrusted_commit_waits_for_a_reviewer_signature),
        scenario!(review_denied_leaves_nothing),
        scenario!(agent_dev_opens_a_pull_request),
        scenario!(agent_revise_updates_the_pull_request),
        scenario!(staff_ui_shows_the_run_and_its_pr),
        scenario!(agent_without_changes_pushes_nothing),
        scenario!(agent_failure_is_reported),
        scenario!(pruned_run_keeps_its_transcript),
        scenario!(token_refreshed_mid_run_reaches_the_push),
        scenario!(pod_security_refuses_an_unhardened_pod),
        scenario!(hostile_agent_never_reaches_the_token),
        scenario!(codex_dev_and_revise_with_a_scripted_model),
        scenario!(weakening_state_repo_commit_is_refused),
        scenario!(emptied_state_repo_trips_the_prune_guard),
        scenario!(unmanaged_object_not_taken_over),
        scenario!(poison_delivery_dead_lettered_others_flow),
        scenario!(two_replicas_one_writer),
        scenario!(forged_flood_leaves_no_trace_but_a_counter),
        scenario!(kubectl_edit_drift_corrected_by_resync),
        scenario!(audit_trail_verifies),
        scenario!(nothing_left_behind),
    ];
    // `ISSUEOPS_E2E_ONLY=a,b` runs just those (in the gate's order), for
    // working on a scenario; a scenario that builds on an earlier one needs
    // it named too. The gate itself always runs them all.
    let only: Option<Vec<String>> = std::env::var("ISSUEOPS_E2E_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    if let Some(only) = &only {
        let unknown: Vec<_> = only
            .iter()
            .filter(|o| !scenarios.iter().any(|(name, _)| name == o))
            .collect();
        assert!(
            unknown.is_empty(),
            "ISSUEOPS_E2E_ONLY names no scenario: {unknown:?}"
        );
    }
    let mut results = Vec::new();
    // The real Codex CLI exists only in the agent image: with the real node
    // off (`ISSUEOPS_NODE=standin`) its scenario is reported as not run.
    let needs_image = ["codex_dev_and_revise_with_a_scripted_model"];
    let on_standin = env::node_under_test().kind != "real";
    let mut not_run = Vec::new();
    for (name, run) in scenarios {
        if only.as_ref().is_some_and(|o| !o.iter().any(|o| o == name)) {
            continue;
        }
        if on_standin && needs_image.contains(&name) {
            println!(
                "NOT RUN {name}: needs the agent image on the real node (ISSUEOPS_NODE=standin)"
            );
            not_run.push(name);
            continue;
        }
        let started = Instant::now();
        let (env2, issues2) = (env.clone(), issues.clone());
        let outcome = tokio::spawn(async move { run(&env2, &issues2).await }).await;
        let seconds = started.elapsed().as_secs_f64();
        let entry = match outcome {
            Ok(evidence) => {
                json!({ "name": name, "passed": true, "seconds": seconds, "evidence": evidence })
            }
            Err(e) => {
                let reason = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into()),
                    Err(e) => e.to_string(),
                };
                json!({ "name": name, "passed": false, "seconds": seconds, "error": reason, "evidence": {} })
            }
        };
        println!(
            "{} {name} ({seconds:.1} s)",
            if entry["passed"] == true {
                "PASS"
            } else {
                "FAIL"
            }
        );
        if let Some(error) = entry["error"].as_str() {
            println!("     {error}");
        }
        results.push(entry);
    }
    if let Ok(mut child) = env
        .serve
        .lock()
        .map(|mut c| std::mem::replace(&mut *c, Command::new("true").spawn().unwrap()))
    {
        let _ = child.kill();
        let _ = child.wait();
    }
    let passed = results.iter().filter(|r| r["passed"] == true).count();
    let failed = results.len() - passed;
    let node = node_report(&env).await;
    let report = json!({
        "api_server": { "git_version": version.git_version, "platform": version.platform },
        "node": node,
        "instance": env.instance,
        "scenarios": results,
        "not_run": not_run,
        "passed": passed,
        "failed": failed,
    });
    std::fs::write(
        root.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    let mut md = format!(
        "# issueops end-to-end report\n\nAPI server {} ({}), instance `{}`.\n\nAgent image `{}` on the {} node{}.\n\n| scenario | result | seconds | evidence |\n|---|---|---|---|\n",
        report["api_server"]["git_version"].as_str().unwrap_or("?"),
        report["api_server"]["platform"].as_str().unwrap_or("?"),
        env.instance,
        node["agent_image"].as_str().unwrap_or("?"),
        node["kind"].as_str().unwrap_or("?"),
        match node["kind"].as_str() {
            Some("real") => format!(
                " `{}`: kubelet {}, {}; built from agent/Dockerfile, manifest {}, image id {}",
                node["name"].as_str().unwrap_or("?"),
                node["kubelet"].as_str().unwrap_or("?"),
                node["runtime"].as_str().unwrap_or("?"),
                node["agent_image_digest"].as_str().unwrap_or("?"),
                node["agent_image_id"].as_str().unwrap_or("?"),
            ),
            _ => " (the stand-in runs the image's entrypoint in sandboxes; ISSUEOPS_NODE=standin)".into(),
        }
    );
    for r in report["scenarios"].as_array().unwrap() {
        let evidence = if r["passed"] == true {
            r["evidence"].to_string()
        } else {
            r["error"].as_str().unwrap_or("").to_string()
        };
        md.push_str(&format!(
            "| {} | {} | {:.1} | `{}` |\n",
            r["name"].as_str().unwrap(),
            if r["passed"] == true {
                "passed"
            } else {
                "FAILED"
            },
            r["seconds"].as_f64().unwrap_or(0.0),
            evidence.replace('|', "\\|").replace('\n', " ")
        ));
    }
    for name in &not_run {
        md.push_str(&format!(
            "| {name} | not run | 0 | `needs the agent image on the real node; this run used the stand-in` |\n"
        ));
    }
    std::fs::write(root.join("report.md"), md).unwrap();
    println!("report: {}", root.join("report.md").display());
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

//! The gate's review-before-apply and trust scenarios, on the real API
//! server: an issue labelled for review is proposed, not applied, until
//! `issueops proposals approve`; a denied proposal leaves nothing; a commit
//! nobody trusted is not applied until a reviewer signs it; and the audit
//! trail of the whole gate verifies.

use super::{common, Env, Evidence, Issues};
use common::git_http;
use issueops_core::naming;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::Api;
use serde_json::json;

use super::env::REVIEW_LABEL;

async fn proposed(env: &Env, delivery: &str, issue: u64) -> String {
    env.label_with(
        delivery,
        issue,
        "run:dev",
        "Codertocat",
        &["run:dev", REVIEW_LABEL],
    )
    .await;
    let run = naming::run_id_for_delivery(delivery);
    env.wait_state(&run, &["proposed"]).await;
    run
}

/// An issue labelled `needs-review` gets a proposal: the run is `proposed`,
/// its intent is on `proposals/<run>`, the applied branch does not have it,
/// and after the reconciler's next cycles nothing of it is in the cluster.
/// `issueops proposals approve` merges it (a commit issueops signs, whose
/// second parent is the proposal) and the reconciler applies exactly that
/// merge: the namespace appears and the run goes on.
/// Mutation: committing the proposal to the applied branch
/// (`self.repo.propose` → `self.repo.commit` in `control-plane/src/review.rs`)
/// turns the first check red (the namespace appears before approval).
pub async fn review_label_proposes_then_approval_applies(env: &Env, issues: &Issues) -> Evidence {
    let run = proposed(env, "e2e-review-1", issues.review).await;
    let namespace = naming::namespace_for_issue(common::REPO, issues.review);
    let proposal = env.store.get_proposal(&run).await.unwrap().unwrap();
    assert!(
        !env.repo.log().unwrap().contains(&proposal.commit_sha),
        "the proposal is not on the applied branch"
    );
    // Two whole reconciler passes later, still nothing in the cluster.
    let mark = env.store.audit_high_water().await.unwrap();
    let first = env.next_resync_after(mark).await;
    env.next_resync_after(first).await;
    assert!(
        !env.our_namespaces().await.contains(&namespace),
        "a proposal reached the cluster"
    );
    let comment = super::status_comment(env, "e2e-review-1", "proposed for review").await;
    assert!(
        comment.contains(&format!("issueops proposals approve {run}")),
        "{comment}"
    );
    let listed = env.cli(&["proposals"]);
    assert!(
        listed.contains(&run) && listed.contains("pending"),
        "{listed}"
    );

    let said = env.cli(&[
        "proposals",
        "approve",
        &run,
        "--reason",
        "the quota and the image are right",
        "--actor",
        "e2e-reviewer",
    ]);
    let merge = env
        .wait_for("the approval is recorded with its merge", || async {
            env.store
                .get_proposal(&run)
                .await
                .unwrap()
                .and_then(|p| p.merge_sha)
        })
        .await;
    assert!(said.contains(&merge), "{said}");
    env.wait_until("the approved run's namespace is applied", || async {
        env.our_namespaces().await.contains(&namespace)
    })
    .await;
    env.wait_until("the reconciler applied the merge", || async {
        env.store
            .last_applied_commit("default")
            .await
            .unwrap()
            .as_deref()
            == Some(merge.as_str())
            || env.run_state(&run).await == "running"
    })
    .await;
    // The run stays running: the next scenario changes its issue's quota.
    env.wait_state(&run, &["running"]).await;
    let mut e = env.run_evidence(&run).await;
    e.insert("proposal_branch".into(), proposal.branch.into());
    e.insert("proposal_commit".into(), proposal.commit_sha.into());
    e.insert("merge_commit".into(), merge.into());
    e.insert(
        "applied_commit".into(),
        env.store
            .last_applied_commit("default")
            .await
            .unwrap()
            .into(),
    );
    e
}

/// A denied proposal leaves nothing: the run is cancelled with the
/// reviewer's reason, reported on the issue, and neither the applied
/// branch nor the cluster ever has it.
/// Mutation: approving on deny (`deny_proposal` calling `approve_proposal`)
/// turns it red.
pub async fn review_denied_leaves_nothing(env: &Env, issues: &Issues) -> Evidence {
    let run = proposed(env, "e2e-review-deny", issues.review_denied).await;
    let namespace = naming::namespace_for_issue(common::REPO, issues.review_denied);
    env.cli(&[
        "proposals",
        "deny",
        &run,
        "--reason",
        "this issue needs a person",
        "--actor",
        "e2e-reviewer",
    ]);
    env.wait_state(&run, &["cancelled", "pruned"]).await;
    let comment = super::status_comment(
        env,
        "e2e-review-deny",
        "denied by e2e-reviewer: this issue needs a person",
    )
    .await;
    let mark = env.store.audit_high_water().await.unwrap();
    env.next_resync_after(mark).await;
    assert!(!env.our_namespaces().await.contains(&namespace));
    let proposal = env.store.get_proposal(&run).await.unwrap().unwrap();
    assert_eq!(proposal.state, "denied");
    assert!(proposal.merge_sha.is_none());
    assert!(
        env.commits_of(&run).is_empty(),
        "a denied run reached the applied branch"
    );
    let mut e = env.run_evidence(&run).await;
    e.insert("proposal_commit".into(), proposal.commit_sha.into());
    e.insert("comment".into(), comment.into());
    e
}

/// Someone with push access but no trusted key raises an issue's quota
/// with a plain `git push`: the reconciler applies nothing from that head,
/// audits why once, and `issueops plan` names the commit; the cluster keeps
/// the old quota. The reviewer then signs the same change (`git commit
/// --amend -S` with the trusted SSH key) and pushes: it is applied.
/// Mutation: `with_trusted_keys` not called in `src/commands/serve.rs`
/// turns it red (the unsigned quota is applied).
pub async fn untrusted_commit_waits_for_a_reviewer_signature(
    env: &Env,
    issues: &Issues,
) -> Evidence {
    let namespace = naming::namespace_for_issue(common::REPO, issues.review);
    env.wait_until("the reviewed issue's namespace exists", || async {
        env.our_namespaces().await.contains(&namespace)
    })
    .await;
    let clone = env.unsigned_clone("untrusted-clone");
    let git = |args: &[&str]| git_http::git(&clone, args);
    let quota_file = clone
        .join(issueops_core::state_repo::issue_dir(&namespace))
        .join("resourcequota.yaml");
    let quota = std::fs::read_to_string(&quota_file).expect("the reviewed issue's quota");
    assert!(quota.contains("pods: '4'\n"), "{quota}");
    std::fs::write(&quota_file, quota.replace("pods: '4'\n", "pods: '40'\n")).unwrap();
    git(&["commit", "-qam", "more pods for this issue"]);
    git(&["push", "-q", "origin", "HEAD:main"]);
    let unsigned = git(&["rev-parse", "HEAD"]).trim().to_string();
    let refused = env
        .wait_for("the untrusted head is refused", || async {
            env.store.audit_rows().await.unwrap().into_iter().find(|r| {
                r.outcome == "refused-untrusted" && r.commit_sha.as_deref() == Some(&unsigned)
            })
        })
        .await;
    assert!(
        refused.detail.contains("it is not signed")
            && refused.detail.contains("more pods for this issue"),
        "{}",
        refused.detail
    );
    let plan = env.cli(&["plan", "--cluster", "kube"]);
    assert!(
        plan.contains(&format!("REFUSED commit {}", &unsigned[..12]))
            && plan.contains("it is not signed"),
        "{plan}"
    );
    let live_pods = || async {
        Api::<ResourceQuota>::namespaced(env.kube.clone(), &namespace)
            .get("issueops-quota")
            .await
            .ok()
            .and_then(|q| q.spec)
            .and_then(|s| s.hard)
            .and_then(|h| h.get("pods").map(|q| q.0.clone()))
    };
    let mark = env.store.audit_high_water().await.unwrap();
    env.next_resync_after(mark).await;
    assert_eq!(
        live_pods().await.as_deref(),
        Some("4"),
        "the unsigned quota was applied"
    );

    // The reviewer signs the same change with the trusted key.
    let key = env.reviewer_key().display().to_string();
    git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={key}"),
        "commit",
        "-q",
        "--amend",
        "--no-edit",
        "-S",
    ]);
    git(&["push", "-q", "--force", "origin", "HEAD:main"]);
    let signed = git(&["rev-parse", "HEAD"]).trim().to_string();
    env.wait_until("the reviewer's signed quota is applied", || async {
        live_pods().await.as_deref() == Some("40")
    })
    .await;
    // Put it back, signed, as a reviewer would.
    git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={key}"),
        "revert",
        "--no-edit",
        "-S",
        "HEAD",
    ]);
    git(&["push", "-q", "origin", "HEAD:main"]);
    env.wait_until("the quota is back", || async {
        live_pods().await.as_deref() == Some("4")
    })
    .await;
    let run = naming::run_id_for_delivery("e2e-review-1");
    env.let_succeed(&run).await;
    env.wait_state(&run, &["succeeded", "pruned"]).await;
    let mut e = Evidence::new();
    e.insert("unsigned_commit".into(), unsigned.into());
    e.insert("refusal_audit_id".into(), refused.id.into());
    e.insert("signed_commit".into(), signed.into());
    e.insert(
        "plan".into(),
        json!(plan
            .lines()
            .filter(|l| l.starts_with("REFUSED"))
            .collect::<Vec<_>>()),
    );
    e
}

/// After the whole gate, `issueops audit verify` holds: the hash chain over
/// every audit row is whole, and every state-repo commit issueops made has
/// its audit row with the same delivery, run and actor.
/// Mutation: leaving `detail` out of the hashed columns is caught by the
/// cargo tests; here, an install that wrote a row around the chain (a
/// direct INSERT) would fail.
pub async fn audit_trail_verifies(env: &Env, _issues: &Issues) -> Evidence {
    let said = env.cli(&["audit", "verify", "--actor", "e2e"]);
    assert!(said.contains("verified:"), "{said}");
    let row = env
        .store
        .last_audit_of_kind(issueops_core::audit::verify::VERIFY_KIND)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.outcome, "verified");
    let mut e = Evidence::new();
    e.insert("said".into(), said.trim().into());
    e.insert("audit_id".into(), row.id.into());
    e
}

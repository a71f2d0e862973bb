//! Review before apply, through the real gateway, control plane and
//! reconciler on a real git state repo: a proposal instead of a commit,
//! approve (a signed merge the reconciler applies), deny, expiry, rollback
//! as a proposal; and the applied branch trusted only for what issueops or a
//! reviewer signed, checked with real `ssh-keygen` keys and real `git`.

mod common;

use common::{labeled, set_job_status, test_config, Db, Harness, REPO};
use issueops_control_plane::lifecycle::RollbackOutcome;
use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::naming;
use issueops_core::signing::{Signer, TrustedKeys};
use issueops_core::Config;
use issueops_reconciler::Reconciler;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A fresh ed25519 key pair made by `ssh-keygen`; returns the private key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn public(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "reviewer")
        .env("GIT_AUTHOR_EMAIL", "reviewer@example.org")
        .env("GIT_COMMITTER_NAME", "reviewer")
        .env("GIT_COMMITTER_EMAIL", "reviewer@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Review {
    h: Harness,
    cp: ControlPlane,
    reconciler: Reconciler,
    keys: tempfile::TempDir,
    reviewer: PathBuf,
}

/// Review on for everything; issueops signs with its own key; the
/// reconciler trusts it and one reviewer's key.
async fn start(edit: impl FnOnce(&mut Config)) -> Review {
    let keys = tempfile::tempdir().unwrap();
    let own = keygen(keys.path(), "issueops");
    let reviewer = keygen(keys.path(), "reviewer");
    let mut config = test_config();
    config.review.all = true;
    config.review.trusted_keys = vec![public(&reviewer)];
    edit(&mut config);
    let h = Harness::start_configured(Db::Sqlite, config.clone()).await;
    let signer = Arc::new(Signer::from_file(&own).unwrap());
    let trusted = TrustedKeys::new(Some(&signer), &config.review.trusted_keys).unwrap();
    let cp = ControlPlane::new(
        h.store.clone(),
        h.repo.clone().with_signer(signer),
        Arc::new(config),
        Templates::embedded(),
    );
    let reconciler = Reconciler::new(h.store.clone(), h.repo.clone(), h.client.clone())
        .with_trusted_keys(trusted);
    Review {
        h,
        cp,
        reconciler,
        keys,
        reviewer,
    }
}

async fn label(r: &Review, delivery: &str) -> String {
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let (status, text) = r.h.post_signed("issues", delivery, &body).await;
    assert_eq!(status, 202, "{text}");
    r.cp.process_pending().await.unwrap();
    naming::run_id_for_delivery(delivery)
}

async fn namespace_exists(r: &Review) -> bool {
    Api::<Namespace>::all(r.h.client.clone())
        .get_opt(&naming::namespace_for_issue(REPO, 1))
        .await
        .unwrap()
        .is_some()
}

/// `git verify-commit` with an allowed-signers file naming `keys`.
fn git_verifies(r: &Review, sha: &str, keys: &[&Path]) -> bool {
    let allowed = r.keys.path().join("allowed_signers");
    let lines: Vec<String> = keys
        .iter()
        .map(|k| format!("issueops@localhost,reviewer@example.org {}", public(k)))
        .collect();
    std::fs::write(&allowed, lines.join("\n") + "\n").unwrap();
    Command::new("git")
        .arg("-C")
        .arg(r.h.dir.path().join("state.git"))
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("gpg.ssh.allowedSignersFile={}", allowed.display()))
        .args(["verify-commit", sha])
        .output()
        .unwrap()
        .status
        .success()
}

/// A label with review on proposes the run: its branch holds the intent,
/// the applied branch and the cluster nothing, and the issue is told how to
/// approve. Approving merges it (two parents, signed by issueops, verified
/// by real git) and the reconciler applies it. Catches: a proposal committed
/// to the applied branch, or a merge that is not signed.
#[tokio::test]
async fn a_proposal_is_applied_only_once_approved() {
    let r = start(|_| {}).await;
    let run = label(&r, "review-1").await;
    assert_eq!(
        r.h.repo.log().unwrap().len(),
        0,
        "nothing on the applied branch"
    );
    let proposal = r.h.store.get_proposal(&run).await.unwrap().unwrap();
    assert_eq!(proposal.state, "pending");
    assert_eq!(proposal.branch, format!("proposals/{run}"));
    assert!(
        proposal.summary.contains("**Role**")
            && proposal.summary.contains("**NetworkPolicy**")
            && proposal.summary.contains("image `")
            && proposal.summary.contains("delivery `review-1`"),
        "{}",
        proposal.summary
    );
    assert_eq!(
        r.h.store.get_run(&run).await.unwrap().unwrap().state,
        "proposed"
    );
    r.reconciler.reconcile_once().await.unwrap();
    assert!(!namespace_exists(&r).await, "nothing in the cluster");
    r.cp.report_pass().await.unwrap();
    let said = r.h.store.report_bodies().await.unwrap()["review-1"].clone();
    assert!(
        said.contains(&format!("issueops proposals approve {run}")),
        "{said}"
    );

    let merge =
        r.cp.approve_proposal(&run, "alice", "looks right")
            .await
            .unwrap();
    let git_dir = r.h.dir.path().join("state.git");
    let parents = git(&git_dir, &["rev-list", "--parents", "-n1", &merge]);
    assert_eq!(
        parents.split(' ').next_back(),
        Some(proposal.commit_sha.as_str()),
        "the merge's last parent is the proposal"
    );
    assert!(git_verifies(&r, &merge, &[&r.keys.path().join("issueops")]));
    assert!(git_verifies(
        &r,
        &proposal.commit_sha,
        &[&r.keys.path().join("issueops")]
    ));
    let report = r.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert!(namespace_exists(&r).await, "applied after approval");
    let got = r.h.store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(
        (got.state.as_str(), got.commit_sha.as_deref()),
        ("applied", Some(merge.as_str()))
    );
    // Decided once.
    let again =
        r.cp.approve_proposal(&run, "bob", "twice")
            .await
            .unwrap_err();
    assert!(again.to_string().contains("already approved"), "{again}");
    // A second proposal stays pending: its commit is on its branch only.
    let mut v: serde_json::Value =
        serde_json::from_slice(&labeled("issues/labeled.payload.json", "run:dev")).unwrap();
    v["issue"]["number"] = 2.into();
    r.h.post_signed("issues", "review-2", &serde_json::to_vec(&v).unwrap())
        .await;
    r.cp.process_pending().await.unwrap();
    // Checked as an hour later: no commit may pass as one in flight.
    let history = r.h.repo.history().unwrap();
    assert_eq!(history.len(), 2, "the proposal and its merge");
    let v =
        r.h.store
            .verify_audit_chain()
            .await
            .unwrap()
            .with_history(&history, issueops_core::now_ms() / 1000 + 3600);
    assert!(
        v.ok(),
        "the proposals, the merge and their rows verify: {:?}",
        v.breaks
    );
    r.h.finish().await;
}

/// Denying leaves nothing anywhere and tells the issue why; an unanswered
/// proposal expires the same way. Catches: a denied run left waiting.
#[tokio::test]
async fn a_denied_or_expired_proposal_leaves_nothing() {
    let r = start(|c| c.review.proposal_ttl_seconds = 60).await;
    let run = label(&r, "review-deny").await;
    r.cp.deny_proposal(&run, "alice", "wrong image")
        .await
        .unwrap();
    let got = r.h.store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(got.state, "cancelled");
    assert_eq!(got.reason.as_deref(), Some("denied by alice: wrong image"));
    r.cp.report_pass().await.unwrap();
    let said = r.h.store.report_bodies().await.unwrap()["review-deny"].clone();
    assert!(said.contains("denied by alice: wrong image"), "{said}");
    let late =
        r.cp.approve_proposal(&run, "bob", "late")
            .await
            .unwrap_err();
    assert!(late.to_string().contains("already denied"), "{late}");
    r.reconciler.reconcile_once().await.unwrap();
    assert_eq!(r.h.repo.log().unwrap().len(), 0);
    assert!(!namespace_exists(&r).await);

    // A second issue's proposal, never answered.
    let mut v: serde_json::Value =
        serde_json::from_slice(&labeled("issues/labeled.payload.json", "run:dev")).unwrap();
    v["issue"]["number"] = 2.into();
    r.h.post_signed("issues", "review-ttl", &serde_json::to_vec(&v).unwrap())
        .await;
    r.cp.process_pending().await.unwrap();
    let late = naming::run_id_for_delivery("review-ttl");
    assert_eq!(
        r.cp.expire_proposals(issueops_core::now_ms())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        r.cp.expire_proposals(issueops_core::now_ms() + 61_000)
            .await
            .unwrap(),
        1
    );
    let got = r.h.store.get_run(&late).await.unwrap().unwrap();
    assert_eq!(got.state, "cancelled");
    assert!(got.reason.unwrap().contains("expired"));

    // A third issue is closed while its proposal waits: approving it later
    // does not revive the run.
    let mut v: serde_json::Value =
        serde_json::from_slice(&labeled("issues/labeled.payload.json", "run:dev")).unwrap();
    v["issue"]["number"] = 3.into();
    r.h.post_signed("issues", "review-closed", &serde_json::to_vec(&v).unwrap())
        .await;
    v["action"] = "closed".into();
    r.h.post_signed(
        "issues",
        "review-closed-2",
        &serde_json::to_vec(&v).unwrap(),
    )
    .await;
    r.cp.process_pending().await.unwrap();
    let closed = naming::run_id_for_delivery("review-closed");
    let refused =
        r.cp.approve_proposal(&closed, "alice", "too late")
            .await
            .unwrap_err();
    assert!(
        refused.to_string().contains("is already withdrawn"),
        "{refused}"
    );
    let withdrawn = r.h.store.get_proposal(&closed).await.unwrap().unwrap();
    assert_eq!(
        (withdrawn.state.as_str(), withdrawn.reason.as_deref()),
        ("withdrawn", Some("the issue was closed"))
    );
    r.h.finish().await;
}

/// A commit pushed to the applied branch without a trusted signature is
/// not applied: the cycle applies nothing, `plan` names it, the audit says
/// why (once), the resync holds to the commit before it; once a reviewer
/// signs it with real git, it is applied. Catches: a reconciler that checks
/// only the head, or none, and a resync that applies the untrusted head.
#[tokio::test]
async fn an_untrusted_commit_is_refused_until_a_reviewer_signs_it() {
    let r = start(|_| {}).await;
    let run = label(&r, "trust-1").await;
    r.cp.approve_proposal(&run, "alice", "ok").await.unwrap();
    assert!(r.reconciler.reconcile_once().await.unwrap().converged());
    let applied = r.h.store.last_applied_commit("default").await.unwrap();
    set_job_status(
        &r.h.client,
        &naming::namespace_for_issue(REPO, 1),
        &run,
        "running",
    )
    .await;

    // Someone with push access edits the quota by hand, unsigned; then a
    // commit issueops signs lands on top: the unsigned one is still in range.
    let work = r.keys.path().join("work");
    let git_dir = r.h.dir.path().join("state.git");
    git(
        r.keys.path(),
        &[
            "clone",
            "-q",
            git_dir.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let quota = format!(
        "{}/resourcequota.yaml",
        issueops_core::state_repo::issue_dir(&naming::namespace_for_issue(REPO, 1))
    );
    let text = std::fs::read_to_string(work.join(&quota)).unwrap();
    assert!(text.contains("pods: '4'\n"), "{text}");
    std::fs::write(
        work.join(&quota),
        text.replace("pods: '4'\n", "pods: '400'\n"),
    )
    .unwrap();
    git(&work, &["commit", "-q", "-am", "raise the quota"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let unsigned = git(&work, &["rev-parse", "HEAD"]);
    let signed_on_top =
        r.h.repo
            .clone()
            .with_signer(Arc::new(
                Signer::from_file(&r.keys.path().join("issueops")).unwrap(),
            ))
            .commit(&issueops_core::state_repo::CommitRequest {
                subject: "a note".into(),
                body: String::new(),
                trailers: vec![],
                changes: vec![issueops_core::state_repo::Change::Write {
                    path: "NOTES.md".into(),
                    content: b"signed by issueops\n".to_vec(),
                }],
            })
            .unwrap()
            .unwrap();
    assert!(git_verifies(
        &r,
        &signed_on_top,
        &[&r.keys.path().join("issueops")]
    ));

    let report = r.reconciler.reconcile_once().await.unwrap();
    let why = report.untrusted.clone().expect("refused");
    assert!(
        why.contains(&unsigned[..12]) && why.contains("it is not signed"),
        "{why}"
    );
    assert!(report.applied.is_empty() && !report.converged());
    assert_eq!(
        r.h.store.last_applied_commit("default").await.unwrap(),
        applied,
        "the last applied commit stays"
    );
    // Nor does the full resync (drift and orphans) apply what the cycle
    // refused: it holds to the commit before the untrusted one.
    r.reconciler.resync(false).await.unwrap();
    let quota = Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(
        r.h.client.clone(),
        &naming::namespace_for_issue(REPO, 1),
    )
    .get("issueops-quota")
    .await
    .unwrap();
    assert_eq!(
        quota.spec.unwrap().hard.unwrap()["pods"].0,
        "4",
        "the resync applied the untrusted quota"
    );
    let plan = r.reconciler.plan().await.unwrap();
    assert!(
        plan.iter().any(
            |l| l.starts_with(&format!("REFUSED commit {}", &unsigned[..12]))
                && l.contains("raise the quota")
        ),
        "{plan:?}"
    );
    r.reconciler.reconcile_once().await.unwrap();
    let refusals =
        r.h.audit()
            .await
            .into_iter()
            .filter(|row| row.outcome == "refused-untrusted")
            .count();
    assert_eq!(refusals, 1, "audited once per head");

    // A key nobody trusts does not help.
    let stranger = keygen(r.keys.path(), "stranger");
    // Re-signs the two newest commits (the hand edit and issueops's note).
    let sign_with = |key: &Path| {
        git(
            &work,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "rebase",
                "-q",
                "--exec",
                "git commit -q --amend --no-edit -S",
                "HEAD~2",
            ],
        );
        git(&work, &["push", "-q", "--force", "origin", "HEAD:main"]);
    };
    // The reviewer works on the branch as it is now (with issueops's commit).
    git(
        &work,
        &[
            "pull",
            "-q",
            "--rebase=false",
            "--no-edit",
            "origin",
            "main",
        ],
    );
    sign_with(&stranger);
    let why = r
        .reconciler
        .reconcile_once()
        .await
        .unwrap()
        .untrusted
        .expect("still refused");
    assert!(why.contains("which is not a trusted key"), "{why}");

    // The reviewer signs it: applied.
    sign_with(&r.reviewer);
    let report = r.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.applied.len(), 1, "{report:?}");
    r.h.finish().await;
}

/// A rollback in review mode is a proposal like any other change; approved,
/// it is merged and applied. Catches: a rollback that bypasses review.
#[tokio::test]
async fn a_rollback_in_review_mode_is_a_proposal() {
    let r = start(|_| {}).await;
    let run = label(&r, "rollback-1").await;
    r.cp.approve_proposal(&run, "alice", "ok").await.unwrap();
    r.reconciler.reconcile_once().await.unwrap();
    assert!(namespace_exists(&r).await);
    let before = r.h.repo.log().unwrap().len();
    // The head has the target's tree: nothing to propose.
    let target = r.h.repo.log().unwrap()[0].clone();
    match r.cp.request_rollback(&target, "carol").await.unwrap() {
        RollbackOutcome::Unchanged => {}
        other => panic!("{other:?}"),
    }
    // The run ends and is pruned (a lifecycle commit: no review); then a
    // rollback to the approved merge brings its objects back, once approved.
    set_job_status(
        &r.h.client,
        &naming::namespace_for_issue(REPO, 1),
        &run,
        "succeeded",
    )
    .await;
    issueops_reconciler::observe::observe_jobs(
        &r.h.client,
        &r.h.store,
        issueops_core::DEFAULT_INSTANCE,
    )
    .await
    .unwrap();
    let pruned = r.cp.prune_due(i64::MAX / 2).await.unwrap();
    assert_eq!(pruned.len(), 1, "the prune skips review");
    let after_prune = r.h.repo.log().unwrap().len();
    assert_eq!(after_prune, before + 1);
    let id = match r.cp.request_rollback(&target, "carol").await.unwrap() {
        RollbackOutcome::Proposed(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        r.h.repo.log().unwrap().len(),
        after_prune,
        "nothing applied yet"
    );
    let p = r.h.store.get_proposal(&id).await.unwrap().unwrap();
    assert_eq!(
        (p.kind.as_str(), p.proposed_by.as_str()),
        ("rollback", "carol")
    );
    let merge =
        r.cp.approve_proposal(&id, "alice", "restore it")
            .await
            .unwrap();
    assert_eq!(
        r.h.repo.files_at(&merge).unwrap(),
        r.h.repo.files_at(&target).unwrap()
    );
    let report = r.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    r.h.finish().await;
}

/// The staff UI: the proposals page shows what the reviewer must judge and
/// the diff, an approver approves with a reason (the merge is made and
/// named), and the health page shows an untrusted head and the last audit
/// verification. Catches: a page that shows the proposal without its diff,
/// or a form that decides without the CSRF token's session.
#[tokio::test]
async fn proposals_are_reviewed_in_the_staff_ui() {
    let r = start(|_| {}).await;
    let run = label(&r, "ui-review").await;
    let cp = ControlPlane::new(
        r.h.store.clone(),
        r.h.repo.clone().with_signer(Arc::new(
            Signer::from_file(&r.keys.path().join("issueops")).unwrap(),
        )),
        Arc::new(test_config()),
        Templates::embedded(),
    );
    let ui = common::staff_ui_http::serve_ui(&r.h, cp).await;
    let (status, page) = ui.get("/proposals").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!("id=\"proposal-{run}\""))
            && page.contains("**ResourceQuota**")
            && page.contains("resourcequota.yaml")
            && page.contains("<span class=\"add\">"),
        "{page}"
    );
    let (status, location) = ui
        .post_form(
            "/proposals",
            &format!("/proposals/{run}"),
            &[("decision", "approve"), ("reason", "read it all")],
        )
        .await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("/proposals?decided={run}").as_str())
    );
    let merge =
        r.h.store
            .get_proposal(&run)
            .await
            .unwrap()
            .unwrap()
            .merge_sha
            .unwrap();
    let (_, after) = ui.get(&location).await;
    assert!(
        after.contains("is now <strong>approved</strong> by ann") && after.contains(&merge[..12]),
        "{after}"
    );

    // An unsigned commit on the applied branch, and a verification.
    r.reconciler.reconcile_once().await.unwrap();
    r.h.repo
        .commit(&issueops_core::state_repo::CommitRequest {
            subject: "unsigned".into(),
            body: String::new(),
            trailers: vec![],
            changes: vec![issueops_core::state_repo::Change::Write {
                path: "NOTES.md".into(),
                content: b"x\n".to_vec(),
            }],
        })
        .unwrap();
    assert!(r
        .reconciler
        .reconcile_once()
        .await
        .unwrap()
        .untrusted
        .is_some());
    issueops_core::audit::verify::verify_and_record(&r.h.store, &r.h.repo, "ann")
        .await
        .unwrap();
    let (_, health) = ui.get("/health").await;
    assert!(
        health.contains("Untrusted commit on the applied branch")
            && health.contains("it is not signed"),
        "{health}"
    );
    assert!(
        health.contains("<span class=\"ok\">verified</span>"),
        "{health}"
    );
    r.h.finish().await;
}

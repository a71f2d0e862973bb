//! Operator commands: `migrate`, `runs`, `deliveries`, `audit` (and
//! `audit verify`), `reconcile`, `plan`, `rollback`.

use crate::cli::{ClusterArgs, Common};
use anyhow::{bail, Result};
use issueops_control_plane::lifecycle::RollbackOutcome;
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::store::redact_url;
use issueops_core::store::sessions::Revoke;

pub async fn migrate(common: &Common) -> Result<()> {
    let store = common.service_store().await?;
    store.migrate().await?;
    println!(
        "database {} is up to date",
        redact_url(&common.database_url())
    );
    Ok(())
}

pub async fn runs(common: &Common) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let runs = store.list_runs().await?;
    let results = store.run_results().await?;
    if runs.is_empty() {
        println!("no runs yet");
    }
    for r in runs {
        let agent = match results.get(&r.run_id) {
            Some(res) => format!(
                "  outcome={} pr={} head={}",
                res.outcome,
                res.pr_url.as_deref().unwrap_or("-"),
                res.head_commit
                    .as_deref()
                    .map_or("-", |c| &c[..12.min(c.len())])
            ),
            None => String::new(),
        };
        println!(
            "{}  {}#{}  {}  {}  ns={}  commit={}{agent}{}",
            r.run_id,
            r.repo,
            r.issue_number,
            r.mode,
            r.state,
            r.namespace,
            r.commit_sha.as_deref().unwrap_or("-"),
            r.reason
                .as_deref()
                .map(|why| format!("  reason={why}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn dead_letters(common: &Common) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let dead = store.dead_deliveries().await?;
    if dead.is_empty() {
        println!("no dead letters");
    }
    for d in dead {
        println!(
            "{}  {} {}  repo={}  attempts={}  dead since {}  reason: {}",
            d.delivery_id,
            d.event,
            d.action.as_deref().unwrap_or("-"),
            d.repo.as_deref().unwrap_or("-"),
            d.attempts,
            issueops_ui::view::time(Some(d.dead_at)),
            d.reason
        );
    }
    Ok(())
}

pub async fn retry_delivery(common: &Common, id: &str, actor: &str) -> Result<()> {
    let (control_plane, _turn) = super::deciding_control_plane(common).await?;
    match control_plane.retry_delivery(id, actor, None).await {
        Ok(done) => println!("{done}; a running control plane handles it next"),
        Err(issueops_control_plane::ControlPlaneError::Refused(why)) => bail!("{why}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The session id people see: the start of its hash (the id itself is only
/// in its cookie).
fn shown_id(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

pub async fn sessions(common: &Common) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let live = store.live_ui_sessions().await?;
    if live.is_empty() {
        println!("no live staff UI sessions");
    }
    for s in live {
        println!(
            "{}  {}  {}  via {}  since {}  until {}",
            shown_id(&s.id_hash),
            s.login,
            s.role,
            s.how,
            issueops_ui::view::time(Some(s.created_at)),
            issueops_ui::view::time(Some(s.expires_at)),
        );
    }
    Ok(())
}

pub async fn revoke_sessions(common: &Common, which: Revoke<'_>, actor: &str) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let what = match &which {
        Revoke::Id(id) => format!("session {id}"),
        Revoke::Login(login) => format!("every session of {login}"),
        Revoke::All => "every session".into(),
    };
    let ended = store.revoke_ui_sessions(which.clone()).await?;
    if ended.is_empty() {
        bail!("no live session matches ({what}): `issueops sessions` lists them");
    }
    store
        .append_audit(
            &AuditEvent::new(kind::UI_SESSION_REVOKED, "revoked")
                .actor(actor)
                .detail(serde_json::json!({ "which": what, "logins": ended })),
        )
        .await?;
    println!(
        "ended {} session(s) of {}: at their next request they sign in again",
        ended.len(),
        ended.join(", ")
    );
    Ok(())
}

pub async fn audit(common: &Common, run: Option<&str>) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let rows = match run {
        Some(run) => store.audit_rows_for_run(run).await?,
        None => store.audit_rows().await?,
    };
    for row in rows {
        println!("{}", serde_json::to_string(&row)?);
    }
    Ok(())
}

/// `issueops audit verify`: fails (exit 1) naming the first break.
pub async fn verify_audit(common: &Common, actor: &str) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let repo = common.state_repo()?;
    let v = issueops_core::audit::verify::verify_and_record(&store, &repo, actor).await?;
    println!(
        "audit: {} rows ({} from before the chain), head {}",
        v.rows,
        v.unchained,
        v.head.as_deref().unwrap_or("(no chained rows yet)")
    );
    if let Some(commits) = v.commits {
        println!(
            "state repo {}: {commits} commits, {} without issueops trailers{}",
            repo.location(),
            v.foreign_commits.len(),
            if v.foreign_commits.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    v.foreign_commits
                        .iter()
                        .map(|s| &s[..12.min(s.len())])
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let Some(first) = v.first_break() else {
        println!("verified: the chain is whole and every issueops commit matches its audit row");
        return Ok(());
    };
    println!("BROKEN: {first}");
    for more in v.breaks.iter().skip(1) {
        println!("  also: {more}");
    }
    bail!("the audit trail does not verify: {first}")
}

pub async fn reconcile(
    common: &Common,
    cluster: &ClusterArgs,
    force: bool,
    resync: bool,
) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let backend = super::serve::backend(common, &store, cluster).await?;
    {
        let _turn = super::take_turn(&store, issueops_control_plane::WRITER_ROLE).await?;
        backend.control_plane.process_pending().await?;
    }
    let _turn = super::take_turn(&store, issueops_reconciler::WRITER_ROLE).await?;
    let report = backend.reconciler.reconcile(force).await;
    if !backend.cluster.real {
        // Another process (a running serve) reads the same saved stand-in.
        crate::standin::save(
            &backend.cluster.client,
            &common.data_dir,
            &backend.cluster.state_key,
        )
        .await?;
    }
    let report = report?;
    if let Some(reason) = report.untrusted {
        bail!("applied nothing: {reason}");
    }
    println!(
        "applied {}, deleted {}, skipped {}, failed {}",
        report.applied.len(),
        report.deleted.len(),
        report.skipped.len(),
        report.failed.len()
    );
    if let Some(reason) = report.blocked {
        bail!("stopped by prune safety: {reason}");
    }
    if resync {
        let r = backend.reconciler.resync(force).await?;
        println!(
            "resync: {} live objects ({} metadata LIST calls), {} state-repo files read (the rest matched by digest), re-applied {}, deleted {}",
            r.live_objects,
            r.list_calls,
            r.files_read,
            r.cycle.applied.len(),
            r.cycle.deleted.len()
        );
        if let Some(reason) = r.cycle.blocked {
            bail!("resync stopped by prune safety: {reason}");
        }
    }
    Ok(())
}

pub async fn plan(common: &Common, cluster: &ClusterArgs) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    // The plan compares the state repo with what the reconciler last applied
    // to this cluster (its state key); it only reads the cluster, to show
    // which new objects exist already as someone else's (refused, not taken).
    let cluster = crate::settings::cluster_client(cluster.cluster, &common.data_dir).await?;
    println!("cluster: {}", cluster.description);
    let config = common.load_config()?;
    let reconciler =
        issueops_reconciler::Reconciler::new(store, common.state_repo()?, cluster.client)
            .with_state_key(cluster.state_key)
            .with_trusted_keys(common.trusted_keys()?)
            .with_instance(config.instance.clone())
            .with_cluster(&config.cluster);
    for line in reconciler.plan().await? {
        println!("{line}");
    }
    Ok(())
}

pub async fn rollback(common: &Common, commit: &str, actor: &str) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let repo = common.state_repo()?;
    let full = repo.resolve(commit)?;
    let control_plane = issueops_control_plane::ControlPlane::new(
        store,
        repo,
        std::sync::Arc::new(common.load_config()?),
        common.templates()?,
    );
    let _turn =
        super::take_turn(control_plane.store(), issueops_control_plane::WRITER_ROLE).await?;
    match control_plane.request_rollback(&full, actor).await? {
        RollbackOutcome::Committed(sha) => {
            println!("rollback committed as {sha}; the reconciler converges on its next cycle")
        }
        RollbackOutcome::Proposed(id) => println!(
            "rollback proposed for review as {id} (branch proposals/{id}); `issueops proposals approve {id}` applies it"
        ),
        RollbackOutcome::Unchanged => println!("HEAD already has the tree of {full}: nothing to do"),
    }
    Ok(())
}

//! `proposals`, `proposals show|approve|deny`: reviewing runs and rollbacks
//! proposed on `proposals/<id>` branches before they reach the applied branch.

use crate::cli::Common;
use anyhow::{bail, Result};

fn age(ms: i64) -> String {
    let s = (issueops_core::now_ms() - ms).max(0) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

pub async fn list(common: &Common, all: bool) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let proposals = store.list_proposals(!all).await?;
    if proposals.is_empty() {
        println!("no {}proposals", if all { "" } else { "pending " });
    }
    for p in proposals {
        let what = match (&p.repo, p.issue_number) {
            (Some(repo), Some(n)) => format!("{repo}#{n}"),
            _ => p.kind.clone(),
        };
        let expires = (p.expires_at - issueops_core::now_ms()).max(0) / 1000;
        println!(
            "{}  {}  {}  {}  by {}  {} ago  {}",
            p.id,
            p.state,
            what,
            p.branch,
            p.proposed_by,
            age(p.created_at),
            match p.state.as_str() {
                "pending" => format!("expires in {expires}s"),
                _ => format!(
                    "{} by {}{}",
                    p.state,
                    p.decided_by.as_deref().unwrap_or("-"),
                    p.merge_sha
                        .as_deref()
                        .map(|m| format!(", merged as {}", &m[..12.min(m.len())]))
                        .unwrap_or_default()
                ),
            }
        );
    }
    Ok(())
}

pub async fn show(common: &Common, id: &str) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let Some(p) = store.get_proposal(id).await? else {
        bail!("there is no proposal {id}: `issueops proposals --all` lists them");
    };
    println!(
        "proposal {} ({}), {}, branch {} at {}",
        p.id, p.kind, p.state, p.branch, p.commit_sha
    );
    println!("\n{}\n", p.summary);
    let repo = common.state_repo()?;
    let sha = p.commit_sha.clone();
    let patch = tokio::task::spawn_blocking(move || repo.patch(&sha, 256 * 1024)).await??;
    print!("{patch}");
    Ok(())
}

pub async fn decide(
    common: &Common,
    id: &str,
    actor: &str,
    approve: bool,
    reason: &str,
) -> Result<()> {
    let (control_plane, _turn) = super::deciding_control_plane(common).await?;
    if approve {
        let sha = control_plane.approve_proposal(id, actor, reason).await?;
        println!("proposal {id} approved and merged as {sha}; the reconciler applies it on its next cycle");
    } else {
        control_plane.deny_proposal(id, actor, reason).await?;
        println!("proposal {id} denied; nothing of it is applied");
    }
    Ok(())
}

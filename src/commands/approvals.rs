//! `approvals`, `approve`, `deny`: deciding triggers that wait for an approver.

use crate::cli::Common;
use anyhow::Result;
use std::sync::Arc;

pub async fn list(common: &Common) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let requests = store.list_approvals().await?;
    if requests.is_empty() {
        println!("no approval requests");
    }
    for a in requests {
        println!(
            "{}  {}  {}#{}  {}  by {}  decided by {}  {}",
            a.id,
            a.state,
            a.repo,
            a.issue_number,
            a.mode,
            a.requester,
            a.decided_by.as_deref().unwrap_or("-"),
            a.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub async fn decide(
    common: &Common,
    id: &str,
    actor: &str,
    approve: bool,
    reason: &str,
) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let config = common.load_config()?;
    let github = crate::settings::github_from_env(&config)?.map(Arc::new);
    let control_plane = common.control_plane(&store, Arc::new(config), github)?;
    let _turn = super::take_turn(&store, issueops_control_plane::WRITER_ROLE).await?;
    println!(
        "{}",
        control_plane
            .decide_request(id, actor, approve, reason)
            .await?
    );
    Ok(())
}

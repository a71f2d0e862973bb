//! `approvals`, `approve`, `deny`: deciding triggers that wait for an approver.

use crate::cli::Common;
use anyhow::Result;

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
    let (control_plane, _turn) = super::deciding_control_plane(common).await?;
    println!(
        "{}",
        control_plane
            .decide_request(id, actor, approve, reason)
            .await?
    );
    Ok(())
}

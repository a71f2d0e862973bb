//! Operator commands: `migrate`, `runs`, `audit`.

use crate::cli::Common;
use anyhow::Result;
use issueops_core::store::redact_url;

pub async fn migrate(common: &Common) -> Result<()> {
    let store = common.store().await?;
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
    if runs.is_empty() {
        println!("no runs yet");
    }
    for r in runs {
        println!(
            "{}  {}#{}  {}  {}  ns={}  commit={}",
            r.run_id,
            r.repo,
            r.issue_number,
            r.mode,
            r.state,
            r.namespace,
            r.commit_sha.as_deref().unwrap_or("-")
        );
    }
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

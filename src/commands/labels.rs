//! `labels sync`: the label catalogue onto every configured repo.

use crate::cli::Common;
use anyhow::{bail, Result};
use issueops_control_plane::labels;

pub async fn sync(common: &Common, dry_run: bool) -> Result<()> {
    let config = common.load_config()?;
    let catalogue = labels::catalogue(&config);
    if dry_run {
        for l in &catalogue {
            println!("{}  #{}  {}", l.name, l.color, l.description);
        }
        return Ok(());
    }
    if config.repos.is_empty() {
        bail!("no repos configured: add them with --repo or `repos` in the config file");
    }
    let Some(github) = crate::settings::github_from_env(&config)? else {
        bail!(
            "GitHub is not configured: set ISSUEOPS_GITHUB_APP_ID and ISSUEOPS_GITHUB_APP_KEY_FILE \
             (or ISSUEOPS_GITHUB_TOKEN) to sync labels; `--dry-run` prints the catalogue"
        );
    };
    for repo in &config.repos {
        for done in labels::sync(&github, repo, &catalogue).await? {
            println!("{}  {}  {}", done.repo, done.action, done.name);
        }
    }
    Ok(())
}

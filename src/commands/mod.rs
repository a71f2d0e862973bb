//! One module per group of subcommands; each parses nothing and decides
//! nothing, it builds the parts and calls the crate that owns the role.

pub mod api_tokens;
pub mod approvals;
pub mod demo;
pub mod github_app;
pub mod labels;
pub mod ops;
pub mod proposals;
pub mod render;
pub mod serve;

/// How long a CLI command that changes state waits for a running service's
/// pass to finish.
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes `role`'s exclusive lock for a command that changes state, so it
/// never interleaves with a running service's pass (or another command).
pub async fn take_turn(
    store: &issueops_core::Store,
    role: &str,
) -> anyhow::Result<issueops_core::store::lock::Exclusive> {
    use anyhow::Context;
    store.exclusive(role, TURN_WAIT).await.with_context(|| {
        format!("cannot change state now: a running issueops service or another command is busy ({role})")
    })
}

/// The control plane as a CLI decision uses it (GitHub when configured),
/// with the control plane's turn held until the returned lock drops.
pub async fn deciding_control_plane(
    common: &crate::cli::Common,
) -> anyhow::Result<(
    issueops_control_plane::ControlPlane,
    issueops_core::store::lock::Exclusive,
)> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    let config = common.load_config()?;
    let github = crate::settings::github_from_env(&config)?.map(std::sync::Arc::new);
    let control_plane = common.control_plane(&store, std::sync::Arc::new(config), github)?;
    let turn = take_turn(&store, issueops_control_plane::WRITER_ROLE).await?;
    Ok((control_plane, turn))
}

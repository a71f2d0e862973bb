//! The `issueops` binary: parses the command line and wires the components.
//! It decides nothing; each subcommand hands off to the crate that owns the role.

mod cli;
mod commands;
mod leader;
mod ops_http;
mod settings;
mod shutdown;
mod standin;
mod telemetry;

use clap::Parser;
use cli::{
    AuditCommand, Cli, Command, DeliveriesCommand, GithubAppCommand, LabelsCommand,
    ProposalsCommand, SessionsCommand,
};
use issueops_core::store::sessions::Revoke;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One TLS crypto provider for every client (Kubernetes, GitHub, git over
    // HTTPS): rustls will not choose when the dependency graph holds two.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    telemetry::init(cli.common.log_format, level);
    let result = match cli.command {
        Command::Serve {
            gateway,
            cluster,
            ui,
            ops,
        } => commands::serve::serve(&cli.common, &gateway, &cluster, &ui, &ops).await,
        Command::Gateway { gateway, ops } => {
            commands::serve::gateway_only(&cli.common, &gateway, &ops).await
        }
        Command::Reconciler { cluster, ui, ops } => {
            commands::serve::reconciler_only(&cli.common, &cluster, &ui, &ops).await
        }
        Command::Migrate => commands::ops::migrate(&cli.common).await,
        Command::Render {
            payload,
            delivery_id,
            label,
        } => commands::render::render(&cli.common, &payload, &delivery_id, label.as_deref()),
        Command::Demo {
            send: Some(url),
            sender,
            issue,
            ..
        } => commands::demo::send(&cli.common, &url, sender.as_deref(), issue).await,
        Command::Demo { cluster, .. } => commands::demo::demo(&cli.common, &cluster).await,
        Command::Reconcile {
            cluster,
            force,
            resync,
        } => commands::ops::reconcile(&cli.common, &cluster, force, resync).await,
        Command::Plan { cluster } => commands::ops::plan(&cli.common, &cluster).await,
        Command::Rollback { commit, actor } => {
            commands::ops::rollback(&cli.common, &commit, &actor).await
        }
        Command::Proposals { command: None, all } => {
            commands::proposals::list(&cli.common, all).await
        }
        Command::Proposals {
            command: Some(ProposalsCommand::Show { id }),
            ..
        } => commands::proposals::show(&cli.common, &id).await,
        Command::Proposals {
            command: Some(ProposalsCommand::Approve { id, reason, actor }),
            ..
        } => commands::proposals::decide(&cli.common, &id, &actor, true, &reason).await,
        Command::Proposals {
            command: Some(ProposalsCommand::Deny { id, reason, actor }),
            ..
        } => commands::proposals::decide(&cli.common, &id, &actor, false, &reason).await,
        Command::Approvals => commands::approvals::list(&cli.common).await,
        Command::Approve { id, reason, actor } => {
            commands::approvals::decide(&cli.common, &id, &actor, true, &reason).await
        }
        Command::Deny { id, reason, actor } => {
            commands::approvals::decide(&cli.common, &id, &actor, false, &reason).await
        }
        Command::Labels {
            command: LabelsCommand::Sync { dry_run },
        } => commands::labels::sync(&cli.common, dry_run).await,
        Command::Runs => commands::ops::runs(&cli.common).await,
        Command::Deliveries { command: None } => commands::ops::dead_letters(&cli.common).await,
        Command::Deliveries {
            command: Some(DeliveriesCommand::Retry { id, actor }),
        } => commands::ops::retry_delivery(&cli.common, &id, &actor).await,
        Command::Sessions { command: None } => commands::ops::sessions(&cli.common).await,
        Command::Sessions {
            command:
                Some(SessionsCommand::Revoke {
                    id,
                    login,
                    all,
                    actor,
                }),
        } => {
            let which = match (&id, &login) {
                (Some(id), _) => Revoke::Id(id),
                (None, Some(login)) => Revoke::Login(login),
                (None, None) if all => Revoke::All,
                // clap requires one of them.
                (None, None) => Revoke::Id(""),
            };
            commands::ops::revoke_sessions(&cli.common, which, &actor).await
        }
        Command::GithubApp {
            command: GithubAppCommand::Create(args),
        } => commands::github_app::create(&args).await,
        Command::ApiTokens { command } => commands::api_tokens::run(&cli.common, command).await,
        Command::Audit {
            command: Some(AuditCommand::Verify { actor }),
            ..
        } => commands::ops::verify_audit(&cli.common, &actor).await,
        Command::Audit { run, command: None } => {
            commands::ops::audit(&cli.common, run.as_deref()).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, each said once: many errors
/// already end with their cause's text, which `{:#}` would repeat.
fn error_chain(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}

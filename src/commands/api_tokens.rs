//! `issueops api-tokens`: bearer tokens for the staff JSON API. The token is
//! printed once; the store keeps its SHA-256. Creating and revoking are
//! audited (`api.token`), with the name and role, never the token.

use crate::cli::{ApiTokensCommand, Common};
use anyhow::{bail, Result};
use issueops_core::audit::AuditEvent;
use issueops_core::store::api_tokens::{ApiToken, PREFIX};
use serde_json::json;

/// The audit kind of token changes.
const KIND: &str = "api.token";

pub async fn run(common: &Common, command: ApiTokensCommand) -> Result<()> {
    let store = common.store().await?;
    store.ensure_migrated().await?;
    match command {
        ApiTokensCommand::Create {
            name,
            role,
            expires_days,
            actor,
        } => {
            let name = name.trim().to_string();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!("--name must be 1 to 64 letters, digits, '-', '_' or '.': {name:?}");
            }
            if !matches!(role.as_str(), "viewer" | "approver") {
                bail!("--role must be viewer or approver, not {role:?}");
            }
            let now = issueops_core::now_ms();
            let secret = format!("{PREFIX}{}", issueops_ui::session::random_token());
            let token = ApiToken {
                id: issueops_ui::session::random_token()[..16].to_string(),
                name: name.clone(),
                role: role.clone(),
                created_by: actor.clone(),
                created_at: now,
                expires_at: expires_days.map(|d| now + i64::from(d) * 86_400_000),
                revoked_at: None,
            };
            if !store.create_api_token(&token, &secret).await? {
                bail!("a token named {name:?} exists (or existed): pick another name, `issueops api-tokens list` shows them");
            }
            store
                .append_audit(
                    &AuditEvent::new(KIND, "created")
                        .actor(&actor)
                        .object(format!("api-token/{name}"))
                        .detail(json!({ "role": role, "expires_at": token.expires_at })),
                )
                .await?;
            eprintln!("API token {name:?} ({role}) created; it is shown only now:");
            println!("{secret}");
            eprintln!(
                "use it as: curl -H \"Authorization: Bearer $TOKEN\" <ui address>/api/v1/runs"
            );
        }
        ApiTokensCommand::List => {
            let tokens = store.api_tokens().await?;
            if tokens.is_empty() {
                println!("no API tokens: `issueops api-tokens create --name NAME --role viewer` makes one");
            }
            let now = issueops_core::now_ms();
            for t in tokens {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(at), _) => format!("revoked {}", issueops_ui::view::time(Some(at))),
                    (None, Some(at)) if at <= now => {
                        format!("expired {}", issueops_ui::view::time(Some(at)))
                    }
                    (None, Some(at)) => format!("live until {}", issueops_ui::view::time(Some(at))),
                    (None, None) => "live".into(),
                };
                println!(
                    "{}  {}  by {}  since {}  {state}",
                    t.name,
                    t.role,
                    t.created_by,
                    issueops_ui::view::time(Some(t.created_at)),
                );
            }
        }
        ApiTokensCommand::Revoke { name, actor } => {
            if !store.revoke_api_token(&name).await? {
                bail!("no live API token named {name:?}: `issueops api-tokens list` shows them");
            }
            store
                .append_audit(
                    &AuditEvent::new(KIND, "revoked")
                        .actor(&actor)
                        .object(format!("api-token/{name}")),
                )
                .await?;
            println!("API token {name:?} revoked: refused from its next request");
        }
    }
    Ok(())
}

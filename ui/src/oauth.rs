//! Sign in with GitHub (the OAuth web flow): redirect to GitHub with a
//! random `state`, exchange the code for a user token, read who the user is
//! and (only when the config names orgs or teams) their orgs and teams, then
//! give them a role from the config. The user token is dropped at once.

use crate::session::Role;
use issueops_core::config::{Config, OAuthConfig};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("GitHub refused the sign-in: {0}")]
    Refused(String),
    #[error("cannot reach GitHub for the sign-in: {0}")]
    Http(#[from] reqwest::Error),
}

/// The OAuth App and where to reach GitHub.
#[derive(Debug, Clone)]
pub struct GitHubSignIn {
    pub oauth: OAuthConfig,
    pub client_secret: String,
    pub api_url: String,
    /// `<public url>/signin/github/callback`
    pub redirect_uri: String,
    http: reqwest::Client,
}

/// Who signed in, as GitHub says (kept with the session, so the role can be
/// weighed again against the config on every request).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub login: String,
    pub orgs: Vec<String>,
    /// `org/team-slug`
    pub teams: Vec<String>,
}

impl GitHubSignIn {
    pub fn new(
        oauth: OAuthConfig,
        client_secret: String,
        api_url: String,
        redirect_uri: String,
    ) -> Result<Self, OAuthError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .user_agent("issueops-ui")
            .build()?;
        Ok(Self {
            oauth,
            client_secret,
            api_url: api_url.trim_end_matches('/').to_string(),
            redirect_uri,
            http,
        })
    }

    /// Where to send the browser to sign in.
    pub fn authorize_url(&self, state: &str) -> String {
        let mut url = match reqwest::Url::parse(&self.oauth.authorize_url) {
            Ok(u) => u,
            Err(_) => return self.oauth.authorize_url.clone(),
        };
        url.query_pairs_mut()
            .append_pair("client_id", &self.oauth.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", "read:org")
            .append_pair("state", state)
            .append_pair("allow_signup", "false");
        url.to_string()
    }

    /// Trades the callback's `code` for who the user is.
    pub async fn identify(&self, code: &str, config: &Config) -> Result<Identity, OAuthError> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            error: Option<String>,
            error_description: Option<String>,
        }
        let answer: TokenAnswer = self
            .http
            .post(&self.oauth.token_url)
            .header("Accept", "application/json")
            .form(&[
                ("client_id", self.oauth.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("code", code),
                ("redirect_uri", self.redirect_uri.as_str()),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let Some(token) = answer.access_token else {
            return Err(OAuthError::Refused(
                answer
                    .error_description
                    .or(answer.error)
                    .unwrap_or_else(|| "no access token in the answer".into()),
            ));
        };
        #[derive(Deserialize)]
        struct User {
            login: String,
        }
        #[derive(Deserialize)]
        struct Org {
            login: String,
        }
        #[derive(Deserialize)]
        struct Team {
            slug: String,
            organization: Org,
        }
        let get = |path: &str| {
            self.http
                .get(format!("{}{path}", self.api_url))
                .bearer_auth(&token)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
        };
        let user: User = get("/user")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let ui = &config.ui;
        let wants_orgs = !(ui.viewers.orgs.is_empty() && ui.approvers.orgs.is_empty());
        let wants_teams = !(ui.viewers.teams.is_empty() && ui.approvers.teams.is_empty());
        let orgs = if wants_orgs {
            let orgs: Vec<Org> = get("/user/orgs?per_page=100")
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            orgs.into_iter().map(|o| o.login).collect()
        } else {
            Vec::new()
        };
        let teams = if wants_teams {
            let teams: Vec<Team> = get("/user/teams?per_page=100")
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            teams
                .into_iter()
                .map(|t| format!("{}/{}", t.organization.login, t.slug))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Identity {
            login: user.login,
            orgs,
            teams,
        })
    }
}

/// The role the config gives `who`, or `None`: not allowed in.
pub fn role_for(config: &Config, who: &Identity) -> Option<Role> {
    let ui = &config.ui;
    if config.github.is_approver(&who.login)
        || ui.approvers.contains(&who.login, &who.orgs, &who.teams)
    {
        Some(Role::Approver)
    } else if ui.viewers.contains(&who.login, &who.orgs, &who.teams) {
        Some(Role::Viewer)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(login: &str, orgs: &[&str], teams: &[&str]) -> Identity {
        Identity {
            login: login.into(),
            orgs: orgs.iter().map(|s| s.to_string()).collect(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn roles_come_from_users_orgs_and_teams() {
        let mut config = Config::default();
        config.ui.viewers.orgs = vec!["Acme".into()];
        config.ui.approvers.teams = vec!["acme/release".into()];
        config.github.approvers = vec!["boss".into()];
        assert_eq!(
            role_for(&config, &who("ann", &["acme"], &[])),
            Some(Role::Viewer)
        );
        assert_eq!(
            role_for(&config, &who("bob", &["acme"], &["ACME/release"])),
            Some(Role::Approver)
        );
        assert_eq!(
            role_for(&config, &who("Boss", &[], &[])),
            Some(Role::Approver)
        );
        assert_eq!(role_for(&config, &who("eve", &["evil"], &["evil/x"])), None);
    }
}

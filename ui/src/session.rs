//! Who is signed in: an encrypted, signed session cookie (HttpOnly,
//! SameSite=Lax, Secure behind https) holding the login, the role, a CSRF
//! token, the expiry and a random session id, and a row per session on the
//! server (`ui_sessions`, keyed by the id's SHA-256). A cookie counts only
//! while its row is live: signing out, `issueops sessions revoke`, or a role
//! taken away in the config (weighed again on every request) ends it at the
//! next request, copies of the cookie included. Rows are written only by a
//! sign-in, so an unauthenticated request leaves no trace.
//!
//! Without GitHub sign-in, one sign-in link at a time is valid: `serve`
//! prints it, it works once, and a visit to the sign-in page while none is
//! outstanding prints a fresh one in the server's log (only the person with
//! the terminal can use it).

use axum_extra::extract::cookie::{Cookie, Key, PrivateCookieJar, SameSite};
use issueops_core::store::sessions::UiSession;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "issueops_session";
/// How a GitHub sign-in's session says it was made.
pub const GITHUB: &str = "github";
/// How a loopback link's session says it was made.
pub const LOOPBACK: &str = "loopback link";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Approver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "approver" => Some(Role::Approver),
            _ => None,
        }
    }
}

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub login: String,
    pub role: Role,
    /// Sent back with every form; a post without it is refused.
    pub csrf: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    /// Names the server's row; only its SHA-256 is stored there.
    #[serde(default)]
    pub sid: String,
}

impl Session {
    pub fn new(login: String, role: Role, hours: u64) -> Self {
        Self {
            login,
            role,
            csrf: random_token(),
            expires_at: issueops_core::now_ms() + (hours as i64).saturating_mul(3_600_000),
            sid: random_token(),
        }
    }

    /// The session in `jar`'s cookie, when it has not expired. Whether it is
    /// still live is the server's to say: see [`Session::live`].
    pub fn from_jar(jar: &PrivateCookieJar) -> Option<Self> {
        let cookie = jar.get(SESSION_COOKIE)?;
        let session: Session = serde_json::from_str(cookie.value()).ok()?;
        (session.expires_at > issueops_core::now_ms() && !session.sid.is_empty()).then_some(session)
    }

    /// The hex SHA-256 of the session id: the server row's key.
    pub fn id_hash(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.sid.as_bytes()))
    }

    /// The row that makes this session live, written at sign-in.
    pub fn row(&self, how: &str, identity: &crate::oauth::Identity) -> UiSession {
        UiSession {
            id_hash: self.id_hash(),
            login: self.login.clone(),
            role: self.role.as_str().into(),
            how: how.into(),
            identity: serde_json::to_string(identity).unwrap_or_default(),
            created_at: issueops_core::now_ms(),
            expires_at: self.expires_at,
            revoked_at: None,
        }
    }

    /// The session of `jar` if the server still holds it live, with the role
    /// the config gives now (a GitHub sign-in's role is weighed again; one
    /// the config no longer allows in is signed out).
    pub async fn live(
        jar: &PrivateCookieJar,
        store: &issueops_core::Store,
        config: &issueops_core::Config,
    ) -> Option<Self> {
        let mut session = Self::from_jar(jar)?;
        let row = match store.live_ui_session(&session.id_hash()).await {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session; treating it as signed out");
                return None;
            }
        };
        session.role = if row.how == GITHUB {
            let identity: crate::oauth::Identity = serde_json::from_str(&row.identity).ok()?;
            crate::oauth::role_for(config, &identity)?
        } else {
            Role::parse(&row.role)?
        };
        Some(session)
    }

    /// `jar` with this session set.
    pub fn store(&self, jar: PrivateCookieJar, secure: bool) -> PrivateCookieJar {
        let value = serde_json::to_string(self).unwrap_or_default();
        jar.add(cookie(SESSION_COOKIE, value, secure))
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// A cookie as every cookie of the UI is set.
pub fn cookie(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .build()
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The cookie key: from the file named by `ISSUEOPS_UI_COOKIE_KEY_FILE`
/// (64 bytes or more, so sessions outlive a restart), else random per start.
pub fn cookie_key(file: Option<&std::path::Path>) -> Result<Key, String> {
    match file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read the UI cookie key {}: {e}", path.display()))?;
            Key::try_from(bytes.as_slice()).map_err(|_| {
                format!(
                    "the UI cookie key {} must hold at least 64 bytes (e.g. `head -c 64 /dev/urandom`)",
                    path.display()
                )
            })
        }
        None => Ok(Key::generate()),
    }
}

/// The one outstanding loopback sign-in link's token.
#[derive(Debug, Default)]
pub struct SignInLinks {
    outstanding: Mutex<Option<String>>,
}

impl SignInLinks {
    /// A new token when none is outstanding (`None` otherwise).
    pub fn mint(&self) -> Option<String> {
        let mut slot = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return None;
        }
        let token = random_token();
        *slot = Some(token.clone());
        Some(token)
    }

    /// Uses `token` up: true when it was the outstanding one.
    pub fn redeem(&self, token: &str) -> bool {
        let mut slot = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        let ok = slot
            .as_deref()
            .is_some_and(|t| !token.is_empty() && bool::from(t.as_bytes().ct_eq(token.as_bytes())));
        if ok {
            *slot = None;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_once_and_only_one_is_outstanding() {
        let links = SignInLinks::default();
        let token = links.mint().expect("first link");
        assert_eq!(links.mint(), None, "a second link while one is outstanding");
        assert!(!links.redeem("wrong"));
        assert!(links.redeem(&token));
        assert!(!links.redeem(&token), "used up");
        assert!(links.mint().is_some(), "a new one after use");
    }

    /// A GitHub sign-in's role is weighed again on every request, against
    /// the config of now; a revoked or unknown session is no session.
    #[tokio::test]
    async fn a_session_lives_only_while_its_row_does_with_the_configs_role() {
        let dir = tempfile::tempdir().unwrap();
        let store = issueops_core::Store::connect(&format!(
            "sqlite://{}",
            dir.path().join("s.db").display()
        ))
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let session = Session::new("ann".into(), Role::Approver, 1);
        let jar = session.store(PrivateCookieJar::new(Key::generate()), false);
        let mut config = issueops_core::Config::default();
        config.ui.approvers.users = vec!["ann".into()];
        // A cookie without its row (never signed in here) is nobody.
        assert_eq!(Session::live(&jar, &store, &config).await, None);
        let who = crate::oauth::Identity {
            login: "ann".into(),
            orgs: vec![],
            teams: vec![],
        };
        store
            .create_ui_session(&session.row(GITHUB, &who))
            .await
            .unwrap();
        let live = Session::live(&jar, &store, &config).await.unwrap();
        assert_eq!(live.role, Role::Approver);
        // Taken off the approvers, still a viewer: at once a viewer.
        config.ui.approvers.users.clear();
        config.ui.viewers.users = vec!["ann".into()];
        let live = Session::live(&jar, &store, &config).await.unwrap();
        assert_eq!(live.role, Role::Viewer);
        // Off both lists: signed out.
        config.ui.viewers.users.clear();
        assert_eq!(Session::live(&jar, &store, &config).await, None);
        // Revoked: signed out whatever the config says.
        config.ui.approvers.users = vec!["ann".into()];
        assert!(Session::live(&jar, &store, &config).await.is_some());
        let ended = store
            .revoke_ui_sessions(issueops_core::store::sessions::Revoke::Login("ann"))
            .await
            .unwrap();
        assert_eq!(ended, ["ann"]);
        assert_eq!(Session::live(&jar, &store, &config).await, None);
    }

    #[test]
    fn csrf_needs_the_exact_token() {
        let s = Session::new("ann".into(), Role::Viewer, 1);
        assert!(s.csrf_ok(&s.csrf.clone()));
        assert!(!s.csrf_ok(""));
        assert!(!s.csrf_ok(&s.csrf[1..]));
    }
}

//! Who is signed in: an encrypted, signed session cookie (HttpOnly,
//! SameSite=Lax, Secure behind https) holding the login, the role, a CSRF
//! token and the expiry. Nothing is stored on the server per visitor, so an
//! unauthenticated request leaves no trace.
//!
//! Without GitHub sign-in, one sign-in link at a time is valid: `serve`
//! prints it, it works once, and a visit to the sign-in page while none is
//! outstanding prints a fresh one in the server's log (only the person with
//! the terminal can use it).

use axum_extra::extract::cookie::{Cookie, Key, PrivateCookieJar, SameSite};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "issueops_session";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Approver,
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
}

impl Session {
    pub fn new(login: String, role: Role, hours: u64) -> Self {
        Self {
            login,
            role,
            csrf: random_token(),
            expires_at: issueops_core::now_ms() + (hours as i64).saturating_mul(3_600_000),
        }
    }

    /// The session in `jar`, when there is one that has not expired.
    pub fn from_jar(jar: &PrivateCookieJar) -> Option<Self> {
        let cookie = jar.get(SESSION_COOKIE)?;
        let session: Session = serde_json::from_str(cookie.value()).ok()?;
        (session.expires_at > issueops_core::now_ms()).then_some(session)
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

    #[test]
    fn csrf_needs_the_exact_token() {
        let s = Session::new("ann".into(), Role::Viewer, 1);
        assert!(s.csrf_ok(&s.csrf.clone()));
        assert!(!s.csrf_ok(""));
        assert!(!s.csrf_ok(&s.csrf[1..]));
    }
}

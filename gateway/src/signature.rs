//! Verification of GitHub's `X-Hub-Signature-256` header.
//!
//! The HMAC-SHA256 of the raw body is compared in constant time
//! (`Mac::verify_slice`) against every configured secret, so a secret can be
//! rotated without downtime: configure old and new, switch GitHub, drop the old.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body under any configured secret")]
    Mismatch,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("no webhook secret configured: set ISSUEOPS_WEBHOOK_SECRET or --webhook-secret-file")]
    None,
    #[error("cannot read webhook secret file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The webhook secrets accepted at once. Never printed (no `Debug` of the values).
#[derive(Clone)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} configured)", self.0.len())
    }
}

impl Secrets {
    /// Collects secrets from an env value (one secret) and a file (one secret per
    /// line, blank lines ignored). Refuses an empty set.
    pub fn load(
        env_secret: Option<&str>,
        file: Option<&std::path::Path>,
    ) -> Result<Self, SecretsError> {
        let mut secrets = Vec::new();
        if let Some(s) = env_secret.filter(|s| !s.is_empty()) {
            secrets.push(s.as_bytes().to_vec());
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Read {
                path: path.display().to_string(),
                source,
            })?;
            secrets.extend(
                text.lines()
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty())
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
        Self::new(secrets)
    }

    pub fn new(secrets: Vec<Vec<u8>>) -> Result<Self, SecretsError> {
        if secrets.is_empty() {
            return Err(SecretsError::None);
        }
        Ok(Self(secrets))
    }

    /// Checks `header` (the raw `X-Hub-Signature-256` value) against `body`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_sig = header
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Malformed)?;
        let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
        if expected.len() != 32 {
            return Err(SignatureError::Malformed);
        }
        // Check every secret, even after a match, so timing does not tell which one.
        let mut matched = false;
        for secret in &self.0 {
            let mut mac =
                HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
            mac.update(body);
            matched |= mac.verify_slice(&expected).is_ok();
        }
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// `sha256=<hex>` for `body` under `secret`: what GitHub sends. Used by the demo
/// and tests to sign real payloads.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // An HMAC key may have any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" docs.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn any_configured_secret_verifies() {
        let s = Secrets::new(vec![b"old".to_vec(), b"new".to_vec()]).unwrap();
        for key in [&b"old"[..], b"new"] {
            let sig = sign(key, b"body");
            assert_eq!(s.verify(Some(sig.as_bytes()), b"body"), Ok(()));
        }
        let forged = sign(b"other", b"body");
        assert_eq!(
            s.verify(Some(forged.as_bytes()), b"body"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_and_missing_headers_are_refused() {
        let s = Secrets::new(vec![b"k".to_vec()]).unwrap();
        assert_eq!(s.verify(None, b""), Err(SignatureError::Missing));
        for bad in [&b"sha1=00"[..], b"sha256=zz", b"sha256=abcd"] {
            assert_eq!(s.verify(Some(bad), b""), Err(SignatureError::Malformed));
        }
    }

    #[test]
    fn no_secret_is_an_error() {
        assert!(matches!(
            Secrets::load(Some(""), None),
            Err(SecretsError::None)
        ));
    }

    #[test]
    fn file_holds_one_secret_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "first\n\nsecond\n").unwrap();
        let s = Secrets::load(None, Some(&path)).unwrap();
        let sig = sign(b"second", b"x");
        assert_eq!(s.verify(Some(sig.as_bytes()), b"x"), Ok(()));
    }
}

//! Signed state-repo commits: issueops signs every commit it makes with its
//! own SSH key (SSHSIG, namespace `git`: what `git commit -S` with
//! `gpg.format = ssh` writes, and what git and GitHub verify), and the
//! reconciler applies a commit only when it is signed by a trusted key:
//! issueops's own or a configured reviewer's.
//!
//! Invariant: nothing here reads or logs a private key's bytes beyond
//! parsing it; errors name the file, never its content.

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use std::path::Path;

/// The SSHSIG namespace git uses for commits.
const NAMESPACE: &str = "git";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read the signing key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the signing key {path} is not an unencrypted OpenSSH private key: {reason}")]
    Parse { path: String, reason: String },
    #[error("a trusted key is not an OpenSSH public key ({shown}): {reason}")]
    PublicKey { shown: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// issueops's own key.
pub struct Signer {
    key: PrivateKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public", &self.public_openssh())
            .finish()
    }
}

impl Signer {
    /// Reads an OpenSSH private key (`ssh-keygen -t ed25519 -N ''`).
    pub fn from_file(path: &Path) -> Result<Self, SigningError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SigningError::Read {
            path: shown.clone(),
            source,
        })?;
        let key = PrivateKey::from_openssh(text.trim()).map_err(|e| SigningError::Parse {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if key.is_encrypted() {
            return Err(SigningError::Parse {
                path: shown,
                reason: "it is encrypted; issueops signs unattended".into(),
            });
        }
        Ok(Self { key })
    }

    /// The armored SSH signature of `data` (a commit's content).
    pub fn sign(&self, data: &[u8]) -> Result<String, SigningError> {
        let sig = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, data)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        sig.to_pem(LineEnding::LF)
            .map_err(|e| SigningError::Sign(e.to_string()))
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// `ssh-ed25519 AAAA...`: for `review.trusted_keys` elsewhere, and for
    /// git's allowed-signers file.
    pub fn public_openssh(&self) -> String {
        self.key
            .public_key()
            .to_openssh()
            .unwrap_or_else(|e| format!("(unprintable key: {e})"))
    }
}

/// The keys whose signatures make a commit trusted, each with a name people
/// read (`issueops`, or the key's comment).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, PublicKey)>,
}

/// Why a commit is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    Unsigned,
    /// Signed, but not in SSH format (say GPG), which issueops does not check.
    NotSsh,
    /// Signed by a key that is not trusted (its SHA-256 fingerprint).
    UnknownKey(String),
    /// The signature does not match the commit (altered after signing).
    Invalid(String),
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untrusted::Unsigned => f.write_str("it is not signed"),
            Untrusted::NotSsh => f.write_str("its signature is not an SSH signature"),
            Untrusted::UnknownKey(fp) => {
                write!(f, "it is signed by {fp}, which is not a trusted key")
            }
            Untrusted::Invalid(why) => write!(f, "its signature does not verify: {why}"),
        }
    }
}

impl TrustedKeys {
    /// issueops's own key (when it signs) and the reviewers' keys, OpenSSH
    /// public keys (`ssh-ed25519 AAAA... comment`).
    pub fn new(own: Option<&Signer>, reviewers: &[String]) -> Result<Self, SigningError> {
        let mut keys = Vec::new();
        if let Some(own) = own {
            keys.push(("issueops".to_string(), own.public_key().clone()));
        }
        for line in reviewers {
            let key =
                PublicKey::from_openssh(line.trim()).map_err(|e| SigningError::PublicKey {
                    shown: line.chars().take(40).collect(),
                    reason: e.to_string(),
                })?;
            let name = match key.comment() {
                "" => key.fingerprint(HashAlg::Sha256).to_string(),
                comment => comment.to_string(),
            };
            keys.push((name, key));
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who signed `data` with `signature` (a commit's `gpgsig` header), or
    /// why nobody trusted did.
    pub fn signer_of(&self, data: &[u8], signature: Option<&str>) -> Result<&str, Untrusted> {
        let Some(signature) = signature else {
            return Err(Untrusted::Unsigned);
        };
        if !signature
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            return Err(Untrusted::NotSsh);
        }
        let sig =
            SshSig::from_pem(signature.trim()).map_err(|e| Untrusted::Invalid(e.to_string()))?;
        let Some((name, key)) = self
            .keys
            .iter()
            .find(|(_, k)| k.key_data() == sig.public_key())
        else {
            return Err(Untrusted::UnknownKey(
                ssh_key::Fingerprint::new(HashAlg::Sha256, sig.public_key()).to_string(),
            ));
        };
        key.verify(NAMESPACE, data, &sig)
            .map_err(|e| Untrusted::Invalid(e.to_string()))?;
        Ok(name)
    }
}

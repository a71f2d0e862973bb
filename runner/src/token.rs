//! The GitHub token, read from the mounted Secret file before every git or
//! GitHub call, so a token the reconciler refreshed mid-run is picked up.
//!
//! Invariants: the token is never in argv, an environment variable the agent
//! sees, a log line, `Debug` output, `.git/config` or a remote URL.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no GitHub token at {path}: {source}. Agent runs need issueops to run as a GitHub App \
         (ISSUEOPS_GITHUB_APP_ID, ISSUEOPS_GITHUB_APP_KEY_FILE), which writes the token Secret"
    )]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("the GitHub token file {0} is empty")]
    Empty(String),
}

/// The file; cheap to clone, holds no token.
#[derive(Debug, Clone)]
pub struct TokenFile(PathBuf);

/// A token as read once. `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl TokenFile {
    pub fn new(path: &Path) -> Self {
        Self(path.to_path_buf())
    }

    /// Reads the current token.
    pub fn read(&self) -> Result<Token, TokenError> {
        let shown = self.0.display().to_string();
        let text = std::fs::read_to_string(&self.0).map_err(|source| TokenError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty(shown));
        }
        Ok(Token(token.to_string()))
    }

    /// `text` with every occurrence of the current token replaced, for
    /// anything that leaves the runner (log tails, reasons).
    pub fn redact(&self, text: &str) -> String {
        match self.read() {
            Ok(t) if t.0.len() >= 8 => text.replace(&t.0, "***"),
            _ => text.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_each_time_and_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "ghs_first_token_value\n").unwrap();
        let file = TokenFile::new(&path);
        assert_eq!(file.read().unwrap().secret(), "ghs_first_token_value");
        std::fs::write(&path, "ghs_second_token_value").unwrap();
        let t = file.read().unwrap();
        assert_eq!(t.secret(), "ghs_second_token_value");
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert_eq!(file.redact("x ghs_second_token_value y"), "x *** y");
    }

    #[test]
    fn a_missing_file_says_what_to_configure() {
        let err = TokenFile::new(Path::new("/nonexistent/token"))
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("GitHub App"), "{err}");
    }
}

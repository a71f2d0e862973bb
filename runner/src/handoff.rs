//! What one step of the run leaves for the next. The pod's steps are
//! separate containers (`clone`, `agent`, `publish`), so they talk through
//! files, and who can write a file decides how far it is trusted:
//!
//! - [`Handoff`]: from `clone` to `publish`, in a volume only those two
//!   mount. The agent cannot change it: where the run started, which branch
//!   is pushed, which pull request is updated.
//! - [`AgentNotes`]: from the `agent` step to `publish`, in the workspace,
//!   which the agent can write. A claim, read bounded and used only for what
//!   a lie cannot hurt (whether a session was resumed).
//! - the commit message and the prompt: from `clone` to `agent`, in the
//!   workspace, read before the agent starts.

use crate::forge::PullRequest;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;

/// The handoff file's name in the handoff volume.
pub const HANDOFF_FILE: &str = "run.json";
/// The agent step's notes, in the workspace.
pub const AGENT_NOTES_FILE: &str = "agent-notes.json";
/// The commit message `clone` prepares for the agent step, in the workspace.
pub const COMMIT_MESSAGE_FILE: &str = "commit-message.txt";
/// The most bytes read of a file another step wrote.
const MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The commit the run started from: what is pushed must descend from it.
    pub start: String,
    /// The branch pushed (the pull request's head for a revise run).
    pub branch: String,
    /// The repository's default branch, the base of a new pull request.
    pub base_branch: String,
    /// The pull request a revise run updates.
    pub pull: Option<PullRequest>,
    pub issue_title: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNotes {
    /// Whether the agent's home held a session from an earlier run.
    pub resumed_session: bool,
}

pub fn write<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Reads a JSON document another step wrote: no more than 64 KiB, a regular
/// file (not a link the agent pointed somewhere else).
pub fn read<T: DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() || meta.len() > MAX_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file of at most 64 KiB",
        ));
    }
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_or_a_huge_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let notes = AgentNotes {
            resumed_session: true,
        };
        let good = dir.path().join("good.json");
        write(&good, &notes).unwrap();
        assert_eq!(read::<AgentNotes>(&good).unwrap(), notes);
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(read::<AgentNotes>(&link).is_err());
        let huge = dir.path().join("huge.json");
        std::fs::write(&huge, vec![b' '; 70 * 1024]).unwrap();
        assert!(read::<AgentNotes>(&huge).is_err());
    }
}

//! Where an issue's files live: `issues/<bucket>/<namespace>/`.
//!
//! One folder per issue, named after its namespace (the folder = namespace
//! rule the reconciler checks), grouped into 256 buckets named by the first
//! two hex digits of the hash every issue namespace ends with
//! (`issues/3f/codertocat-hello-world-1-3fa9c01b2e/`). A reviewer reads the
//! bucket off the folder name; a commit rewrites the root, `issues/` (at most
//! 256 entries), one bucket (about n/256 entries) and the issue's own folder,
//! instead of an `issues/` tree with an entry per issue: at 10,000 issues each
//! commit wrote and hashed a 500 KB tree, and each reconcile diffed it.
//!
//! The first layout (`issues/<namespace>/`) is still read, so a reconciler
//! never refuses a commit made before [`StateRepo::migrate_layout`] moved the
//! folders (one commit; the objects' blobs are unchanged, so nothing is
//! re-applied).

use super::*;
use crate::naming::is_issue_namespace;

/// The folder holding every issue's folder.
pub const ISSUES: &str = "issues";

/// The layout before buckets, still read: `issues/<namespace>/`.
pub const LEGACY_LAYOUT: &str = "issues/<namespace>/";

/// Why a path is not inside an issue's folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("files live under issues/<bucket>/<namespace>/ (bucket: the first two hex digits of the namespace's hash)")]
    NotInAnIssueFolder,
    #[error("{folder:?} is not an issue namespace name issueops gives")]
    NotAnIssueNamespace { folder: String },
    #[error("{namespace:?} belongs in bucket {expected:?}, not {found:?}")]
    WrongBucket {
        namespace: String,
        expected: String,
        found: String,
    },
}

/// The bucket of `namespace`: the first two hex digits of the hash an issue
/// namespace ends with; of any other name, those of its SHA-256 (issueops
/// makes no such folders, but the function stays total).
pub fn bucket(namespace: &str) -> String {
    if is_issue_namespace(namespace) {
        let hash = namespace.rsplit('-').next().unwrap_or_default();
        hash[..2].to_string()
    } else {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(namespace.as_bytes())[..1])
    }
}

fn is_bucket(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `issues/<bucket>/<namespace>`: the folder of one issue.
pub fn issue_dir(namespace: &str) -> String {
    format!("{ISSUES}/{}/{namespace}", bucket(namespace))
}

/// `issues/<bucket>/<namespace>/runs/<run id>`: the folder of one run.
pub fn run_dir(namespace: &str, run_id: &str) -> String {
    format!("{}/runs/{run_id}", issue_dir(namespace))
}

/// The namespace whose folder holds the file at `path`: in
/// `issues/<bucket>/<namespace>/…` with the namespace's own bucket, or in
/// the legacy `issues/<namespace>/…`.
pub fn namespace_of(path: &str) -> Result<&str, LayoutError> {
    let mut parts = path
        .strip_prefix(ISSUES)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or(LayoutError::NotInAnIssueFolder)?
        .split('/');
    let first = parts.next().unwrap_or_default();
    let (folder, found_bucket) = if is_bucket(first) {
        (parts.next().unwrap_or_default(), Some(first))
    } else {
        (first, None)
    };
    // A file directly in issues/ or in a bucket is in no issue's folder.
    if folder.is_empty() || parts.next().is_none() {
        return Err(LayoutError::NotInAnIssueFolder);
    }
    if !is_issue_namespace(folder) {
        return Err(LayoutError::NotAnIssueNamespace {
            folder: folder.to_string(),
        });
    }
    if let Some(found) = found_bucket {
        let expected = bucket(folder);
        if found != expected {
            return Err(LayoutError::WrongBucket {
                namespace: folder.to_string(),
                expected,
                found: found.to_string(),
            });
        }
    }
    Ok(folder)
}

impl StateRepo {
    /// The moves that bring the tip into the bucket layout: each legacy
    /// `issues/<namespace>` folder to `issues/<bucket>/<namespace>`. Empty
    /// when there is nothing to move (a new repo, or one already moved).
    /// Reads one tree (`issues/`), not the folders.
    pub fn layout_moves(&self) -> Result<Vec<Change>, StateRepoError> {
        let Some(tip) = self.head()? else {
            return Ok(Vec::new());
        };
        let repo = self.open()?;
        let root = self.find_tree(&repo, &tip)?;
        let Some(entry) = root.get_name(ISSUES) else {
            return Ok(Vec::new());
        };
        let issues = repo
            .find_tree(entry.id())
            .map_err(self.err("reading issues/"))?;
        let moves = issues
            .iter()
            .filter(|e| e.kind() == Some(ObjectType::Tree))
            .filter_map(|e| e.name().map(str::to_string))
            .filter(|name| is_issue_namespace(name))
            .map(|namespace| Change::Move {
                from: format!("{ISSUES}/{namespace}"),
                to: issue_dir(&namespace),
            })
            .collect();
        Ok(moves)
    }
}

//! The git state repo: the single source of desired state.
//!
//! A local bare repository by default; with a remote URL, a bare cache under the
//! data dir that is fetched before every commit and pushed after it. A commit is
//! built from the tip it is based on plus an intent (files to write, folders to
//! remove), so a push rejected because someone else moved the branch is redone
//! on the new tip: the intent is neither lost nor applied twice.
//!
//! Only the changed paths of the tree are rewritten: untouched subtrees keep
//! their object ids, so the cost of a commit does not grow with the repo.
//! Calls are blocking (libgit2); async callers use `spawn_blocking`.

mod history;
mod layout;
mod proposal;
mod read;
mod remote;
mod write;

pub use layout::{bucket, issue_dir, namespace_of, run_dir, LayoutError, ISSUES, LEGACY_LAYOUT};
pub use proposal::proposal_branch;

/// A git object id: commits, and the blob ids that digest state-repo files.
pub use git2::Oid;
use git2::{
    Commit, Cred, ErrorCode, FetchOptions, ObjectType, PushOptions, RemoteCallbacks, Repository,
    Signature, Tree,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_PUSH_ATTEMPTS: usize = 8;
const REMOTE_NAME: &str = "origin";

#[derive(Debug, thiserror::Error)]
pub enum StateRepoError {
    #[error("state repo {path}: {context}: {source}")]
    Git {
        path: String,
        context: &'static str,
        source: git2::Error,
    },
    #[error("state repo path {0:?} is not valid: paths are relative, '/'-separated, without '.' or '..'")]
    BadPath(String),
    #[error("push to {url} was rejected {attempts} times in a row; last reason: {reason}")]
    PushRejected {
        url: String,
        attempts: usize,
        reason: String,
    },
    #[error("commit {0} is not in the state repo")]
    UnknownCommit(String),
    #[error("{0}")]
    Refused(String),
}

/// One change of an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or replace a file.
    Write { path: String, content: Vec<u8> },
    /// Remove a file or a whole folder (nothing happens if it is absent).
    Remove { path: String },
    /// Move a file or folder as it is at the tip, its objects unchanged
    /// (nothing happens if `from` is absent: a replay after the move).
    Move { from: String, to: String },
}

/// What to commit: the intent plus its message and trailers.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub subject: String,
    pub body: String,
    pub trailers: Vec<(String, String)>,
    pub changes: Vec<Change>,
}

impl CommitRequest {
    pub fn message(&self) -> String {
        // One line: a newline from user input (a reason) would forge trailers.
        let mut msg = self.subject.trim().replace(['\r', '\n'], " ");
        msg.push_str("\n\n");
        if !self.body.trim().is_empty() {
            msg.push_str(self.body.trim());
            msg.push_str("\n\n");
        }
        for (k, v) in &self.trailers {
            // A trailer value is one line; a newline from user input would forge trailers.
            let v = v.replace(['\r', '\n'], " ");
            msg.push_str(&format!("{k}: {v}\n"));
        }
        msg
    }
}

/// How a file differs between two commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileDelta {
    /// Added or modified: the new content; `added` when the old tree had no such file.
    Upsert {
        path: String,
        content: Vec<u8>,
        added: bool,
    },
    /// Deleted: the content it had, so the caller knows which object to remove.
    Deleted { path: String, content: Vec<u8> },
}

impl FileDelta {
    pub fn path(&self) -> &str {
        match self {
            FileDelta::Upsert { path, .. } | FileDelta::Deleted { path, .. } => path,
        }
    }
}

/// One commit of the branch's history: see [`StateRepo::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub sha: String,
    /// Commit time, seconds since the epoch.
    pub time: i64,
    pub summary: String,
    pub trailers: Vec<(String, String)>,
}

/// A commit as shown to people: message, trailers and the files it changed.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub sha: String,
    pub summary: String,
    pub trailers: Vec<(String, String)>,
    pub changed_files: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StateRepo {
    /// The bare repository: the state repo itself, or the cache of a remote.
    path: PathBuf,
    remote_url: Option<String>,
    branch: String,
    token: Option<String>,
    /// Signs every commit made here (`None`: commits are unsigned).
    signer: Option<std::sync::Arc<crate::signing::Signer>>,
}

/// A commit of a range that no trusted key signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedCommit {
    pub sha: String,
    pub summary: String,
    pub why: crate::signing::Untrusted,
}

impl StateRepo {
    /// Opens (creating when missing) a local bare state repo at `path`.
    pub fn local(path: &Path, branch: &str) -> Result<Self, StateRepoError> {
        let repo = Self {
            path: path.to_path_buf(),
            remote_url: None,
            branch: branch.to_string(),
            token: None,
            signer: None,
        };
        repo.init()?;
        Ok(repo)
    }

    /// Uses the remote `url`, cached in the bare repo at `cache`. `token`, when
    /// given, authenticates HTTPS as `x-access-token` (GitHub's convention).
    pub fn remote(
        url: &str,
        cache: &Path,
        branch: &str,
        token: Option<String>,
    ) -> Result<Self, StateRepoError> {
        if url.starts_with("ssh://") || url.starts_with("git@") {
            return Err(StateRepoError::Refused(format!(
                "state repo {}: SSH is not supported (issueops speaks git over HTTPS, git:// and file://); use the https:// URL with ISSUEOPS_STATE_REPO_TOKEN",
                crate::store::redact_url(url)
            )));
        }
        let repo = Self {
            path: cache.to_path_buf(),
            remote_url: Some(url.to_string()),
            branch: branch.to_string(),
            token,
            signer: None,
        };
        let git = repo.init()?;
        match git.find_remote(REMOTE_NAME) {
            Ok(_) => git.remote_set_url(REMOTE_NAME, url),
            Err(_) => git.remote(REMOTE_NAME, url).map(|_| ()),
        }
        .map_err(repo.err("configuring the remote"))?;
        Ok(repo)
    }

    /// Signs every commit this repo makes from now on with `signer`.
    pub fn with_signer(mut self, signer: std::sync::Arc<crate::signing::Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Whether commits made here are signed.
    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// Whether the branch lives on a remote (fetched before it is read).
    pub fn is_remote(&self) -> bool {
        self.remote_url.is_some()
    }

    /// Where people can find the state repo: the remote URL (any credential
    /// in it hidden) or the local path. Everything that logs, audits or
    /// reports the location goes through here.
    pub fn location(&self) -> String {
        match &self.remote_url {
            Some(url) => crate::store::redact_url(url),
            None => self.path.display().to_string(),
        }
    }

    fn err(&self, context: &'static str) -> impl FnOnce(git2::Error) -> StateRepoError + '_ {
        move |source| StateRepoError::Git {
            path: self.location(),
            context,
            source,
        }
    }

    fn init(&self) -> Result<Repository, StateRepoError> {
        match Repository::open_bare(&self.path) {
            Ok(r) => Ok(r),
            Err(_) => {
                let mut opts = git2::RepositoryInitOptions::new();
                opts.bare(true).initial_head(&self.branch);
                Repository::init_opts(&self.path, &opts).map_err(self.err("creating the repo"))
            }
        }
    }

    fn open(&self) -> Result<Repository, StateRepoError> {
        Repository::open_bare(&self.path).map_err(self.err("opening the repo"))
    }

    fn local_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    fn tracking_ref(&self) -> String {
        match self.remote_url {
            Some(_) => format!("refs/remotes/{REMOTE_NAME}/{}", self.branch),
            None => self.local_ref(),
        }
    }

    /// The commit desired state is read from (after a fetch for a remote).
    pub fn head(&self) -> Result<Option<String>, StateRepoError> {
        self.fetch()?;
        self.tip()
    }

    fn tip(&self) -> Result<Option<String>, StateRepoError> {
        let repo = self.open()?;
        let result = match repo.refname_to_id(&self.tracking_ref()) {
            Ok(oid) => Ok(Some(oid.to_string())),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.err("reading the branch tip")(e)),
        };
        result
    }

    fn find_tree<'r>(&self, repo: &'r Repository, sha: &str) -> Result<Tree<'r>, StateRepoError> {
        let oid = Oid::from_str(sha).map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        repo.find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|_| StateRepoError::UnknownCommit(sha.into()))
    }
}

/// The git blob id of `content`: what a state-repo file with this content is
/// stored as, and the digest the reconciler puts on what it applies.
pub fn blob_id(content: &[u8]) -> Oid {
    // Hashing cannot fail for a blob; the zero id would only ever mismatch.
    Oid::hash_object(git2::ObjectType::Blob, content).unwrap_or_else(|_| Oid::zero())
}

#[cfg(test)]
mod tests;

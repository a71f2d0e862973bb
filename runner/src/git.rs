//! The clone the agent works in: cloned over HTTPS with git2, the run's
//! branch checked out, the agent's changes committed and pushed.
//!
//! Invariants: credentials reach libgit2 only through the credentials
//! callback, read from the token file at that moment; the remote URL stored
//! in `.git/config` is the plain clone URL. Pushing is not done from here:
//! once the agent ran, the clone's configuration is the agent's (`publish`).

use crate::token::TokenFile;
use git2::{
    build::RepoBuilder, Cred, CredentialType, FetchOptions, IndexAddOption, RemoteCallbacks,
    Repository, Signature, StatusOptions,
};
use std::cell::Cell;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {action}: {message}")]
    Git { action: String, message: String },
    #[error("branch {0} does not exist on the remote; a revise run continues an existing branch")]
    NoBranch(String),
}

fn err(action: &str) -> impl Fn(git2::Error) -> GitError + '_ {
    move |e| GitError::Git {
        action: action.to_string(),
        message: e.message().to_string(),
    }
}

/// How many times one operation may ask for credentials before giving up
/// (libgit2 asks again after every 401; a wrong token must not loop).
const MAX_CREDENTIAL_ASKS: u32 = 3;

/// Callbacks that answer libgit2's credential requests from the token file.
fn callbacks<'a>(token: &'a TokenFile, asked: &'a Cell<u32>) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |_url, _user, allowed| {
        asked.set(asked.get() + 1);
        if asked.get() > MAX_CREDENTIAL_ASKS {
            return Err(git2::Error::from_str(
                "the remote refused the GitHub token (authentication failed)",
            ));
        }
        if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str(
                "the remote asks for a credential type other than a token",
            ));
        }
        let token = token
            .read()
            .map_err(|e| git2::Error::from_str(&e.to_string()))?;
        Cred::userpass_plaintext("x-access-token", token.secret())
    });
    cb
}

pub struct Workspace {
    repo: Repository,
}

impl Workspace {
    /// Clones `url` into `dir` (which must not exist or be empty).
    pub fn clone(url: &str, dir: &Path, token: &TokenFile) -> Result<Self, GitError> {
        let asked = Cell::new(0);
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(callbacks(token, &asked));
        let repo = RepoBuilder::new()
            .fetch_options(fetch)
            .clone(url, dir)
            .map_err(err("clone"))?;
        Ok(Self { repo })
    }

    /// Opens the clone at `dir` (the agent step's view of the workspace).
    pub fn open(dir: &Path) -> Result<Self, GitError> {
        let repo = Repository::open(dir).map_err(err("open the clone"))?;
        Ok(Self { repo })
    }

    fn remote_branch(&self, branch: &str) -> Option<git2::Oid> {
        self.repo
            .find_reference(&format!("refs/remotes/origin/{branch}"))
            .ok()
            .and_then(|r| r.target())
    }

    /// Checks out `branch`: the remote's when it exists (a later dev run
    /// continues it), else a new one from `base`.
    pub fn checkout_or_create(&self, branch: &str, base: &str) -> Result<(), GitError> {
        let start = match self.remote_branch(branch) {
            Some(oid) => oid,
            None => self
                .remote_branch(base)
                .ok_or_else(|| GitError::NoBranch(base.to_string()))?,
        };
        self.checkout_at(branch, start)
    }

    /// Checks out the remote's `branch`; an error when it does not exist.
    pub fn checkout_existing(&self, branch: &str) -> Result<(), GitError> {
        let oid = self
            .remote_branch(branch)
            .ok_or_else(|| GitError::NoBranch(branch.to_string()))?;
        self.checkout_at(branch, oid)
    }

    fn checkout_at(&self, branch: &str, oid: git2::Oid) -> Result<(), GitError> {
        let commit = self.repo.find_commit(oid).map_err(err("find commit"))?;
        self.repo
            .branch(branch, &commit, true)
            .map_err(err("create branch"))?;
        let refname = format!("refs/heads/{branch}");
        let tree = commit.as_object();
        self.repo
            .checkout_tree(tree, Some(git2::build::CheckoutBuilder::new().force()))
            .map_err(err("checkout"))?;
        self.repo.set_head(&refname).map_err(err("set HEAD"))?;
        Ok(())
    }

    pub fn head(&self) -> Result<git2::Oid, GitError> {
        self.repo
            .head()
            .map_err(err("read HEAD"))?
            .target()
            .ok_or_else(|| GitError::Git {
                action: "read HEAD".into(),
                message: "HEAD is not a commit".into(),
            })
    }

    /// Whether the work tree has changes (new files included, ignored ones not).
    pub fn is_dirty(&self) -> Result<bool, GitError> {
        let mut opts = StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false);
        let statuses = self.repo.statuses(Some(&mut opts)).map_err(err("status"))?;
        Ok(!statuses.is_empty())
    }

    /// Commits every change in the work tree on the current branch.
    pub fn commit_all(
        &self,
        message: &str,
        name: &str,
        email: &str,
    ) -> Result<git2::Oid, GitError> {
        let mut index = self.repo.index().map_err(err("index"))?;
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .map_err(err("add"))?;
        index.update_all(["*"], None).map_err(err("add"))?;
        index.write().map_err(err("write index"))?;
        let tree_id = index.write_tree().map_err(err("write tree"))?;
        let tree = self.repo.find_tree(tree_id).map_err(err("find tree"))?;
        let parent = self
            .repo
            .find_commit(self.head()?)
            .map_err(err("find HEAD"))?;
        let who = Signature::now(name, email).map_err(err("signature"))?;
        self.repo
            .commit(Some("HEAD"), &who, &who, message, &tree, &[&parent])
            .map_err(err("commit"))
    }
}

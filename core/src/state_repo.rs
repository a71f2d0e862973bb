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

/// Refuses a request with a path that is not a plain relative path.
fn check_paths(req: &CommitRequest) -> Result<(), StateRepoError> {
    for p in req.changes.iter().map(|c| match c {
        Change::Write { path, .. } | Change::Remove { path } => path,
    }) {
        split_path(p)?;
    }
    Ok(())
}

/// The branch of a proposal: `proposals/<name>`.
pub fn proposal_branch(name: &str) -> String {
    format!("proposals/{name}")
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

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        if let Some(token) = &self.token {
            cb.credentials(move |_, _, _| Cred::userpass_plaintext("x-access-token", token));
        }
        cb
    }

    /// Brings the remote's branch into the cache (no-op for a local repo).
    pub fn fetch(&self) -> Result<(), StateRepoError> {
        let Some(_) = &self.remote_url else {
            return Ok(());
        };
        let repo = self.open()?;
        let mut remote = repo
            .find_remote(REMOTE_NAME)
            .map_err(self.err("finding the remote"))?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        let refspec = format!(
            "+refs/heads/{0}:refs/remotes/{REMOTE_NAME}/{0}",
            self.branch
        );
        match remote.fetch(&[&refspec], Some(&mut opts), None) {
            Ok(()) => Ok(()),
            // An empty remote has no branch yet: nothing to fetch.
            Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(self.err("fetching")(e)),
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

    /// Commits the intent on top of the current tip. Returns `None` when the
    /// intent changes nothing (a replay of an intent already committed).
    pub fn commit(&self, req: &CommitRequest) -> Result<Option<String>, StateRepoError> {
        self.commit_with(req, None)
    }

    fn commit_with(
        &self,
        req: &CommitRequest,
        merged: Option<Oid>,
    ) -> Result<Option<String>, StateRepoError> {
        check_paths(req)?;
        let started = std::time::Instant::now();
        let made = match &self.remote_url {
            None => self.commit_local(req, merged),
            Some(url) => self.commit_remote(url, req, merged),
        };
        crate::metrics::duration("commit", started.elapsed());
        made
    }

    /// Commits `req` on the proposal branch `proposals/<name>`, which starts
    /// at the branch's tip when it is new (pushed, for a remote). Returns the
    /// proposal's tip: the existing one when `req` changes nothing (a replay).
    pub fn propose(&self, name: &str, req: &CommitRequest) -> Result<String, StateRepoError> {
        check_paths(req)?;
        self.fetch()?;
        let repo = self.open()?;
        let refname = format!("refs/heads/{}", proposal_branch(name));
        let existing = self.tip_commit(&repo, &refname)?;
        let base = match &existing {
            Some(c) => Some(c.clone()),
            None => self.tip_commit(&repo, &self.tracking_ref())?,
        };
        let Some(oid) = self.build_commit(&repo, base.as_ref(), req, None)? else {
            return match existing {
                Some(c) => Ok(c.id().to_string()),
                None => Err(StateRepoError::Refused(
                    "the proposal changes nothing in the state repo".into(),
                )),
            };
        };
        repo.reference(&refname, oid, true, "issueops proposal")
            .map_err(self.err("moving the proposal branch"))?;
        if self.remote_url.is_some() {
            self.push_ref(&repo, &refname, true).map_err(|reason| {
                StateRepoError::PushRejected {
                    url: self.location(),
                    attempts: 1,
                    reason,
                }
            })?;
        }
        Ok(oid.to_string())
    }

    /// The tip of `proposals/<name>`, if the branch exists (fetched first
    /// from a remote: another replica may have proposed it).
    pub fn proposal_tip(&self, name: &str) -> Result<Option<String>, StateRepoError> {
        let repo = self.open()?;
        let refname = format!("refs/heads/{}", proposal_branch(name));
        if self.remote_url.is_some() {
            let mut remote = repo
                .find_remote(REMOTE_NAME)
                .map_err(self.err("finding the remote"))?;
            let mut opts = FetchOptions::new();
            opts.remote_callbacks(self.callbacks());
            // Absent on the remote: the local ref (if any) decides.
            if let Err(e) = remote.fetch(&[&format!("+{refname}:{refname}")], Some(&mut opts), None)
            {
                tracing::debug!(error = %e, "proposal branch not fetched");
            }
        }
        let tip = self
            .tip_commit(&repo, &refname)?
            .map(|c| c.id().to_string());
        Ok(tip)
    }

    /// Merges the proposal `proposals/<name>` into the branch: a commit with
    /// two parents (the branch's tip and the proposal's tip) whose tree is
    /// the tip's with the proposal's changes on top. `None` when the branch
    /// has them already (a replay).
    pub fn merge_proposal(
        &self,
        name: &str,
        req_without_changes: &CommitRequest,
    ) -> Result<Option<String>, StateRepoError> {
        let tip = self
            .proposal_tip(name)?
            .ok_or_else(|| StateRepoError::UnknownCommit(proposal_branch(name)))?;
        let (changes, tip_oid) = {
            let repo = self.open()?;
            let oid = Oid::from_str(&tip).map_err(self.err("reading the proposal"))?;
            let commit = repo
                .find_commit(oid)
                .map_err(self.err("reading the proposal"))?;
            let parent = commit.parent_ids().next().map(|p| p.to_string());
            let changes = self
                .diff(parent.as_deref(), &tip)?
                .into_iter()
                .map(|d| match d {
                    FileDelta::Upsert { path, content, .. } => Change::Write { path, content },
                    FileDelta::Deleted { path, .. } => Change::Remove { path },
                })
                .collect();
            (changes, oid)
        };
        let req = CommitRequest {
            changes,
            ..req_without_changes.clone()
        };
        self.commit_with(&req, Some(tip_oid))
    }

    /// The first parent of `sha` (`None` for a root commit).
    pub fn first_parent(&self, sha: &str) -> Result<Option<String>, StateRepoError> {
        let repo = self.open()?;
        let oid = Oid::from_str(sha).map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        let commit = repo
            .find_commit(oid)
            .map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        let parent = commit.parent_ids().next().map(|p| p.to_string());
        Ok(parent)
    }

    /// The commits of `(from, to]` that no key of `trusted` signed, oldest
    /// first (`from` `None`: all of `to`'s history).
    pub fn untrusted_commits(
        &self,
        from: Option<&str>,
        to: &str,
        trusted: &crate::signing::TrustedKeys,
    ) -> Result<Vec<UntrustedCommit>, StateRepoError> {
        let repo = self.open()?;
        let oid = |s: &str| Oid::from_str(s).map_err(|_| StateRepoError::UnknownCommit(s.into()));
        let mut walk = repo.revwalk().map_err(self.err("walking history"))?;
        walk.push(oid(to)?).map_err(self.err("walking history"))?;
        if let Some(from) = from {
            // A last-applied commit the branch no longer has hides nothing.
            if let Ok(from) = oid(from) {
                if repo.find_commit(from).is_ok() {
                    walk.hide(from).map_err(self.err("walking history"))?;
                }
            }
        }
        let mut out = Vec::new();
        for id in walk {
            let id = id.map_err(self.err("walking history"))?;
            let signed = match repo.extract_signature(&id, None) {
                Ok((sig, data)) => {
                    Some((sig.as_str().unwrap_or_default().to_string(), data.to_vec()))
                }
                Err(e) if e.code() == ErrorCode::NotFound => None,
                Err(e) => return Err(self.err("reading a commit's signature")(e)),
            };
            let verdict = match &signed {
                Some((sig, data)) => trusted.signer_of(data, Some(sig)).map(|_| ()),
                None => Err(crate::signing::Untrusted::Unsigned),
            };
            if let Err(why) = verdict {
                let commit = repo.find_commit(id).map_err(self.err("reading history"))?;
                out.push(UntrustedCommit {
                    sha: id.to_string(),
                    summary: commit.summary().unwrap_or_default().to_string(),
                    why,
                });
            }
        }
        out.reverse();
        Ok(out)
    }

    fn commit_local(
        &self,
        req: &CommitRequest,
        merged: Option<Oid>,
    ) -> Result<Option<String>, StateRepoError> {
        let repo = self.open()?;
        loop {
            let base = self.tip_commit(&repo, &self.local_ref())?;
            let Some(oid) = self.build_commit(&repo, base.as_ref(), req, merged)? else {
                return Ok(None);
            };
            let new = repo
                .find_commit(oid)
                .map_err(self.err("reading the new commit"))?;
            // Compare-and-swap on the branch: if another writer moved it since we
            // read `base`, rebuild the intent on the new tip.
            let updated = match &base {
                Some(b) => repo.reference_matching(
                    &self.local_ref(),
                    new.id(),
                    true,
                    b.id(),
                    "issueops commit",
                ),
                None => repo.reference(&self.local_ref(), new.id(), false, "issueops commit"),
            };
            match updated {
                Ok(_) => return Ok(Some(oid.to_string())),
                Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists) => continue,
                Err(e) => return Err(self.err("moving the branch")(e)),
            }
        }
    }

    fn commit_remote(
        &self,
        url: &str,
        req: &CommitRequest,
        merged: Option<Oid>,
    ) -> Result<Option<String>, StateRepoError> {
        let repo = self.open()?;
        let mut last_reason = String::new();
        for attempt in 1..=MAX_PUSH_ATTEMPTS {
            self.fetch()?;
            let base = self.tip_commit(&repo, &self.tracking_ref())?;
            let Some(oid) = self.build_commit(&repo, base.as_ref(), req, merged)? else {
                return Ok(None);
            };
            repo.reference(&self.local_ref(), oid, true, "issueops commit")
                .map_err(self.err("moving the local branch"))?;
            match self.push(&repo) {
                Ok(()) => {
                    repo.reference(&self.tracking_ref(), oid, true, "issueops push")
                        .map_err(self.err("recording the pushed tip"))?;
                    return Ok(Some(oid.to_string()));
                }
                Err(reason) => {
                    tracing::warn!(attempt, %reason, "state repo push rejected; refetching and retrying");
                    last_reason = reason;
                    std::thread::sleep(std::time::Duration::from_millis(50 * attempt as u64));
                }
            }
        }
        Err(StateRepoError::PushRejected {
            url: crate::store::redact_url(url),
            attempts: MAX_PUSH_ATTEMPTS,
            reason: last_reason,
        })
    }

    /// Pushes the local branch; `Err` carries the reason a push did not land.
    fn push(&self, repo: &Repository) -> Result<(), String> {
        self.push_ref(repo, &self.local_ref(), false)
    }

    /// Pushes `refname` to the same name on the remote (`force`: even when
    /// it is not a fast-forward).
    fn push_ref(&self, repo: &Repository, refname: &str, force: bool) -> Result<(), String> {
        let mut remote = repo.find_remote(REMOTE_NAME).map_err(|e| e.to_string())?;
        let rejected = std::cell::RefCell::new(None::<String>);
        let mut cb = self.callbacks();
        cb.push_update_reference(|refname, status| {
            if let Some(msg) = status {
                *rejected.borrow_mut() = Some(format!("{refname}: {msg}"));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let spec = format!("{}{refname}:{refname}", if force { "+" } else { "" });
        remote
            .push(&[&spec], Some(&mut opts))
            .map_err(|e| e.message().to_string())?;
        drop(opts);
        match rejected.into_inner() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn tip_commit<'r>(
        &self,
        repo: &'r Repository,
        refname: &str,
    ) -> Result<Option<Commit<'r>>, StateRepoError> {
        match repo.refname_to_id(refname) {
            Ok(oid) => Ok(Some(
                repo.find_commit(oid)
                    .map_err(self.err("reading the tip commit"))?,
            )),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.err("reading the branch")(e)),
        }
    }

    fn build_commit(
        &self,
        repo: &Repository,
        base: Option<&Commit<'_>>,
        req: &CommitRequest,
        merged: Option<Oid>,
    ) -> Result<Option<Oid>, StateRepoError> {
        let base_tree = base
            .map(|c| c.tree())
            .transpose()
            .map_err(self.err("reading the base tree"))?;
        let mut ops: Vec<(Vec<&str>, Option<&[u8]>)> = Vec::new();
        for change in &req.changes {
            match change {
                Change::Write { path, content } => ops.push((split_path(path)?, Some(content))),
                Change::Remove { path } => ops.push((split_path(path)?, None)),
            }
        }
        let new_tree =
            build_tree(repo, base_tree.as_ref(), &ops).map_err(self.err("writing the tree"))?;
        let new_tree_id = match new_tree {
            Some(id) => id,
            None => repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .map_err(self.err("writing an empty tree"))?,
        };
        if base_tree.as_ref().map(|t| t.id()) == Some(new_tree_id)
            || (base.is_none() && new_tree.is_none())
        {
            return Ok(None);
        }
        let tree = repo
            .find_tree(new_tree_id)
            .map_err(self.err("reading the new tree"))?;
        let sig = Signature::now("issueops", "issueops@localhost")
            .map_err(self.err("making the signature"))?;
        let merged = merged
            .map(|m| repo.find_commit(m))
            .transpose()
            .map_err(self.err("reading the merged commit"))?;
        let parents: Vec<&Commit<'_>> = base.into_iter().chain(merged.as_ref()).collect();
        let Some(signer) = &self.signer else {
            let oid = repo
                .commit(None, &sig, &sig, &req.message(), &tree, &parents)
                .map_err(self.err("writing the commit"))?;
            return Ok(Some(oid));
        };
        let content = repo
            .commit_create_buffer(&sig, &sig, &req.message(), &tree, &parents)
            .map_err(self.err("writing the commit"))?;
        let content = content.as_str().ok_or_else(|| {
            StateRepoError::Refused("a commit message that is not UTF-8 cannot be signed".into())
        })?;
        let signature = signer
            .sign(content.as_bytes())
            .map_err(|e| StateRepoError::Refused(e.to_string()))?;
        let oid = repo
            .commit_signed(content, &signature, None)
            .map_err(self.err("writing the signed commit"))?;
        Ok(Some(oid))
    }

    fn find_tree<'r>(&self, repo: &'r Repository, sha: &str) -> Result<Tree<'r>, StateRepoError> {
        let oid = Oid::from_str(sha).map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        repo.find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|_| StateRepoError::UnknownCommit(sha.into()))
    }

    /// Files that differ between `from` (or the empty tree) and `to`.
    ///
    /// Walks both trees together and skips every subtree whose object id is the
    /// same on both sides, so the cost follows what changed, not the size of the
    /// repo (libgit2's tree diff visits every file).
    pub fn diff(&self, from: Option<&str>, to: &str) -> Result<Vec<FileDelta>, StateRepoError> {
        let repo = self.open()?;
        let old = from.map(|f| self.find_tree(&repo, f)).transpose()?;
        let new = self.find_tree(&repo, to)?;
        let mut out = Vec::new();
        diff_trees(&repo, old.as_ref(), Some(&new), "", &mut out)
            .map_err(self.err("diffing trees"))?;
        Ok(out)
    }

    /// The unified diff a commit made to its first parent (for people: the
    /// YAML a reviewer would read). Capped at `max_bytes`, with a note.
    pub fn patch(&self, sha: &str, max_bytes: usize) -> Result<String, StateRepoError> {
        let repo = self.open()?;
        let oid = Oid::from_str(sha).map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        let commit = repo
            .find_commit(oid)
            .map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        let new = commit.tree().map_err(self.err("reading a commit's tree"))?;
        let old = match commit.parent(0) {
            Ok(p) => Some(p.tree().map_err(self.err("reading a parent's tree"))?),
            Err(_) => None,
        };
        let diff = repo
            .diff_tree_to_tree(old.as_ref(), Some(&new), None)
            .map_err(self.err("diffing a commit"))?;
        let mut out = String::new();
        let mut truncated = false;
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            if out.len() >= max_bytes {
                truncated = true;
                return false;
            }
            if matches!(line.origin(), '+' | '-' | ' ') {
                out.push(line.origin());
            }
            out.push_str(&String::from_utf8_lossy(line.content()));
            true
        })
        .or_else(|e| if truncated { Ok(()) } else { Err(e) })
        .map_err(self.err("printing a diff"))?;
        if truncated {
            out.push_str("\n… diff cut here; see the full commit in the state repo\n");
        }
        Ok(out)
    }

    /// The full sha of `rev` (a full or abbreviated sha, or a ref name).
    pub fn resolve(&self, rev: &str) -> Result<String, StateRepoError> {
        self.fetch()?;
        let repo = self.open()?;
        repo.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id().to_string())
            .map_err(|_| StateRepoError::UnknownCommit(rev.into()))
    }

    /// Whether `path` (file or folder) exists at the tip.
    pub fn path_exists(&self, path: &str) -> Result<bool, StateRepoError> {
        let Some(tip) = self.tip()? else {
            return Ok(false);
        };
        let repo = self.open()?;
        let tree = self.find_tree(&repo, &tip)?;
        let exists = tree.get_path(std::path::Path::new(path)).is_ok();
        Ok(exists)
    }

    /// Whether any file at `sha` satisfies `wanted` (stops at the first).
    pub fn any_file(
        &self,
        sha: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<bool, StateRepoError> {
        let repo = self.open()?;
        let tree = self.find_tree(&repo, sha)?;
        let mut found = false;
        let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let is_file = entry.kind() == Some(git2::ObjectType::Blob);
            if is_file && wanted(&format!("{dir}{}", entry.name().unwrap_or_default())) {
                found = true;
                git2::TreeWalkResult::Abort
            } else {
                git2::TreeWalkResult::Ok
            }
        });
        // An aborted walk reports an error; only a real one matters.
        match walked {
            Err(e) if !found => Err(self.err("walking a tree")(e)),
            _ => Ok(found),
        }
    }

    /// Every file at `sha` that satisfies `wanted`, with its blob id, without
    /// reading any file: the full resync compares these ids with the digests
    /// the cluster's objects carry, and reads only the files that differ.
    pub fn blob_index(
        &self,
        sha: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Oid)>, StateRepoError> {
        let repo = self.open()?;
        let tree = self.find_tree(&repo, sha)?;
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let path = format!("{dir}{}", entry.name().unwrap_or_default());
                if wanted(&path) {
                    out.push((path, entry.id()));
                }
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(self.err("walking a tree"))?;
        Ok(out)
    }

    /// The content of the blobs `ids`, in order, read with one repository handle.
    pub fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, StateRepoError> {
        let repo = self.open()?;
        ids.iter()
            .map(|id| {
                repo.find_blob(*id)
                    .map(|b| b.content().to_vec())
                    .map_err(self.err("reading a blob"))
            })
            .collect()
    }

    /// Every file at `sha`, by path.
    pub fn files_at(&self, sha: &str) -> Result<BTreeMap<String, Vec<u8>>, StateRepoError> {
        Ok(self
            .diff(None, sha)?
            .into_iter()
            .filter_map(|d| match d {
                FileDelta::Upsert { path, content, .. } => Some((path, content)),
                FileDelta::Deleted { .. } => None,
            })
            .collect())
    }

    /// A commit's summary, trailers and changed files.
    pub fn commit_info(&self, sha: &str) -> Result<CommitInfo, StateRepoError> {
        let repo = self.open()?;
        let oid = Oid::from_str(sha).map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        let commit = repo
            .find_commit(oid)
            .map_err(|_| StateRepoError::UnknownCommit(sha.into()))?;
        let message = commit.message().unwrap_or_default().to_string();
        let trailers = git2::message_trailers_strs(&message)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let parent = commit.parent_ids().next().map(|p| p.to_string());
        let changed_files = self
            .diff(parent.as_deref(), sha)?
            .iter()
            .map(|d| d.path().to_string())
            .collect();
        Ok(CommitInfo {
            sha: sha.to_string(),
            summary: commit.summary().unwrap_or_default().to_string(),
            trailers,
            changed_files,
        })
    }

    /// For each path in `paths`, the newest commit in `(from, to]` that changed
    /// it, with that commit's trailers: which intent (run, delivery, actor) an
    /// applied object comes from. Walks only the commits of the range. The
    /// commits come without `changed_files`: one commit that touched n files
    /// would otherwise be copied, with its list of n paths, to each of them
    /// (n² memory: 6.6 GB for a first apply of 1,000 runs).
    pub fn attribute(
        &self,
        from: Option<&str>,
        to: &str,
        paths: &[&str],
    ) -> Result<BTreeMap<String, CommitInfo>, StateRepoError> {
        let repo = self.open()?;
        let mut walk = repo.revwalk().map_err(self.err("walking history"))?;
        let oid = |s: &str| Oid::from_str(s).map_err(|_| StateRepoError::UnknownCommit(s.into()));
        walk.push(oid(to)?).map_err(self.err("walking history"))?;
        if let Some(from) = from {
            walk.hide(oid(from)?).map_err(self.err("walking history"))?;
        }
        let mut wanted: std::collections::BTreeSet<&str> = paths.iter().copied().collect();
        let mut out = BTreeMap::new();
        for commit_id in walk {
            if wanted.is_empty() {
                break;
            }
            let sha = commit_id.map_err(self.err("walking history"))?.to_string();
            let mut info = self.commit_info(&sha)?;
            let changed = std::mem::take(&mut info.changed_files);
            for path in changed {
                if wanted.remove(path.as_str()) {
                    out.insert(path, info.clone());
                }
            }
        }
        Ok(out)
    }

    /// The newest commit whose trailer `key` has `value`, if any. Walks history;
    /// used only when replaying an intent that was committed before a crash.
    pub fn find_commit_with_trailer(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Option<String>, StateRepoError> {
        let repo = self.open()?;
        for sha in self.log()? {
            let oid = Oid::from_str(&sha).map_err(self.err("reading history"))?;
            let commit = repo.find_commit(oid).map_err(self.err("reading history"))?;
            let message = commit.message().unwrap_or_default();
            if let Ok(trailers) = git2::message_trailers_strs(message) {
                if trailers.iter().any(|(k, v)| k == key && v == value) {
                    return Ok(Some(sha));
                }
            }
        }
        Ok(None)
    }

    /// Every commit on the branch, newest first, with its commit time
    /// (seconds) and trailers: what `issueops audit verify` holds the audit
    /// rows against.
    pub fn history(&self) -> Result<Vec<HistoryEntry>, StateRepoError> {
        let repo = self.open()?;
        self.log()?
            .into_iter()
            .map(|sha| {
                let oid = Oid::from_str(&sha).map_err(self.err("reading history"))?;
                let commit = repo.find_commit(oid).map_err(self.err("reading history"))?;
                let trailers = git2::message_trailers_strs(commit.message().unwrap_or_default())
                    .map(|t| {
                        t.iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(HistoryEntry {
                    time: commit.time().seconds(),
                    summary: commit.summary().unwrap_or_default().to_string(),
                    sha,
                    trailers,
                })
            })
            .collect()
    }

    /// Commits on the branch, newest first.
    pub fn log(&self) -> Result<Vec<String>, StateRepoError> {
        let repo = self.open()?;
        let Some(tip) = self.tip()? else {
            return Ok(Vec::new());
        };
        let mut walk = repo.revwalk().map_err(self.err("walking history"))?;
        walk.push(Oid::from_str(&tip).map_err(self.err("reading the tip"))?)
            .map_err(self.err("walking history"))?;
        walk.map(|o| o.map(|o| o.to_string()))
            .collect::<Result<_, _>>()
            .map_err(self.err("walking history"))
    }
}

/// Appends to `out` the files that differ between `old` and `new` under `prefix`.
fn diff_trees(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: Option<&Tree<'_>>,
    prefix: &str,
    out: &mut Vec<FileDelta>,
) -> Result<(), git2::Error> {
    let names: std::collections::BTreeSet<String> = old
        .into_iter()
        .chain(new)
        .flat_map(|t| {
            t.iter()
                .filter_map(|e| e.name().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let blob = |id: Oid| repo.find_blob(id).map(|b| b.content().to_vec());
    for name in names {
        let o = old.and_then(|t| t.get_name(&name));
        let n = new.and_then(|t| t.get_name(&name));
        if let (Some(o), Some(n)) = (&o, &n) {
            if o.id() == n.id() && o.kind() == n.kind() {
                continue;
            }
        }
        let path = format!("{prefix}{name}");
        let is = |e: &Option<git2::TreeEntry<'_>>, k: ObjectType| {
            e.as_ref().is_some_and(|e| e.kind() == Some(k))
        };
        let (o_blob, n_blob) = (is(&o, ObjectType::Blob), is(&n, ObjectType::Blob));
        if n_blob {
            let id = n.as_ref().map(|e| e.id()).unwrap_or_else(Oid::zero);
            out.push(FileDelta::Upsert {
                path: path.clone(),
                content: blob(id)?,
                added: !o_blob,
            });
        } else if o_blob {
            let id = o.as_ref().map(|e| e.id()).unwrap_or_else(Oid::zero);
            out.push(FileDelta::Deleted {
                path: path.clone(),
                content: blob(id)?,
            });
        }
        let subtree = |e: &Option<git2::TreeEntry<'_>>| -> Result<Option<Tree<'_>>, git2::Error> {
            match e {
                Some(e) if e.kind() == Some(ObjectType::Tree) => repo.find_tree(e.id()).map(Some),
                _ => Ok(None),
            }
        };
        let (o_tree, n_tree) = (subtree(&o)?, subtree(&n)?);
        if o_tree.is_some() || n_tree.is_some() {
            diff_trees(
                repo,
                o_tree.as_ref(),
                n_tree.as_ref(),
                &format!("{path}/"),
                out,
            )?;
        }
    }
    Ok(())
}

fn split_path(path: &str) -> Result<Vec<&str>, StateRepoError> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(StateRepoError::BadPath(path.to_string()));
    }
    Ok(parts)
}

type Op<'a> = (Vec<&'a str>, Option<&'a [u8]>);

/// Applies `ops` to `base`, touching only the subtrees they name. Returns
/// `None` when the result is an empty tree (git stores no empty folders).
fn build_tree(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    ops: &[Op<'_>],
) -> Result<Option<Oid>, git2::Error> {
    let mut builder = repo.treebuilder(base)?;
    // Group by first component, keeping the order of first appearance.
    let mut groups: BTreeMap<&str, Vec<Op<'_>>> = BTreeMap::new();
    for (parts, content) in ops {
        groups
            .entry(parts[0])
            .or_default()
            .push((parts[1..].to_vec(), *content));
    }
    for (name, sub_ops) in groups {
        // A later op wins over an earlier one on the same leaf; a removal of a
        // folder followed by writes inside it starts that folder afresh.
        let mut leaf: Option<Option<&[u8]>> = None;
        let mut deeper: Vec<Op<'_>> = Vec::new();
        for (rest, content) in sub_ops {
            if rest.is_empty() {
                leaf = Some(content);
                deeper.clear();
            } else {
                deeper.push((rest, content));
            }
        }
        if let Some(Some(content)) = leaf {
            if deeper.is_empty() {
                let blob = repo.blob(content)?;
                builder.insert(name, blob, 0o100644)?;
                continue;
            }
        }
        let existing_subtree = match (&leaf, builder.get(name)?) {
            (Some(_), _) => None,
            (None, Some(entry)) if entry.kind() == Some(ObjectType::Tree) => {
                Some(repo.find_tree(entry.id())?)
            }
            _ => None,
        };
        if deeper.is_empty() {
            if builder.get(name)?.is_some() {
                builder.remove(name)?;
            }
            continue;
        }
        match build_tree(repo, existing_subtree.as_ref(), &deeper)? {
            Some(id) => {
                builder.insert(name, id, 0o040000)?;
            }
            None => {
                if builder.get(name)?.is_some() {
                    builder.remove(name)?;
                }
            }
        }
    }
    if builder.is_empty() {
        return Ok(None);
    }
    builder.write().map(Some)
}

/// The git blob id of `content`: what a state-repo file with this content is
/// stored as, and the digest the reconciler puts on what it applies.
pub fn blob_id(content: &[u8]) -> Oid {
    // Hashing cannot fail for a blob; the zero id would only ever mismatch.
    Oid::hash_object(git2::ObjectType::Blob, content).unwrap_or_else(|_| Oid::zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &str, content: &str) -> Change {
        Change::Write {
            path: path.into(),
            content: content.as_bytes().to_vec(),
        }
    }

    fn req(changes: Vec<Change>) -> CommitRequest {
        CommitRequest {
            subject: "test\n\nForged-Too: yes".into(),
            body: String::new(),
            trailers: vec![("Run-Id".into(), "r1\nForged: yes".into())],
            changes,
        }
    }

    #[test]
    fn an_ssh_state_repo_is_refused_saying_what_to_use() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["ssh://git@github.com/o/r.git", "git@github.com:o/r.git"] {
            let err = StateRepo::remote(url, &dir.path().join("c"), "main", None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("SSH is not supported") && err.contains("https://"),
                "{err}"
            );
        }
    }

    #[test]
    fn commits_nested_files_and_replays_as_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
        assert_eq!(repo.head().unwrap(), None);
        let r = req(vec![write("a/b/c.yaml", "1"), write("a/d.yaml", "2")]);
        let first = repo.commit(&r).unwrap().unwrap();
        assert_eq!(repo.commit(&r).unwrap(), None);
        let files = repo.files_at(&first).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["a/b/c.yaml", "a/d.yaml"]);
        let info = repo.commit_info(&first).unwrap();
        assert_eq!(
            info.trailers,
            vec![("Run-Id".into(), "r1 Forged: yes".into())]
        );
        assert_eq!(
            info.summary, "test  Forged-Too: yes",
            "the subject stays one line"
        );
    }

    #[test]
    fn removal_drops_a_folder_and_diff_reports_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
        let a = repo
            .commit(&req(vec![
                write("x/1.yaml", "one"),
                write("y/2.yaml", "two"),
            ]))
            .unwrap()
            .unwrap();
        let b = repo
            .commit(&req(vec![Change::Remove { path: "x".into() }]))
            .unwrap()
            .unwrap();
        assert_eq!(
            repo.diff(Some(&a), &b).unwrap(),
            vec![FileDelta::Deleted {
                path: "x/1.yaml".into(),
                content: b"one".to_vec()
            }]
        );
        assert_eq!(repo.log().unwrap(), vec![b, a]);
    }

    #[test]
    fn diff_reports_adds_changes_deletes_and_type_changes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
        let a = repo
            .commit(&req(vec![
                write("same/f", "1"),
                write("edit/f", "1"),
                write("gone/f", "1"),
                write("x", "file"),
            ]))
            .unwrap()
            .unwrap();
        let b = repo
            .commit(&req(vec![
                write("edit/f", "2"),
                Change::Remove {
                    path: "gone".into(),
                },
                write("new/deep/f", "n"),
                Change::Remove { path: "x".into() },
                write("x/inner", "dir now"),
            ]))
            .unwrap()
            .unwrap();
        let mut d = repo.diff(Some(&a), &b).unwrap();
        d.sort_by(|l, r| l.path().cmp(r.path()));
        let summary: Vec<(String, bool)> = d
            .iter()
            .map(|x| (x.path().to_string(), matches!(x, FileDelta::Deleted { .. })))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("edit/f".into(), false),
                ("gone/f".into(), true),
                ("new/deep/f".into(), false),
                ("x".into(), true),
                ("x/inner".into(), false),
            ]
        );
    }

    #[test]
    fn untouched_subtrees_keep_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
        let a = repo
            .commit(&req(vec![write("keep/f", "k"), write("edit/f", "1")]))
            .unwrap()
            .unwrap();
        let b = repo
            .commit(&req(vec![write("edit/f", "2")]))
            .unwrap()
            .unwrap();
        let git = Repository::open_bare(dir.path().join("s.git")).unwrap();
        let id = |sha: &str| {
            let tree = git
                .find_commit(Oid::from_str(sha).unwrap())
                .unwrap()
                .tree()
                .unwrap();
            let keep = tree.get_name("keep").unwrap().id();
            keep
        };
        assert_eq!(id(&a), id(&b));
    }

    #[test]
    fn bad_paths_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
        for bad in ["../x", "a//b", "/abs", "a/./b"] {
            assert!(matches!(
                repo.commit(&req(vec![write(bad, "x")])),
                Err(StateRepoError::BadPath(_))
            ));
        }
        assert_eq!(repo.head().unwrap(), None);
    }
}

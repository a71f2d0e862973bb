//! Reading trees: diffs between commits, files and blob ids at a commit.

use super::*;

impl StateRepo {
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
}

/// Appends to `out` the files that differ between `old` and `new` under `prefix`.
pub(super) fn diff_trees(
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

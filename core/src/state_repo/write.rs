//! Building commits: an intent applied to the tip, rewriting only the subtrees it touches.

use super::*;

/// Refuses a request with a path that is not a plain relative path.
pub(super) fn check_paths(req: &CommitRequest) -> Result<(), StateRepoError> {
    for change in &req.changes {
        match change {
            Change::Write { path, .. } | Change::Remove { path } => split_path(path)?,
            Change::Move { from, to } => {
                split_path(from)?;
                split_path(to)?
            }
        };
    }
    Ok(())
}

impl StateRepo {
    /// Commits the intent on top of the current tip. Returns `None` when the
    /// intent changes nothing (a replay of an intent already committed).
    pub fn commit(&self, req: &CommitRequest) -> Result<Option<String>, StateRepoError> {
        self.commit_with(req, None)
    }

    pub(super) fn commit_with(
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

    pub(super) fn commit_local(
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

    pub(super) fn tip_commit<'r>(
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

    pub(super) fn build_commit(
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
        let mut ops: Vec<Op<'_>> = Vec::new();
        for change in &req.changes {
            match change {
                Change::Write { path, content } => {
                    ops.push((split_path(path)?, Leaf::Blob(content)))
                }
                Change::Remove { path } => ops.push((split_path(path)?, Leaf::Remove)),
                Change::Move { from, to } => {
                    let found = base_tree
                        .as_ref()
                        .and_then(|t| t.get_path(Path::new(from)).ok());
                    if let Some(entry) = found {
                        ops.push((split_path(from)?, Leaf::Remove));
                        ops.push((split_path(to)?, Leaf::Object(entry.id(), entry.filemode())));
                    }
                }
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

/// What a path becomes: a file with this content, an object that exists
/// already (a moved file or folder), or nothing.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Blob(&'a [u8]),
    Object(Oid, i32),
    Remove,
}

type Op<'a> = (Vec<&'a str>, Leaf<'a>);

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
        let mut leaf: Option<Leaf<'_>> = None;
        let mut deeper: Vec<Op<'_>> = Vec::new();
        for (rest, content) in sub_ops {
            if rest.is_empty() {
                leaf = Some(content);
                deeper.clear();
            } else {
                deeper.push((rest, content));
            }
        }
        if deeper.is_empty() {
            match leaf {
                Some(Leaf::Blob(content)) => {
                    let blob = repo.blob(content)?;
                    builder.insert(name, blob, 0o100644)?;
                    continue;
                }
                Some(Leaf::Object(id, mode)) => {
                    builder.insert(name, id, mode)?;
                    continue;
                }
                Some(Leaf::Remove) | None => {}
            }
        }
        let existing_subtree = match (&leaf, builder.get(name)?) {
            // A folder moved here, then written into: start from the moved one.
            (Some(Leaf::Object(id, 0o040000)), _) => Some(repo.find_tree(*id)?),
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

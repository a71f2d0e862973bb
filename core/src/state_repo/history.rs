//! Reading the branch's history: commits, trailers, signatures, attribution.

use super::*;

impl StateRepo {
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

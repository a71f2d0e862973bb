//! Proposals: changes waiting for review on `proposals/<name>` branches.

use super::write::check_paths;
use super::*;

/// The branch of a proposal: `proposals/<name>`.
pub fn proposal_branch(name: &str) -> String {
    format!("proposals/{name}")
}

impl StateRepo {
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
}

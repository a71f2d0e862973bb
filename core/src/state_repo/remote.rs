//! Talking to a remote state repo: fetch, and push with retry on a moved tip.

use super::*;

impl StateRepo {
    pub(super) fn callbacks(&self) -> RemoteCallbacks<'_> {
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

    pub(super) fn commit_remote(
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
    pub(super) fn push(&self, repo: &Repository) -> Result<(), String> {
        self.push_ref(repo, &self.local_ref(), false)
    }

    /// Pushes `refname` to the same name on the remote (`force`: even when
    /// it is not a fast-forward).
    pub(super) fn push_ref(
        &self,
        repo: &Repository,
        refname: &str,
        force: bool,
    ) -> Result<(), String> {
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
}

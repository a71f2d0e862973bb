//! Publishing the agent's work. Everything the agent can write is hostile
//! data: the worktree, and its `.git/` with it (`remote.origin.pushurl`,
//! `url.*.pushInsteadOf`, credential helpers, hooks, `includeIf` are one
//! `git config` away). So nothing of the clone's configuration is used:
//!
//! - the branch's commits are fetched, as objects only, into a fresh bare
//!   repository this runner makes outside the worktree, whose configuration
//!   is its own and empty;
//! - they must descend from the commit the run started from;
//! - the change must add no symbolic link that points outside the worktree
//!   and no more than `agent.max_push_bytes` of file content;
//! - the push goes to the URL of the run's spec, only
//!   `refs/heads/<branch>`, never forced; the token is given only to that
//!   URL's host (libgit2 asks again after a redirect).

use crate::token::TokenFile;
use git2::{Cred, CredentialType, Delta, FetchOptions, ObjectType, PushOptions, RemoteCallbacks};
use std::cell::{Cell, RefCell};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// What the agent left cannot be published, and why (for the result).
    #[error("not published: {0}")]
    Refused(String),
    #[error("git {action}: {message}")]
    Git { action: String, message: String },
    #[error("the remote refused the push of {branch}: {message}")]
    Rejected { branch: String, message: String },
}

fn err(action: &str) -> impl Fn(git2::Error) -> PublishError + '_ {
    move |e| PublishError::Git {
        action: action.to_string(),
        message: e.message().to_string(),
    }
}

/// What to publish, and where.
pub struct Publish<'a> {
    /// The clone the agent worked in.
    pub worktree: &'a Path,
    /// The branch holding the run's commits, pushed under the same name.
    pub branch: &'a str,
    /// The commit the run started from: what is pushed must descend from it.
    pub base: git2::Oid,
    /// The remote, from the run's spec.
    pub url: &'a str,
    pub token: &'a TokenFile,
    /// The most file content the change may add.
    pub max_bytes: u64,
    /// A folder the agent cannot write (not the workspace) for the bare repository.
    pub scratch: &'a Path,
}

/// The host (and port) of an `https://`/`http://` URL, lower case.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// No git configuration outside a repository is read from here on: the
/// runner's `$HOME` (and so `~/.gitconfig`, where `url.*.insteadOf` would
/// apply to every remote) is writable by the agent.
fn forget_global_config() -> Result<(), PublishError> {
    for level in [
        git2::ConfigLevel::System,
        git2::ConfigLevel::XDG,
        git2::ConfigLevel::Global,
        git2::ConfigLevel::ProgramData,
    ] {
        // SAFETY: libgit2's global options; the runner runs one publish at a
        // time and sets the same empty path on every call.
        unsafe { git2::opts::set_search_path(level, "") }.map_err(err("configure git"))?;
    }
    Ok(())
}

/// What [`publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The branch is where the run started: nothing to push.
    Unchanged(git2::Oid),
    Pushed(git2::Oid),
}

impl Published {
    pub fn head(self) -> git2::Oid {
        match self {
            Published::Unchanged(h) | Published::Pushed(h) => h,
        }
    }
}

/// Pushes the run's commits, when there are any.
pub fn publish(p: &Publish<'_>) -> Result<Published, PublishError> {
    forget_global_config()?;
    let bare = p.scratch.join("publish.git");
    if bare.exists() {
        std::fs::remove_dir_all(&bare).map_err(|e| PublishError::Git {
            action: "prepare".into(),
            message: e.to_string(),
        })?;
    }
    let fresh = git2::Repository::init_bare(&bare).map_err(err("init"))?;
    // Objects only, from a path: the worktree's configuration is not read
    // for anything but finding its objects.
    let local = format!("file://{}", p.worktree.display());
    let refspec = format!("+refs/heads/{0}:refs/heads/{0}", p.branch);
    fresh
        .remote_anonymous(&local)
        .and_then(|mut r| r.fetch(&[refspec.as_str()], Some(&mut FetchOptions::new()), None))
        .map_err(err("read the agent's commits"))?;
    let head = fresh
        .refname_to_id(&format!("refs/heads/{}", p.branch))
        .map_err(err("find the branch"))?;
    check(&fresh, p.base, head, p.max_bytes)?;
    if head == p.base {
        return Ok(Published::Unchanged(head));
    }

    let host = host_of(p.url).ok_or_else(|| {
        PublishError::Refused(format!("the remote {:?} is not an http(s) URL", p.url))
    })?;
    let asked = Cell::new(0);
    let refused: RefCell<Option<String>> = RefCell::new(None);
    let mut cb = RemoteCallbacks::new();
    cb.credentials(|url, _user, allowed| {
        asked.set(asked.get() + 1);
        if asked.get() > 3 {
            return Err(git2::Error::from_str(
                "the remote refused the GitHub token (authentication failed)",
            ));
        }
        if host_of(url).as_deref() != Some(host.as_str()) {
            return Err(git2::Error::from_str(&format!(
                "credentials asked for {url}, not the run's git host {host}: not given"
            )));
        }
        if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str(
                "the remote asks for a credential type other than a token",
            ));
        }
        let token = p
            .token
            .read()
            .map_err(|e| git2::Error::from_str(&e.to_string()))?;
        Cred::userpass_plaintext("x-access-token", token.secret())
    });
    cb.push_update_reference(|_refname, status| {
        if let Some(message) = status {
            *refused.borrow_mut() = Some(message.to_string());
        }
        Ok(())
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb);
    // No `+`: never forced.
    let spec = format!("refs/heads/{0}:refs/heads/{0}", p.branch);
    let mut remote = fresh.remote_anonymous(p.url).map_err(err("remote"))?;
    remote
        .push(&[spec.as_str()], Some(&mut opts))
        .map_err(|e| PublishError::Rejected {
            branch: p.branch.to_string(),
            message: e.message().to_string(),
        })?;
    drop(opts);
    if let Some(message) = refused.into_inner() {
        return Err(PublishError::Rejected {
            branch: p.branch.to_string(),
            message,
        });
    }
    Ok(Published::Pushed(head))
}

/// Whether `head` may be published on top of `base`.
fn check(
    repo: &git2::Repository,
    base: git2::Oid,
    head: git2::Oid,
    max_bytes: u64,
) -> Result<(), PublishError> {
    let descends = head == base
        || repo.find_commit(base).is_ok() && repo.graph_descendant_of(head, base).unwrap_or(false);
    if !descends {
        return Err(PublishError::Refused(format!(
            "the branch's head {head} does not descend from {base}, where the run started"
        )));
    }
    let old = repo
        .find_commit(base)
        .and_then(|c| c.tree())
        .map_err(err("read the base"))?;
    let new = repo
        .find_commit(head)
        .and_then(|c| c.tree())
        .map_err(err("read the head"))?;
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(err("diff"))?;
    let mut added: u64 = 0;
    let mut problems = Vec::new();
    for delta in diff.deltas() {
        if !matches!(
            delta.status(),
            Delta::Added | Delta::Modified | Delta::Renamed | Delta::Copied | Delta::Typechange
        ) {
            continue;
        }
        let file = delta.new_file();
        let path = file.path().map(Path::to_path_buf).unwrap_or_default();
        let Ok(object) = repo.find_object(file.id(), Some(ObjectType::Blob)) else {
            continue; // A submodule entry: no content of ours.
        };
        let blob = object.peel_to_blob().map_err(err("read a file"))?;
        added += blob.size() as u64;
        if file.mode() == git2::FileMode::Link {
            let target = String::from_utf8_lossy(blob.content()).into_owned();
            if escapes(&path, &target) {
                problems.push(format!(
                    "the change adds a symbolic link {} -> {target}, which points outside the repository",
                    path.display()
                ));
            }
        }
    }
    if added > max_bytes {
        problems.push(format!(
            "the change adds {added} bytes of files, more than agent.max_push_bytes ({max_bytes})"
        ));
    }
    // Every reason at once: the person reading the result fixes them together.
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PublishError::Refused(problems.join("; ")))
    }
}

/// Whether a link at `link` (a path in the repository) to `target` leaves it.
fn escapes(link: &Path, target: &str) -> bool {
    let target = Path::new(target);
    if target.is_absolute() {
        return true;
    }
    let mut at: PathBuf = link.parent().map(Path::to_path_buf).unwrap_or_default();
    for part in target.components() {
        match part {
            Component::ParentDir => {
                if !at.pop() {
                    return true;
                }
            }
            Component::Normal(p) => at.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_that_leave_the_repository_are_found() {
        assert!(escapes(
            Path::new("a"),
            "/var/run/secrets/issueops/github/token"
        ));
        assert!(escapes(Path::new("a"), "../x"));
        assert!(escapes(Path::new("d/a"), "../../x"));
        assert!(!escapes(Path::new("d/a"), "../x"));
        assert!(!escapes(Path::new("d/a"), "b/./c"));
        assert!(!escapes(Path::new("a"), "README.md"));
    }

    #[test]
    fn the_host_is_read_from_the_url_alone() {
        assert_eq!(
            host_of("https://github.com/o/r.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            host_of("http://127.0.0.1:9/o/r.git").as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(
            host_of("https://user@GitHub.com/o").as_deref(),
            Some("github.com")
        );
        assert_eq!(host_of("/local/path"), None);
    }
}

//! `issueops audit verify`: recomputes the audit table's hash chain and holds
//! the state repo's history against the rows, reporting the first break.
//!
//! What it finds, and how:
//! - a row edited in place: its stored hash is not the hash of its columns;
//! - a row removed from the middle: the next row's `prev_hash` is not the
//!   hash of the row now before it;
//! - rows cut from the end: the chain ends before the head `audit_chain`
//!   recorded;
//! - a state-repo commit removed (history rewritten): an audit row names a
//!   commit the branch does not have;
//! - an audit row of a commit removed or altered: an issueops commit (one
//!   with trailers) has no row, or its row names another run, delivery or
//!   actor than its trailers.

use super::chain::{row_hash, Canonical, GENESIS};
use super::kind;
use crate::state_repo::HistoryEntry;
use crate::store::{sql, Store, StoreError};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// How long a commit may go without its audit row: the row is written just
/// after the commit, so the newest commits of a running install may not
/// have theirs yet.
pub const IN_FLIGHT_SECONDS: i64 = 120;
/// Rows read per query.
const PAGE: i64 = 5000;

/// The audit kinds whose rows name the state-repo commit they made
/// (`proposal`: the proposal's commit, or the merge that approved it).
pub const COMMIT_KINDS: [&str; 4] = [kind::COMMIT, kind::PRUNE, kind::ROLLBACK, kind::PROPOSAL];

/// One thing that does not hold, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The audit row it is at, if any.
    pub row: Option<i64>,
    /// The state-repo commit it is at, if any.
    pub commit: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.row, &self.commit) {
            (Some(row), _) => write!(f, "audit row {row}: {}", self.what),
            (None, Some(commit)) => write!(f, "commit {}: {}", short(commit), self.what),
            (None, None) => f.write_str(&self.what),
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Rows read.
    pub rows: usize,
    /// Rows written before the chain existed (before migration 0012).
    pub unchained: usize,
    /// The last chained row's hash.
    pub head: Option<String>,
    /// State-repo commits held against the rows (`None`: not checked).
    pub commits: Option<usize>,
    /// Commits without issueops trailers (made by hand, or the repo's first).
    pub foreign_commits: Vec<String>,
    /// Everything that does not hold, the first break first (at most 20).
    pub breaks: Vec<Break>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.breaks.is_empty()
    }

    pub fn first_break(&self) -> Option<&Break> {
        self.breaks.first()
    }

    fn add(&mut self, b: Break) {
        if self.breaks.len() < 20 {
            self.breaks.push(b);
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

type ChainRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

/// The row of one commit: what the commit's trailers are held against.
struct CommitRow {
    id: i64,
    kind: String,
    /// A proposal's own commit (`proposal`/`proposed`) is on its branch,
    /// and on the applied branch only once merged.
    on_branch_only: bool,
    run_id: Option<String>,
    delivery_id: Option<String>,
    actor: Option<String>,
    commit: String,
}

/// The chain checked; the state repo's history still to hold against it.
pub struct ChainChecked {
    v: Verification,
    commit_rows: Vec<CommitRow>,
}

impl ChainChecked {
    /// The verification without the state repo.
    pub fn chain_only(self) -> Verification {
        self.v
    }

    /// Holds `history` (the branch, newest first, read after the chain so
    /// every row's commit is in it) against the rows; `now` in seconds.
    pub fn with_history(mut self, history: &[HistoryEntry], now: i64) -> Verification {
        check_commits(&mut self.v, history, &self.commit_rows, now);
        self.v
    }
}

impl Store {
    /// Recomputes the hash chain up to the head recorded when it starts.
    pub async fn verify_audit_chain(&self) -> Result<ChainChecked, StoreError> {
        // The head first: rows appended while the table is read come after it.
        let (head, head_id): (Option<String>, Option<i64>) =
            sqlx::query_as("SELECT head, head_id FROM audit_chain WHERE id = 1")
                .fetch_one(self.pool())
                .await
                .map_err(sql("reading the audit chain's head"))?;
        let mut v = Verification::default();
        let mut prev: Option<(i64, String)> = None;
        let mut commit_rows: Vec<CommitRow> = Vec::new();
        let mut after = i64::MIN;
        'pages: loop {
            let page: Vec<ChainRow> = sqlx::query_as(
                "SELECT id, at, kind, outcome, delivery_id, run_id, commit_sha, actor, object, detail,
                        prev_hash, row_hash
                   FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(PAGE)
            .fetch_all(self.pool())
            .await
            .map_err(sql("reading the audit table"))?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for r in page {
                let (id, at, kind, outcome, delivery_id, run_id, commit_sha, actor, object, detail) =
                    (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9);
                let (prev_hash, stored) = (r.10, r.11);
                // Rows appended after the head was read are left for the next run.
                if head_id.is_some_and(|h| id > h) {
                    break 'pages;
                }
                v.rows += 1;
                if let (Some(sha), true) = (&commit_sha, COMMIT_KINDS.contains(&kind.as_str())) {
                    commit_rows.push(CommitRow {
                        id,
                        on_branch_only: kind == kind::PROPOSAL && outcome == "proposed",
                        kind: kind.clone(),
                        run_id: run_id.clone(),
                        delivery_id: delivery_id.clone(),
                        actor: actor.clone(),
                        commit: sha.clone(),
                    });
                }
                let Some(stored) = stored else {
                    if prev.is_some() {
                        v.add(Break {
                            row: Some(id),
                            commit: None,
                            what: format!(
                                "{kind} {outcome} has no hash: it was inserted around the chain"
                            ),
                        });
                    } else {
                        v.unchained += 1;
                    }
                    continue;
                };
                let expected_prev = prev.as_ref().map_or(GENESIS, |(_, h)| h.as_str());
                let own = row_hash(
                    prev_hash.as_deref().unwrap_or_default(),
                    &Canonical {
                        at,
                        kind: &kind,
                        outcome: &outcome,
                        delivery_id: delivery_id.as_deref(),
                        run_id: run_id.as_deref(),
                        commit_sha: commit_sha.as_deref(),
                        actor: actor.as_deref(),
                        object: object.as_deref(),
                        detail: &detail,
                    },
                );
                if own != stored {
                    v.add(Break {
                        row: Some(id),
                        commit: None,
                        what: format!(
                            "{kind} {outcome} was altered: its columns no longer hash to the hash stored with it"
                        ),
                    });
                } else if prev_hash.as_deref() != Some(expected_prev) {
                    v.add(Break {
                        row: Some(id),
                        commit: None,
                        what: match &prev {
                            Some((before, _)) => format!(
                                "{kind} {outcome} does not follow row {before}: a row between them was removed (or row {before} rewritten with its hash)"
                            ),
                            None => format!(
                                "{kind} {outcome} is the first chained row left but names a row before it: the rows before it were removed"
                            ),
                        },
                    });
                }
                prev = Some((id, stored));
            }
        }
        v.head = prev.as_ref().map(|(_, h)| h.clone());
        if let (Some(recorded), Some(recorded_id)) = (&head, head_id) {
            if v.head.as_ref() != Some(recorded) {
                v.add(Break {
                    row: prev.as_ref().map(|(id, _)| *id),
                    commit: None,
                    what: format!(
                        "the chain ends here, but its recorded head is row {recorded_id} ({}): rows were removed from the end",
                        short(recorded)
                    ),
                });
            }
        }
        Ok(ChainChecked { v, commit_rows })
    }
}

fn trailer<'a>(entry: &'a HistoryEntry, key: &str) -> Option<&'a str> {
    entry
        .trailers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Holds the branch's history against the rows that name its commits.
fn check_commits(v: &mut Verification, history: &[HistoryEntry], rows: &[CommitRow], now: i64) {
    v.commits = Some(history.len());
    let known: HashSet<&str> = history.iter().map(|h| h.sha.as_str()).collect();
    let mut by_commit: HashMap<&str, Vec<&CommitRow>> = HashMap::new();
    for r in rows {
        by_commit.entry(r.commit.as_str()).or_default().push(r);
        if !r.on_branch_only && !known.contains(r.commit.as_str()) {
            v.add(Break {
                row: Some(r.id),
                commit: Some(r.commit.clone()),
                what: format!(
                    "{} of run {} names commit {}, which the state repo's branch does not have: the commit was removed or history rewritten",
                    r.kind,
                    r.run_id.as_deref().unwrap_or("-"),
                    short(&r.commit)
                ),
            });
        }
    }
    // Walked newest first (to know whether a newer commit has its row),
    // reported oldest first, so the first break is the earliest.
    let mut found = Vec::new();
    let mut newer_has_row = false;
    for entry in history {
        let Some(action) = trailer(entry, "Action") else {
            v.foreign_commits.push(entry.sha.clone());
            continue;
        };
        let run = trailer(entry, "Run-Id").unwrap_or("-");
        let delivery = trailer(entry, "Delivery-Id").unwrap_or("-");
        let actor = trailer(entry, "Actor").unwrap_or("-");
        let Some(candidates) = by_commit.get(entry.sha.as_str()) else {
            // The row follows its commit: missing while a newer commit has
            // its row, or after the in-flight window, it was removed.
            if newer_has_row || now - entry.time > IN_FLIGHT_SECONDS {
                found.push(Break {
                    row: None,
                    commit: Some(entry.sha.clone()),
                    what: format!(
                        "{action} of run {run} (delivery {delivery}, by {actor}) has no audit row: its row was removed"
                    ),
                });
            }
            continue;
        };
        newer_has_row = true;
        // A list of runs (closing an issue cancels them all) is not one run id.
        let matches = |r: &&CommitRow| {
            r.actor.as_deref() == Some(actor)
                && (delivery == "-" || r.delivery_id.as_deref() == Some(delivery))
                && (run == "-" || run.contains(',') || r.run_id.as_deref() == Some(run))
        };
        if !candidates.iter().any(matches) {
            let r = candidates[0];
            found.push(Break {
                row: Some(r.id),
                commit: Some(entry.sha.clone()),
                what: format!(
                    "{} row says run {}, delivery {}, actor {}; commit {} says run {run}, delivery {delivery}, actor {actor}",
                    r.kind,
                    r.run_id.as_deref().unwrap_or("-"),
                    r.delivery_id.as_deref().unwrap_or("-"),
                    r.actor.as_deref().unwrap_or("-"),
                    short(&entry.sha)
                ),
            });
        }
    }
    v.foreign_commits.reverse();
    for b in found.into_iter().rev() {
        v.add(b);
    }
}

/// The audit kind of a verification's own row (outcome `verified` or
/// `broken`); the health page shows the newest.
pub const VERIFY_KIND: &str = "audit.verify";

/// Why a verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StateRepo(#[from] crate::state_repo::StateRepoError),
    #[error("reading the state repo's history failed: {0}")]
    Task(String),
}

/// Verifies the audit table against `repo` (fetched first when remote) and
/// records the outcome as an `audit.verify` row by `actor`.
pub async fn verify_and_record(
    store: &Store,
    repo: &crate::state_repo::StateRepo,
    actor: &str,
) -> Result<Verification, VerifyError> {
    let chain = store.verify_audit_chain().await?;
    let repo = repo.clone();
    let history = tokio::task::spawn_blocking(move || {
        if repo.is_remote() {
            repo.fetch()?;
        }
        repo.history()
    })
    .await
    .map_err(|e| VerifyError::Task(e.to_string()))??;
    let v = chain.with_history(&history, crate::now_ms() / 1000);
    let row = super::AuditEvent::new(VERIFY_KIND, if v.ok() { "verified" } else { "broken" })
        .actor(actor)
        .detail(serde_json::json!({
            "rows": v.rows,
            "unchained": v.unchained,
            "head": v.head,
            "commits": v.commits,
            "foreign_commits": v.foreign_commits.len(),
            "first_break": v.first_break().map(|b| b.to_string()),
            "breaks": v.breaks.len(),
        }));
    store.append_audit(&row).await?;
    Ok(v)
}

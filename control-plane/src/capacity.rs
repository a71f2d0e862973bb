//! Capacity and budgets: how many runs may be active at once (whole install,
//! per repository), how many a repository may start per day, and the queue
//! that holds the rest, fair across repositories.
//!
//! Invariants: never more runs active than `limits.max_active_runs` and
//! `limits.max_active_runs_per_repo`; with either cap set every trigger
//! enters the queue, so none overtakes one that waits; the queue lives in
//! the runs table (state `queued`), so a restart loses nothing and keeps
//! the order (each run's `started_at` says which repository went last).

use crate::decide::{admit, Admission, RunMode};
use crate::{ControlPlane, ControlPlaneError};
use issueops_core::event::IssuesEvent;
use issueops_core::store::runs::{Run, RunState};
use std::collections::{HashMap, VecDeque};
use tracing::Instrument;

/// A repository's share of the cluster right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepoLoad {
    pub active: i64,
    /// When its last run started (ms); `None`: never.
    pub last_started: Option<i64>,
}

/// The order in which the queue starts `waiting` (given in arrival order,
/// as repository names): each next run is the oldest of the repository
/// with the fewest active runs, then the one whose last run started
/// longest ago, then the one whose oldest waiting run came first. So a
/// repository with many runs waiting cannot hold back one with a single
/// run; within a repository it is first in, first out. Returns indices
/// into `waiting`. Pure.
pub fn fair_order(waiting: &[&str], loads: &HashMap<String, RepoLoad>) -> Vec<usize> {
    let mut queues: Vec<(&str, VecDeque<usize>)> = Vec::new();
    for (i, repo) in waiting.iter().enumerate() {
        match queues.iter_mut().find(|(r, _)| r == repo) {
            Some((_, q)) => q.push_back(i),
            None => queues.push((repo, VecDeque::from([i]))),
        }
    }
    let mut load: Vec<RepoLoad> = queues
        .iter()
        .map(|(r, _)| loads.get(*r).copied().unwrap_or_default())
        .collect();
    let mut order = Vec::with_capacity(waiting.len());
    // Projected starts come after every real one, in the order they are made.
    let mut tick = i64::MAX - waiting.len() as i64;
    while let Some(next) = (0..queues.len())
        .filter(|&q| !queues[q].1.is_empty())
        .min_by_key(|&q| {
            (
                load[q].active,
                load[q].last_started.unwrap_or(i64::MIN),
                queues[q].1[0],
            )
        })
    {
        if let Some(i) = queues[next].1.pop_front() {
            order.push(i);
        }
        load[next].active += 1;
        load[next].last_started = Some(tick);
        tick += 1;
    }
    order
}

/// `limits.runs_per_day`'s window: the UTC day of `now_ms`, as its start and
/// the start of the next one (ms).
pub fn utc_day(now_ms: i64) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    let start = now_ms.div_euclid(DAY) * DAY;
    (start, start + DAY)
}

/// `YYYY-MM-DD HH:MM UTC` of a time in ms (for comments people read).
pub fn utc_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

impl ControlPlane {
    /// `Some(reason)` when `repo` has started `limits.runs_per_day` runs
    /// today (UTC): the reason names the limit and when it resets.
    pub(crate) async fn over_daily_budget(
        &self,
        repo: &str,
    ) -> Result<Option<String>, ControlPlaneError> {
        let Some(limit) = self.config.limits.runs_per_day else {
            return Ok(None);
        };
        let (start, next) = utc_day(issueops_core::now_ms());
        let today = self.store.runs_created_since(repo, start).await?;
        Ok((today >= i64::from(limit)).then(|| {
            format!(
                "{repo} has started its {limit} runs for today (limits.runs_per_day: {limit}); the count resets at {}",
                utc_text(next)
            )
        }))
    }

    /// Each queued run's place in the fair order: `(position, of)`, from 1.
    pub async fn queue_positions(
        &self,
    ) -> Result<HashMap<String, (usize, usize)>, ControlPlaneError> {
        let queued = self.store.queued_runs().await?;
        if queued.is_empty() {
            return Ok(HashMap::new());
        }
        let loads = self.repo_loads().await?;
        let repos: Vec<&str> = queued.iter().map(|(r, _)| r.repo.as_str()).collect();
        let total = queued.len();
        Ok(fair_order(&repos, &loads)
            .into_iter()
            .enumerate()
            .map(|(pos, i)| (queued[i].0.run_id.clone(), (pos + 1, total)))
            .collect())
    }

    async fn repo_loads(&self) -> Result<HashMap<String, RepoLoad>, ControlPlaneError> {
        Ok(self
            .store
            .repo_loads()
            .await?
            .into_iter()
            .map(|(repo, active, last_started)| {
                (
                    repo,
                    RepoLoad {
                        active,
                        last_started,
                    },
                )
            })
            .collect())
    }

    /// Starts queued runs in the fair order while the caps allow: a run
    /// whose issue is busy, or whose repository is at its cap, waits; the
    /// install's cap reached, the pass stops.
    pub(crate) async fn start_queued(&self) -> Result<(), ControlPlaneError> {
        let queued = self.store.queued_runs().await?;
        issueops_core::metrics::queue_depth(queued.len() as i64);
        if queued.is_empty() {
            return Ok(());
        }
        let limits = &self.config.limits;
        let mut loads = self.repo_loads().await?;
        let mut total: i64 = loads.values().map(|l| l.active).sum();
        let repos: Vec<&str> = queued.iter().map(|(r, _)| r.repo.as_str()).collect();
        // Those whose issue is free (one query), so the others cost nothing.
        let free: std::collections::HashSet<String> = self
            .store
            .startable_queued_runs()
            .await?
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        let mut started = 0;
        for i in fair_order(&repos, &loads) {
            let (queued, queued_at) = &queued[i];
            if !free.contains(&queued.run_id) {
                continue;
            }
            if limits
                .max_active_runs
                .is_some_and(|max| total >= i64::from(max))
            {
                break;
            }
            let load = loads.entry(queued.repo.clone()).or_default();
            if limits
                .max_active_runs_per_repo
                .is_some_and(|max| load.active >= i64::from(max))
            {
                continue;
            }
            let span = tracing::info_span!("dequeue", delivery_id = %queued.delivery_id, run_id = %queued.run_id);
            if self.start_one_queued(queued).instrument(span).await? {
                load.active += 1;
                total += 1;
                started += 1;
                issueops_core::metrics::queue_wait(
                    issueops_core::now_ms().saturating_sub(*queued_at),
                );
            }
        }
        issueops_core::metrics::queue_depth(queued.len() as i64 - started);
        Ok(())
    }

    /// Starts one queued run if its issue is free; whether it started.
    async fn start_one_queued(&self, queued: &Run) -> Result<bool, ControlPlaneError> {
        let Some((_, payload)) = self.store.delivery(&queued.delivery_id).await? else {
            return Ok(false);
        };
        let (Ok(event), Some(mode)) = (
            serde_json::from_str::<IssuesEvent>(&payload),
            RunMode::parse(&queued.mode),
        ) else {
            return Ok(false);
        };
        let runs = self
            .store
            .runs_for_issue(&queued.repo, queued.issue_number)
            .await?;
        // An earlier queued run of the issue goes first; this one and those
        // behind it do not hold it back.
        if runs
            .iter()
            .take_while(|r| r.run_id != queued.run_id)
            .any(|r| r.state == RunState::Queued.as_str())
        {
            return Ok(false);
        }
        let earlier: Vec<Run> = runs
            .into_iter()
            .filter(|r| r.state != RunState::Queued.as_str())
            .collect();
        match admit(&self.config, event.issue.number, mode, &earlier) {
            Admission::Start { branch } => {
                let Ok(pull_request) = self
                    .revision_target(&queued.delivery_id, &event, mode, &branch)
                    .await?
                else {
                    self.store
                        .advance_run(
                            &queued.run_id,
                            RunState::Cancelled,
                            None,
                            Some("no open pull request to revise"),
                        )
                        .await?;
                    return Ok(false);
                };
                self.commit_run(&queued.delivery_id, &event, mode, &branch, pull_request)
                    .await?;
                Ok(true)
            }
            Admission::Refuse { reason } => {
                self.store
                    .advance_run(&queued.run_id, RunState::Cancelled, None, Some(&reason))
                    .await?;
                Ok(false)
            }
            Admission::Queue { .. } => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(of: &[(&str, i64, Option<i64>)]) -> HashMap<String, RepoLoad> {
        of.iter()
            .map(|(r, active, last)| {
                (
                    r.to_string(),
                    RepoLoad {
                        active: *active,
                        last_started: *last,
                    },
                )
            })
            .collect()
    }

    fn named(waiting: &[&str], order: Vec<usize>) -> Vec<String> {
        // The k-th run of repo "a" is "a<k>".
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let labels: Vec<String> = waiting
            .iter()
            .map(|r| {
                let k = seen.entry(r).or_default();
                *k += 1;
                format!("{r}{k}")
            })
            .collect();
        order.into_iter().map(|i| labels[i].clone()).collect()
    }

    #[test]
    fn the_queue_takes_turns_across_repositories() {
        let waiting = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"];
        let order = fair_order(&waiting, &HashMap::new());
        assert_eq!(
            named(&waiting, order),
            ["a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3", "a4"]
        );
    }

    #[test]
    fn a_repository_with_runs_active_or_just_started_waits_its_turn() {
        let waiting = ["a", "b", "c"];
        // a has a run active; b started one more recently than c.
        let order = fair_order(
            &waiting,
            &loads(&[("a", 1, Some(50)), ("b", 0, Some(40)), ("c", 0, Some(30))]),
        );
        assert_eq!(named(&waiting, order), ["c1", "b1", "a1"]);
    }

    #[test]
    fn the_day_resets_at_utc_midnight() {
        // 2026-11-30 16:52:28 UTC.
        let now = 1_796_057_548_000;
        let (start, next) = utc_day(now);
        assert_eq!(utc_text(start), "2026-11-30 00:00 UTC");
        assert_eq!(utc_text(next), "2026-12-01 00:00 UTC");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00 UTC");
    }
}

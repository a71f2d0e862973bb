//! The dashboard: runs per day by outcome, how long from label to start and
//! how long runs take (percentiles), and the queue, as numbers the page draws
//! as small SVG charts (server-rendered, no script) and the API returns.

use crate::{AppState, UiError};
use issueops_core::now_ms;
use issueops_core::store::runs::RunState;
use issueops_core::store::views::RunTiming;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Days shown.
pub const DAYS: i64 = 14;
const DAY_MS: i64 = 86_400_000;
/// How a run ended, in the order the bars stack.
pub const OUTCOMES: [&str; 5] = ["succeeded", "failed", "cancelled", "simulated", "active"];

/// One day's runs by outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Runs triggered that day, per outcome (same order as `outcomes`).
    pub counts: Vec<i64>,
    pub total: i64,
}

/// Percentiles of a duration, in milliseconds; `None` without samples.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Percentiles {
    pub samples: i64,
    pub p50: Option<i64>,
    pub p90: Option<i64>,
    pub p99: Option<i64>,
    pub max: Option<i64>,
}

/// Runs waiting in the queue for one repository.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub repo: String,
    pub waiting: i64,
}

/// What the dashboard shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct DashboardView {
    pub outcomes: Vec<String>,
    /// The last 14 days, oldest first.
    pub days: Vec<Day>,
    /// The largest day's total (the bars' scale).
    pub busiest: i64,
    /// From the trigger (label) to the run's start (its namespace and Job
    /// committed), over the same days.
    pub label_to_started: Percentiles,
    /// From start to end, of the runs that ended.
    pub duration: Percentiles,
    pub queue: Vec<Queued>,
    pub queue_total: i64,
}

fn outcome(t: &RunTiming) -> &'static str {
    if issueops_core::store::runs::simulated(t.reason.as_deref()) {
        return "simulated";
    }
    if let Some(o) = &t.outcome {
        return if o == "failed" { "failed" } else { "succeeded" };
    }
    match RunState::parse(&t.state) {
        Some(RunState::Succeeded) => "succeeded",
        Some(RunState::Failed) => "failed",
        Some(RunState::Cancelled) | Some(RunState::Pruned) => "cancelled",
        _ => "active",
    }
}

/// `YYYY-MM-DD` of a time in ms (UTC).
fn date(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Nearest-rank percentiles of `samples`.
pub fn percentiles(mut samples: Vec<i64>) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        Some(samples[rank - 1])
    };
    Percentiles {
        samples: samples.len() as i64,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: samples.last().copied(),
    }
}

/// The dashboard of `timings` as of `now`.
pub fn build(timings: &[RunTiming], now: i64) -> DashboardView {
    let today = now.div_euclid(DAY_MS);
    let first = today - (DAYS - 1);
    let mut per_day: BTreeMap<i64, Vec<i64>> = (first..=today)
        .map(|d| (d, vec![0; OUTCOMES.len()]))
        .collect();
    let mut started = Vec::new();
    let mut durations = Vec::new();
    let mut queue: BTreeMap<String, i64> = BTreeMap::new();
    for t in timings {
        if let Some(counts) = per_day.get_mut(&t.created_at.div_euclid(DAY_MS)) {
            let i = OUTCOMES.iter().position(|o| *o == outcome(t)).unwrap_or(0);
            counts[i] += 1;
        }
        if let Some(s) = t.started_at {
            started.push((s - t.created_at).max(0));
            if let Some(f) = t.finished_at {
                durations.push((f - s).max(0));
            }
        }
        if RunState::parse(&t.state) == Some(RunState::Queued) {
            *queue.entry(t.repo.clone()).or_default() += 1;
        }
    }
    let days: Vec<Day> = per_day
        .into_iter()
        .map(|(d, counts)| Day {
            day: date(d * DAY_MS),
            total: counts.iter().sum(),
            counts,
        })
        .collect();
    DashboardView {
        outcomes: OUTCOMES.iter().map(|o| o.to_string()).collect(),
        busiest: days.iter().map(|d| d.total).max().unwrap_or(0),
        days,
        label_to_started: percentiles(started),
        duration: percentiles(durations),
        queue_total: queue.values().sum(),
        queue: queue
            .into_iter()
            .map(|(repo, waiting)| Queued { repo, waiting })
            .collect(),
    }
}

impl AppState {
    pub async fn dashboard_view(&self) -> Result<DashboardView, UiError> {
        let now = now_ms();
        let since = (now.div_euclid(DAY_MS) - (DAYS - 1)) * DAY_MS;
        Ok(build(&self.parts.store.run_timings(since).await?, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        created: i64,
        started: Option<i64>,
        finished: Option<i64>,
        state: &str,
        outcome: Option<&str>,
    ) -> RunTiming {
        RunTiming {
            repo: "o/r".into(),
            created_at: created,
            started_at: started,
            finished_at: finished,
            state: state.into(),
            outcome: outcome.map(String::from),
            reason: None,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).collect());
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (Some(50), Some(90), Some(99), Some(100))
        );
        let one = percentiles(vec![7]);
        assert_eq!((one.p50, one.p99), (Some(7), Some(7)));
        assert_eq!(percentiles(vec![]).samples, 0);
    }

    #[test]
    fn days_count_runs_by_outcome_and_the_queue_by_repo() {
        let now = 20 * DAY_MS + 5;
        let today = 20 * DAY_MS;
        let mut simulated = run(today + 1, Some(today + 2), Some(today + 9), "pruned", None);
        simulated.reason = Some("simulated: the stand-in ran no agent".into());
        let timings = vec![
            run(
                today - 13 * DAY_MS,
                Some(today - 13 * DAY_MS + 1_000),
                Some(today - 13 * DAY_MS + 61_000),
                "pruned",
                Some("pr-opened"),
            ),
            run(today - 14 * DAY_MS, None, None, "succeeded", None), // before the window
            run(
                today,
                Some(today + 3_000),
                Some(today + 4_000),
                "failed",
                Some("failed"),
            ),
            run(today + 10, None, None, "queued", None),
            // Queued for weeks: in the queue, not in the days shown.
            run(today - 20 * DAY_MS, None, None, "queued", None),
            run(today + 11, Some(today + 500), None, "running", None),
            simulated,
        ];
        let d = build(&timings, now);
        assert_eq!(d.days.len(), 14);
        assert_eq!(d.days[0].counts, [1, 0, 0, 0, 0]);
        assert_eq!(d.days[13].counts, [0, 1, 0, 1, 2]);
        assert_eq!(d.days[13].day, "1970-01-21");
        assert_eq!(d.busiest, 4);
        assert_eq!(d.queue_total, 2);
        assert_eq!(d.label_to_started.samples, 4);
        assert_eq!(d.duration.samples, 3);
        assert_eq!(d.duration.max, Some(60_000));
    }
}

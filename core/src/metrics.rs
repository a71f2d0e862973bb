//! Process-wide Prometheus metrics, served as text on `--metrics-listen`.
//!
//! One registry per process (every role registers the same families, so a
//! dashboard works whatever runs where); components record through the small
//! functions below and never see the registry.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

struct Metrics {
    registry: Registry,
    deliveries: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    runs: Family<Labels, Gauge>,
    prunes: Counter,
    errors: Family<Labels, Counter>,
    github_rate_limit: Gauge,
    leader: Family<Labels, Gauge>,
    queue_depth: Gauge,
    queue_wait: Histogram,
    inbox_group: Histogram,
}

fn histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("issueops");
    let deliveries = Family::<Labels, Counter>::default();
    registry.register(
        "deliveries",
        "Webhook deliveries by outcome (stored, duplicate, handled, retry, dead, rate_limited)",
        deliveries.clone(),
    );
    let refused = Family::<Labels, Counter>::default();
    registry.register(
        "refused_requests",
        "Webhook requests refused before storing, by reason",
        refused.clone(),
    );
    let decisions = Family::<Labels, Counter>::default();
    registry.register(
        "decisions",
        "Control-plane decisions by outcome",
        decisions.clone(),
    );
    let durations = Family::<Labels, Histogram>::new_with_constructor(histogram);
    registry.register(
        "step_duration_seconds",
        "How long commits, applies and reconcile cycles take",
        durations.clone(),
    );
    let runs = Family::<Labels, Gauge>::default();
    registry.register("runs", "Runs by state", runs.clone());
    let prunes = Counter::default();
    registry.register("prunes", "Runs pruned", prunes.clone());
    let errors = Family::<Labels, Counter>::default();
    registry.register(
        "api_errors",
        "Failed calls to the Kubernetes API and to GitHub",
        errors.clone(),
    );
    let github_rate_limit = Gauge::default();
    registry.register(
        "github_rate_limit_remaining",
        "Requests GitHub said are left in the current window",
        github_rate_limit.clone(),
    );
    let leader = Family::<Labels, Gauge>::default();
    registry.register(
        "leader",
        "1 while this process is the one writer of the role, else 0",
        leader.clone(),
    );
    let inbox_group = Histogram::new(exponential_buckets(1.0, 2.0, 8));
    registry.register(
        "inbox_group_size",
        "Deliveries stored per inbox transaction (the gateway's group commit)",
        inbox_group.clone(),
    );
    let queue_depth = Gauge::default();
    registry.register(
        "queue_depth",
        "Runs waiting in the queue (for their issue or for capacity)",
        queue_depth.clone(),
    );
    // 1 s .. ~9 h.
    let queue_wait = Histogram::new(exponential_buckets(1.0, 2.0, 16));
    registry.register(
        "queue_wait_seconds",
        "How long a run waited in the queue before it started",
        queue_wait.clone(),
    );
    Metrics {
        registry,
        queue_depth,
        queue_wait,
        inbox_group,
        deliveries,
        refused,
        decisions,
        durations,
        runs,
        prunes,
        errors,
        github_rate_limit,
        leader,
    }
});

pub fn delivery_outcome(outcome: &str) {
    METRICS
        .deliveries
        .get_or_create(&vec![("outcome", outcome.to_string())])
        .inc();
}

pub fn refused_request(reason: &str) {
    METRICS
        .refused
        .get_or_create(&vec![("reason", reason.to_string())])
        .inc();
}

pub fn decision(outcome: &str) {
    // Outcomes carry free text after a colon ("refused: …"); the label keeps
    // the word before it so the series stay few.
    let word = outcome.split([':', ' ']).next().unwrap_or(outcome);
    METRICS
        .decisions
        .get_or_create(&vec![("outcome", word.to_string())])
        .inc();
}

/// Records how long `step` (commit, apply, reconcile) took.
pub fn duration(step: &'static str, took: Duration) {
    METRICS
        .durations
        .get_or_create(&vec![("step", step.to_string())])
        .observe(took.as_secs_f64());
}

pub fn runs_in_state(state: &str, n: i64) {
    METRICS
        .runs
        .get_or_create(&vec![("state", state.to_string())])
        .set(n);
}

/// Runs waiting in the queue now.
pub fn queue_depth(n: i64) {
    METRICS.queue_depth.set(n);
}

/// A queued run started after waiting `waited_ms`.
pub fn queue_wait(waited_ms: i64) {
    METRICS.queue_wait.observe(waited_ms.max(0) as f64 / 1000.0);
}

pub fn pruned(n: u64) {
    METRICS.prunes.inc_by(n);
}

/// A failed call to `api` (`kubernetes`, `github`).
pub fn api_error(api: &'static str) {
    METRICS
        .errors
        .get_or_create(&vec![("api", api.to_string())])
        .inc();
}

pub fn github_rate_limit_remaining(n: i64) {
    METRICS.github_rate_limit.set(n);
}

pub fn leader(role: &'static str, is_leader: bool) {
    METRICS
        .leader
        .get_or_create(&vec![("role", role.to_string())])
        .set(i64::from(is_leader));
}

/// One inbox transaction stored `deliveries` deliveries.
pub fn inbox_group(deliveries: usize) {
    METRICS.inbox_group.observe(deliveries as f64);
}

/// Every metric in Prometheus' text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_appear_in_the_text_format() {
        refused_request("signature");
        refused_request("signature");
        decision("refused: not on the allowlist");
        duration("commit", Duration::from_millis(3));
        leader("reconciler", true);
        let text = render();
        assert!(
            text.contains("issueops_refused_requests_total{reason=\"signature\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("issueops_decisions_total{outcome=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("issueops_step_duration_seconds_count{step=\"commit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("issueops_leader{role=\"reconciler\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}

//! The one retry policy: exponential backoff with jitter (backon), used by
//! Kubernetes API calls, GitHub calls, the services' loops and the inbox.
//!
//! Jitter keeps replicas and retried deliveries from hammering a recovering
//! dependency in lockstep.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

pub use backon::Retryable;

/// Backoff from `first`, doubling up to `max`, at most `times` retries.
pub fn policy(first: Duration, max: Duration, times: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_max_times(times)
        .with_jitter()
}

/// The pause before retry number `attempt` (1-based) of that policy.
pub fn delay(first: Duration, max: Duration, attempt: u32) -> Duration {
    policy(first, max, usize::MAX)
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(max)
}

/// Pauses between attempts of a loop that never gives up (a service's main
/// loop): grows per failure, starts over after a success.
pub struct Pauses {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Pauses {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failures: 0,
        }
    }

    /// The pause after one more failure.
    pub fn next_pause(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(self.first, self.max, self.failures)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_vary() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(5));
        // Jitter adds up to one whole delay on top of the exponential one.
        for attempt in 1..=3 {
            let base = first * 2u32.pow(attempt - 1);
            let d = delay(first, max, attempt);
            assert!(d >= base && d <= base * 2, "attempt {attempt}: {d:?}");
        }
        assert!(delay(first, max, 40) <= max * 2);
        let samples: std::collections::BTreeSet<_> =
            (0..20).map(|_| delay(first, max, 3)).collect();
        assert!(samples.len() > 1, "jitter varies the pause");
    }

    #[test]
    fn pauses_start_over_after_a_success() {
        let mut p = Pauses::new(Duration::from_millis(10), Duration::from_secs(1));
        let a = p.next_pause();
        p.next_pause();
        let c = p.next_pause();
        assert!(c > a);
        p.reset();
        assert!(p.next_pause() <= Duration::from_millis(20));
    }
}

//! What unauthenticated callers can make the gateway do: a per-source budget
//! of *refused* requests, and refusals that are counted instead of each
//! leaving a row.
//!
//! Only refusals spend the budget, and the router checks the signature
//! before it asks the guard: GitHub's signed deliveries are never throttled,
//! even from an address (GitHub's few, or one ingress) that a forger shares.
//! A source that spends its budget is answered 429 for every unsigned
//! request, before any database or audit work, until it has a token again
//! (at least a second). Sources are keyed by `source`.
//!
//! Invariant: however many requests a source sends, the audit table gains at
//! most two rows per reason, source and window (the first refusal, and a
//! summary of the rest when the window ends); the exact numbers are in the
//! metrics.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::config::GatewayConfig;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources tracked at once; beyond it new sources are only counted.
const MAX_TRACKED: usize = 10_000;

struct Window {
    started: Instant,
    /// Refusals in this window (the first was written as a row).
    seen: u64,
    status: u16,
    reason: String,
}

/// The shortest time a source that spent its budget is answered 429.
const MIN_THROTTLE: Duration = Duration::from_secs(1);

pub struct Guard {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    window: Duration,
    windows: Mutex<HashMap<(&'static str, IpAddr), Window>>,
    /// Sources that spent their budget, and until when they are throttled.
    throttled: Mutex<HashMap<IpAddr, Instant>>,
}

impl Guard {
    pub fn new(config: &GatewayConfig) -> Self {
        let limiter = NonZeroU32::new(config.rate_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            window: Duration::from_secs(config.refused_summary_seconds.max(1)),
            windows: Mutex::new(HashMap::new()),
            throttled: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `source` may be heard: false while it is throttled.
    pub fn admit(&self, source: IpAddr) -> bool {
        let mut throttled = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
        match throttled.get(&source) {
            Some(until) if *until > Instant::now() => false,
            Some(_) => {
                throttled.remove(&source);
                true
            }
            None => true,
        }
    }

    /// Spends one token of `source`'s budget for a refused request; a source
    /// with none left is throttled.
    pub fn charge(&self, source: IpAddr) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        if let Err(not_until) = limiter.check_key(&source) {
            let wait = not_until
                .wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ))
                .max(MIN_THROTTLE);
            let mut throttled = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
            if throttled.len() < MAX_TRACKED || throttled.contains_key(&source) {
                throttled.insert(source, Instant::now() + wait);
            }
        }
    }

    /// Counts a refusal; returns the audit row to write when it is the first
    /// of its reason and source in the current window.
    pub fn refused(
        &self,
        class: &'static str,
        source: IpAddr,
        status: u16,
        reason: &str,
    ) -> Option<AuditEvent> {
        issueops_core::metrics::refused_request(class);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(w) = windows.get_mut(&(class, source)) {
            if now.duration_since(w.started) < self.window {
                w.seen += 1;
                return None;
            }
        }
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&(class, source)) {
            return None;
        }
        windows.insert(
            (class, source),
            Window {
                started: now,
                seen: 1,
                status,
                reason: reason.chars().take(200).collect(),
            },
        );
        Some(
            AuditEvent::new(kind::DELIVERY_REJECTED, "rejected").detail(json!({
                "reason_class": class,
                "reason": reason,
                "status": status,
                "source": crate::source::describe(source),
                "note": format!("further refusals of this kind from this source are summarised once per {}s", self.window.as_secs()),
            })),
        )
    }

    /// Ends the windows that are over (all with `all`): one summary row for
    /// each that refused more than its first request. Also forgets idle
    /// sources of the rate limiter.
    pub fn flush(&self, all: bool) -> Vec<AuditEvent> {
        if let Some(l) = &self.limiter {
            l.retain_recent();
        }
        let now = Instant::now();
        self.throttled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = Vec::new();
        windows.retain(|(class, source), w| {
            if !all && now.duration_since(w.started) < self.window {
                return true;
            }
            if w.seen > 1 {
                rows.push(
                    AuditEvent::new(kind::DELIVERY_REJECTED, "rejected-summary").detail(json!({
                        "reason_class": class,
                        "reason": w.reason,
                        "status": w.status,
                        "source": crate::source::describe(*source),
                        "count": w.seen - 1,
                        "window_seconds": self.window.as_secs(),
                    })),
                );
            }
            false
        });
        rows
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(rate: u32, burst: u32) -> Guard {
        Guard::new(&GatewayConfig {
            rate_per_second: rate,
            rate_burst: burst,
            refused_summary_seconds: 3600,
            trusted_proxies: Vec::new(),
        })
    }

    #[test]
    fn one_row_per_reason_and_source_then_one_summary() {
        let g = guard(0, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let rows: Vec<_> = (0..1000)
            .filter_map(|_| g.refused("signature", a, 401, "bad"))
            .collect();
        assert_eq!(rows.len(), 1);
        assert!(
            g.refused("signature", b, 401, "bad").is_some(),
            "another source"
        );
        assert!(
            g.refused("too_large", a, 413, "big").is_some(),
            "another reason"
        );
        assert!(g.flush(false).is_empty(), "windows still open");
        let summary = g.flush(true);
        assert_eq!(
            summary.len(),
            1,
            "only a's signature window refused more than once"
        );
        assert_eq!(summary[0].detail["count"], 999);
        assert!(
            g.refused("signature", a, 401, "bad").is_some(),
            "a new window"
        );
    }

    #[test]
    fn only_refusals_spend_a_sources_budget() {
        let g = guard(1, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!((0..1000).all(|_| g.admit(a)), "admitting spends nothing");
        for _ in 0..3 {
            g.charge(a);
            assert!(g.admit(a), "within the burst");
        }
        g.charge(a);
        assert!(!g.admit(a), "the budget is spent: throttled");
        assert!(g.admit(b), "other sources are not");
        let off = guard(0, 0);
        (0..100).for_each(|_| off.charge(a));
        assert!(off.admit(a), "0 turns the limit off");
    }
}

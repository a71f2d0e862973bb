//! When to try a GitHub call again, and after how long: a plain function over
//! the status and headers of an answer, so it is tested without a server.
//!
//! GitHub asks clients to wait for `retry-after` seconds on a secondary rate
//! limit, and until `x-ratelimit-reset` (epoch seconds) when
//! `x-ratelimit-remaining` is 0; server errors are retried with backoff.

use std::time::Duration;

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Use the answer (success, or an error the caller must see).
    Done,
    /// Try again after this long.
    RetryAfter(Duration),
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The pause after failed attempt `attempt` when GitHub named none: the
/// project's one backoff policy (exponential, with jitter).
pub fn backoff(attempt: u32) -> Duration {
    // At most 4 s with jitter: below the default `github.max_wait_seconds`.
    issueops_core::retry::delay(Duration::from_millis(200), Duration::from_secs(2), attempt)
}

/// Decides on an answer with `status` and `headers` to attempt number
/// `attempt` (1-based), at `now_epoch` seconds.
pub fn verdict(status: u16, headers: &[(String, String)], attempt: u32, now_epoch: u64) -> Verdict {
    let backoff = backoff(attempt);
    let rate_limited = status == 429
        || (status == 403
            && (header(headers, "retry-after").is_some()
                || header(headers, "x-ratelimit-remaining") == Some("0")));
    if rate_limited {
        if let Some(secs) =
            header(headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Verdict::RetryAfter(Duration::from_secs(secs));
        }
        if let Some(reset) =
            header(headers, "x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Verdict::RetryAfter(Duration::from_secs(
                reset.saturating_sub(now_epoch).max(1),
            ));
        }
        // GitHub: with neither header, wait at least a minute.
        return Verdict::RetryAfter(Duration::from_secs(60));
    }
    if status >= 500 {
        return Verdict::RetryAfter(backoff);
    }
    Verdict::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn retry_after_is_honoured() {
        assert_eq!(
            verdict(429, &h(&[("Retry-After", "7")]), 1, 0),
            Verdict::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            verdict(403, &h(&[("retry-after", "3")]), 1, 0),
            Verdict::RetryAfter(Duration::from_secs(3))
        );
    }

    #[test]
    fn exhausted_primary_limit_waits_for_the_reset() {
        let headers = h(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1000"),
        ]);
        assert_eq!(
            verdict(403, &headers, 1, 990),
            Verdict::RetryAfter(Duration::from_secs(10))
        );
    }

    #[test]
    fn plain_403_and_404_are_final_server_errors_are_not() {
        assert_eq!(verdict(403, &[], 1, 0), Verdict::Done);
        assert_eq!(verdict(404, &[], 1, 0), Verdict::Done);
        assert_eq!(verdict(200, &[], 1, 0), Verdict::Done);
        assert!(matches!(verdict(502, &[], 1, 0), Verdict::RetryAfter(_)));
    }
}

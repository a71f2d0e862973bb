//! The agent's transcript kept with its run: the end of the run's pod logs,
//! secrets redacted, deflate-compressed. What the agent wrote is hostile
//! data; what matters here is that no credential it may have printed (or
//! been talked into printing) outlives the pod in readable form.

use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use regex::Regex;
use std::io::{Read, Write};
use std::sync::LazyLock;

/// The most text kept per run: the end of the output, where the outcome is.
pub const MAX_BYTES: usize = 1024 * 1024;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Credentials by shape, each with what replaces it: GitHub tokens, model
/// API keys, issueops' own API tokens, cloud and chat keys, bearer and basic credentials, private key
/// blocks, credentials in URLs (the scheme and user kept) and
/// `*KEY=`/`*TOKEN=`/`*SECRET=`/`*PASSWORD=` assignments (the name kept).
static PATTERNS: LazyLock<Vec<(Regex, String)>> = LazyLock::new(|| {
    let whole = || REDACTED.to_string();
    [
        (r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|\z)", whole()),
        (r"\b(gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,})", whole()),
        (r"\bsk-[A-Za-z0-9_\-]{16,}", whole()),
        (r"\bissueops_[0-9a-f]{32,}", whole()),
        (r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", whole()),
        (r"\bxox[abprs]-[A-Za-z0-9\-]{10,}", whole()),
        (r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9_\-\.=/+]{12,}", whole()),
        (r"(://[^/\s:@]+:)[^@\s/]+@", format!("${{1}}{REDACTED}@")),
        (
            r#"(?i)\b([A-Z0-9_]*(KEY|TOKEN|SECRET|PASSWORD|PASSWD)[A-Z0-9_]*\s*[=:]\s*)["']?[^\s"']{6,}"#,
            format!("${{1}}{REDACTED}"),
        ),
    ]
    .into_iter()
    .map(|(p, with)| {
        let re = Regex::new(p).unwrap_or_else(|e| panic!("transcript pattern {p}: {e}"));
        (re, with)
    })
    .collect()
});

/// `text` with every credential-shaped span, and every one of `known`
/// (values issueops itself handed the run), replaced by [`REDACTED`].
pub fn redact(text: &str, known: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in known.iter().filter(|s| s.len() >= 8) {
        out = out.replace(secret, REDACTED);
    }
    for (pattern, with) in PATTERNS.iter() {
        out = pattern.replace_all(&out, with.as_str()).into_owned();
    }
    out
}

/// A transcript ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Deflate-compressed UTF-8.
    pub body: Vec<u8>,
    /// Bytes of text before compression.
    pub size: i64,
    /// Whether older output was cut to fit [`MAX_BYTES`].
    pub truncated: bool,
}

/// Redacts, keeps the last `max` bytes (from a line start when one is near),
/// and compresses.
pub fn pack(text: &str, known: &[&str], max: usize) -> Packed {
    let clean = redact(text, known);
    let (kept, truncated) = if clean.len() > max {
        let mut start = clean.len() - max;
        while !clean.is_char_boundary(start) {
            start += 1;
        }
        // Start at a line when one begins within the first 4 KiB.
        let rest = &clean[start..];
        let cut = rest
            .get(..4096.min(rest.len()))
            .and_then(|head| head.find('\n'))
            .map(|i| i + 1)
            .unwrap_or(0);
        (&clean[start + cut..], true)
    } else {
        (clean.as_str(), false)
    };
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let body = encoder
        .write_all(kept.as_bytes())
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    Packed {
        body,
        size: kept.len() as i64,
        truncated,
    }
}

/// The text of a stored transcript; a body that does not inflate says so.
pub fn unpack(body: &[u8]) -> String {
    let mut text = String::new();
    match DeflateDecoder::new(body)
        .take(2 * MAX_BYTES as u64)
        .read_to_string(&mut text)
    {
        Ok(_) => text,
        Err(e) => format!("(the stored transcript cannot be read: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_the_rest_kept() {
        let text = "cloning https://x-access-token:ghs_abcdefghijklmnop1234@github.com/o/r\n\
                    token ghp_ABCDEFGHIJKLMNOPQRSTUVWX used\n\
                    OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuv\n\
                    Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def\n\
                    -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----\n\
                    the run-specific value hunter22secret is here\n\
                    edited CHANGES.md";
        let out = redact(text, &["hunter22secret"]);
        for secret in [
            "ghs_abcdefghijklmnop1234",
            "ghp_ABCDEFGHIJKLMNOPQRSTUVWX",
            "sk-proj-abcdefghijklmnopqrstuv",
            "eyJhbGciOiJIUzI1NiJ9",
            "b3BlbnNzaC1rZXk",
            "hunter22secret",
        ] {
            assert!(!out.contains(secret), "{secret} left in:\n{out}");
        }
        assert!(
            out.contains("cloning https://x-access-token:[redacted]"),
            "{out}"
        );
        assert!(out.contains("OPENAI_API_KEY=[redacted]"), "{out}");
        assert!(out.contains("edited CHANGES.md"), "{out}");
    }

    #[test]
    fn the_end_is_kept_compressed_and_comes_back() {
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        let packed = pack(&text, &[], 64 * 1024);
        assert!(packed.truncated);
        assert!(
            packed.body.len() < 64 * 1024 / 2,
            "compressed: {}",
            packed.body.len()
        );
        let back = unpack(&packed.body);
        assert_eq!(back.len() as i64, packed.size);
        assert!(back.len() <= 64 * 1024);
        assert!(
            back.starts_with("line "),
            "starts at a line: {:?}",
            &back[..20]
        );
        assert!(back.ends_with("line 49999\n"));
        let small = pack("short", &[], MAX_BYTES);
        assert!(!small.truncated);
        assert_eq!(unpack(&small.body), "short");
        assert!(unpack(b"not deflate").contains("cannot be read"));
    }
}

//! Names derived from GitHub identities: namespaces, run ids, branches.
//!
//! Invariants: every name is a valid DNS-1123 label (lowercase alphanumerics and
//! `-`, starting and ending with an alphanumeric, at most 63 characters), is
//! stable for the same input, and carries a hash of the exact identity so two
//! different issues never share a name, however their owner and repo names look.

use sha2::{Digest, Sha256};

/// Kubernetes limit for a DNS-1123 label (namespace names).
pub const MAX_LABEL_LEN: usize = 63;
const HASH_LEN: usize = 10;

fn short_hash(input: &str, len: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    hex::encode(digest)[..len].to_string()
}

/// Lowercases and replaces every run of characters outside `[a-z0-9]` with one `-`.
fn slug(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Namespace for one issue: `<owner>-<repo>-<issue>-<hash>`, the readable part
/// shortened when needed. GitHub names are case-insensitive, so the hash is taken
/// over the lowercased `owner/repo#issue`.
pub fn namespace_for_issue(repo_full_name: &str, issue: u64) -> String {
    let identity = format!("{}#{issue}", repo_full_name.to_lowercase());
    let suffix = format!("-{issue}-{}", short_hash(&identity, HASH_LEN));
    let budget = MAX_LABEL_LEN - suffix.len();
    let mut readable = slug(repo_full_name);
    readable.truncate(budget);
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        format!("issue{suffix}")
    } else {
        format!("{readable}{suffix}")
    }
}

/// Whether `name` has the shape [`namespace_for_issue`] gives:
/// `<readable>-<issue>-<10 hex>`. Namespaces of other shapes (`kube-system`,
/// `default`, a team's own) are never issueops'.
pub fn is_issue_namespace(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (Some(hash), Some(issue), Some(readable)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_dns1123_label(name)
        && !readable.is_empty()
        && hash.len() == HASH_LEN
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !issue.is_empty()
        && !issue.starts_with('0')
        && issue.bytes().all(|b| b.is_ascii_digit())
}

/// Run id for the trigger that arrived as `delivery_id`: deterministic, so a
/// redelivery or a replay of the inbox maps to the same run.
pub fn run_id_for_delivery(delivery_id: &str) -> String {
    format!("r{}", short_hash(delivery_id, 12))
}

/// Branch the agent works on for an issue.
pub fn branch_for_issue(issue: u64) -> String {
    format!("issueops/issue-{issue}")
}

/// The issue a run branch belongs to (`issueops/issue-<n>`), if it is one.
pub fn issue_for_branch(branch: &str) -> Option<u64> {
    let n = branch.strip_prefix("issueops/issue-")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
        return None;
    }
    n.parse().ok()
}

/// True when `name` is a valid DNS-1123 label.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_namespaces_are_recognised_by_shape() {
        for (repo, n) in [("Codertocat/Hello-World", 1), ("a/b", 123456), ("-/-", 7)] {
            let ns = namespace_for_issue(repo, n);
            assert!(is_issue_namespace(&ns), "{ns}");
        }
        for other in [
            "kube-system",
            "default",
            "team-a-1-xyz",
            "x-1-012345678",
            "x-01-0123456789",
        ] {
            assert!(!is_issue_namespace(other), "{other}");
        }
    }

    #[test]
    fn namespace_is_readable_and_stable() {
        let a = namespace_for_issue("Codertocat/Hello-World", 1);
        assert!(a.starts_with("codertocat-hello-world-1-"), "{a}");
        assert_eq!(a, namespace_for_issue("Codertocat/Hello-World", 1));
        assert_eq!(a, namespace_for_issue("codertocat/hello-world", 1));
        assert!(is_dns1123_label(&a));
    }

    #[test]
    fn names_that_slug_alike_do_not_collide() {
        let a = namespace_for_issue("a-b/c", 1);
        let b = namespace_for_issue("a/b-c", 1);
        let c = namespace_for_issue("a/b.c", 1);
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_ne!(
            namespace_for_issue("a/b", 1),
            namespace_for_issue("a/b", 11)
        );
    }

    #[test]
    fn long_and_odd_names_stay_valid() {
        let long_owner = "O".repeat(39);
        let long_repo = "r_e.p-o".repeat(15);
        for (repo, issue) in [
            (format!("{long_owner}/{long_repo}"), u64::MAX),
            ("---/___".to_string(), 7),
            ("ÜñîçØdé/日本語".to_string(), 3),
            ("x/-leading".to_string(), 0),
        ] {
            let ns = namespace_for_issue(&repo, issue);
            assert!(is_dns1123_label(&ns), "{repo:?} -> {ns:?}");
        }
    }

    #[test]
    fn run_ids_are_deterministic_per_delivery() {
        assert_eq!(run_id_for_delivery("abc"), run_id_for_delivery("abc"));
        assert_ne!(run_id_for_delivery("abc"), run_id_for_delivery("abd"));
        assert!(is_dns1123_label(&run_id_for_delivery("abc")));
    }

    #[test]
    fn label_check_rejects_invalid_names() {
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
    }
}

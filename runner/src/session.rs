//! The agent's home, kept from run to run of one issue (a volume of the issue
//! namespace), so a revise run resumes the session the dev run left. The
//! runner only notes which runs used it; the agent keeps its own files there.

use crate::spec::Mode;
use std::path::Path;

const LEDGER: &str = ".issueops-runs";

/// Records the run in the home's ledger; returns whether an earlier run had
/// left a session there.
pub fn begin(home: &Path, run_id: &str, mode: Mode) -> std::io::Result<bool> {
    std::fs::create_dir_all(home)?;
    let ledger = home.join(LEDGER);
    let earlier = std::fs::read_to_string(&ledger).unwrap_or_default();
    let resumed = earlier.lines().any(|l| !l.trim().is_empty());
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ledger)?;
    writeln!(f, "{run_id} {}", mode.as_str())?;
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_run_sees_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        assert!(!begin(&home, "a", Mode::Dev).unwrap());
        assert!(begin(&home, "b", Mode::Revise).unwrap());
    }
}

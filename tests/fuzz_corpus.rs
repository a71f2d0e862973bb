//! Every input of the committed fuzz corpus (`fuzz/corpus/<target>/`,
//! grown by `scripts/fuzz`) through the same checks the fuzz targets run, on
//! stable: what a fuzzer once found stays fixed.

use std::path::Path;

include!("../fuzz/checks.rs");

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{} fails the {target} checks",
            path.display()
        );
        inputs += 1;
    }
    // The seeds alone are more than this: an emptied corpus is a failure.
    assert!(inputs >= 10, "{inputs} inputs in {}", dir.display());
}

#[test]
fn the_webhook_payload_corpus_passes_the_gateway_and_decision_checks() {
    replay("webhook_payload", webhook_payload);
}

#[test]
fn the_state_repo_file_corpus_passes_the_parse_and_scope_checks() {
    replay("state_repo_file", state_repo_file);
}

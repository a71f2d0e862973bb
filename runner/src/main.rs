//! `issueops-runner`: the agent image's entrypoint. Reads the run from its
//! environment, runs it, writes the result to the termination message file
//! and exits 0 (pull request opened or updated), 3 (no changes) or 1 (failed);
//! 2 when the environment itself is wrong.

use issueops_runner::result::RunResult;
use issueops_runner::spec::RunSpec;
use std::process::ExitCode;

fn write_result(path: &std::path::Path, result: &RunResult) {
    let message = result.to_message();
    // The log carries it too, for `kubectl logs` and when the file is not writable.
    println!("issueops-result {message}");
    if let Err(e) = std::fs::write(path, &message) {
        eprintln!("cannot write the result to {}: {e}", path.display());
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
    let spec = match RunSpec::from_env() {
        Ok(spec) => spec,
        Err(e) => {
            let path = std::env::var("ISSUEOPS_RESULT_FILE")
                .unwrap_or_else(|_| "/dev/termination-log".into());
            write_result(
                std::path::Path::new(&path),
                &RunResult::failed(format!("the runner's environment is wrong: {e}")),
            );
            return ExitCode::from(2);
        }
    };
    tracing::info!(repo = %spec.repo, issue = spec.issue, run_id = %spec.run_id, mode = spec.mode.as_str(), "run starts");
    let result = issueops_runner::execute(&spec).await;
    tracing::info!(outcome = ?result.outcome, pr = ?result.pr_number, "run ends");
    write_result(&spec.result_file, &result);
    ExitCode::from(result.outcome.exit_code())
}

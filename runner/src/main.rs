//! `issueops-runner STEP`: the agent image's entrypoint, run once per
//! container of the Job's pod with `clone`, `agent` or `publish`. Reads the
//! run from its environment and runs the step. A step that ends the run
//! writes the result to the termination message file and exits 0 (pull
//! request opened or updated), 3 (no changes) or 1 (failed); 2 when the
//! environment or the step is wrong. A step that hands on exits 0 and
//! writes no result.

use issueops_runner::result::RunResult;
use issueops_runner::spec::RunSpec;
use issueops_runner::{Step, StepEnd};
use std::process::ExitCode;

fn write_result(path: &std::path::Path, result: &RunResult) {
    let message = result.to_message();
    // The log carries it too, for `kubectl logs` and when the file is not writable.
    println!("issueops-result {message}");
    if let Err(e) = std::fs::write(path, &message) {
        eprintln!("cannot write the result to {}: {e}", path.display());
    }
}

fn wrong(reason: String) -> ExitCode {
    let path =
        std::env::var("ISSUEOPS_RESULT_FILE").unwrap_or_else(|_| "/dev/termination-log".into());
    write_result(std::path::Path::new(&path), &RunResult::failed(reason));
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
    let arg = std::env::args().nth(1).unwrap_or_default();
    let Some(step) = Step::parse(&arg) else {
        return wrong(format!(
            "the runner's step {arg:?} is not one of clone, agent, publish (the Job template gives it as the container's argument)"
        ));
    };
    let spec = match RunSpec::from_env() {
        Ok(spec) => spec,
        Err(e) => return wrong(format!("the runner's environment is wrong: {e}")),
    };
    tracing::info!(step = step.name(), repo = %spec.repo, issue = spec.issue, run_id = %spec.run_id, mode = spec.mode.as_str(), "step starts");
    let end = issueops_runner::execute(step, &spec).await;
    match &end {
        StepEnd::Continue => tracing::info!(step = step.name(), "step done"),
        StepEnd::Done(result) => {
            tracing::info!(step = step.name(), outcome = ?result.outcome, pr = ?result.pr_number, "run ends");
            write_result(&spec.result_file, result);
        }
    }
    ExitCode::from(end.exit_code())
}

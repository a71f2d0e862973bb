//! The agent image cannot be built here (no container engine), so what can be
//! checked is checked: the Dockerfile builds the runner this workspace ships,
//! runs it as the entrypoint, as the user the Job's security context demands,
//! with a pinned agent CLI.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn the_agent_image_runs_the_runner_as_the_jobs_user_with_a_pinned_agent() {
    let dockerfile = read("agent/Dockerfile");
    let job = read("manifests-templates/run/job.yaml");
    let runner = read("runner/Cargo.toml");
    assert!(runner.contains("name = \"issueops-runner\""));
    assert!(dockerfile.contains("cargo build --release --locked -p issueops-runner"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/issueops-runner"]"#));
    // The Job runs as 65532 with runAsNonRoot; the image must agree.
    assert!(job.contains("runAsUser: 65532") && dockerfile.contains("USER 65532:65532"));
    let version = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG CODEX_VERSION="))
        .expect("the Codex CLI version is an ARG");
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "pinned to an exact version, not {version:?}"
    );
    assert!(dockerfile.contains("\"@openai/codex@${CODEX_VERSION}\""));
    // git for the agent; the image's Rust toolchain matches the workspace's.
    assert!(dockerfile.contains(" git "));
    assert!(dockerfile.contains("FROM rust:1.95-"));
}

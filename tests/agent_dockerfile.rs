//! What `agent/Dockerfile` says, read as text: it builds the runner this
//! workspace ships, makes it the entrypoint, runs as the user the Job's
//! security context demands, and pins the agent CLI. This reads the file,
//! as a quick check of what its default build means; `scripts/cluster up`
//! builds the same file with buildah (the test build's arguments) and the
//! gate runs that image on the real node.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// Catches a Dockerfile whose user no longer matches the Job's (`USER
/// 65532:65532` made `USER 0`), whose entrypoint is not the runner, or whose
/// agent CLI floats (`ARG CODEX_VERSION=latest`).
#[test]
fn the_dockerfile_names_the_runner_as_entrypoint_the_jobs_user_and_a_pinned_agent() {
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

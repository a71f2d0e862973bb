//! Every rendered manifest passes strict schema validation for Kubernetes 1.37
//! (`kubernetes-validate --strict -k 1.37.0`, schemas carried offline by the
//! PyPI package; `.ci/run` installs it).

mod common;

use common::fixture;
use issueops_control_plane::decide::{decide, Decision};
use issueops_control_plane::plan_run;
use issueops_control_plane::render::Templates;
use issueops_core::Config;
use std::process::Command;

fn payload(file: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&fixture(file)).unwrap();
    v["label"]["name"] = "run:dev".into();
    edit(&mut v);
    v.to_string()
}

#[test]
fn rendered_manifests_pass_strict_validation_for_kubernetes_1_36() {
    let mut tuned = Config::default();
    tuned.job.image = "registry.example.org/agents/dev:2026.11".into();
    tuned.job.cpu_limit = "1500m".into();
    tuned.quota.pods = "10".into();
    let cases = [
        (
            Config::default(),
            payload("issues/labeled.payload.json", |_| {}),
        ),
        (
            tuned,
            payload("issues/labeled.with-organization.payload.json", |_| {}),
        ),
        (
            Config::default(),
            payload("issues/labeled.payload.json", |v| {
                v["issue"]["title"] =
                    "\"}\n---\nkind: Secret\n{{ x }}: 'quoted' # not a comment".into();
                v["repository"]["full_name"] =
                    format!("{}/{}", "O".repeat(39), "r_e.p".repeat(20)).into();
                v["issue"]["number"] = 987654321.into();
                v["sender"]["login"] = "weird-login[bot]".into();
            }),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (config, body)) in cases.iter().enumerate() {
        let Decision::StartRun { event, mode } = decide(config, "issues", body, false) else {
            panic!("case {i} is not a trigger");
        };
        let plan = plan_run(
            config,
            &Templates::embedded(),
            &format!("delivery-{i}"),
            &event,
            mode,
            "issueops/issue-1",
            (i == 2).then_some(17),
        )
        .unwrap();
        assert_eq!(plan.files.len(), 10);
        for (j, f) in plan.files.iter().enumerate() {
            let path = dir.path().join(format!("{i}-{j}.yaml"));
            std::fs::write(&path, &f.content).unwrap();
            files.push(path);
        }
    }
    validate(&files, files.len());
}

// deploy/ (Kustomize and Helm, rendered) is validated the same way in
// tests/deploy_rbac.rs, where the tools that render it are at hand.

/// Runs kubernetes-validate over `files` and expects `objects` objects to pass.
fn validate(files: &[std::path::PathBuf], objects: usize) {
    let program =
        std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let out = Command::new(&program)
        .args(["--strict", "-k", "1.37.0"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install it with `pip install kubernetes-validate==1.37.0`"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "validation failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches("passed").count() + stderr.matches("passed").count(),
        objects,
        "{stdout}{stderr}"
    );
}

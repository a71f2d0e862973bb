//! docs/install.md, followed as written against the test cluster's real API
//! server with the real kubectl, kustomize and helm (scripts/deploy-tools):
//! every block marked `# test: run` runs as is, every `# test: dry-run`
//! block with `--dry-run=server` on its writes. The install it makes is
//! checked (the config edited in, the image replaced, the optional agent key
//! wired), and its uninstall leaves nothing of issueops' own.

mod common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NAMESPACE: &str = "issueops-system";

/// The guide's tested blocks, in order: (`run` or `dry-run`, the path it
/// belongs to (`kustomize`, `helm`, or empty for both), the commands).
fn blocks(guide: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = guide;
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + 6..];
        let end = body.find("\n```").expect("a closed code block");
        let block = &body[..end];
        if let Some(tag) = block
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# test: "))
        {
            let (mode, path) = tag.trim().split_once(' ').unwrap_or((tag.trim(), ""));
            out.push((mode.to_string(), path.to_string(), block.to_string()));
        }
        rest = &body[end + 4..];
    }
    out
}

/// A `dry-run` block: writes become server-side dry runs; waiting for what
/// a dry run never makes is left out.
fn dry(block: &str) -> String {
    let mut out = String::new();
    let mut command = String::new();
    for line in block.lines() {
        command.push_str(line);
        if line.ends_with('\\') {
            command.push('\n');
            continue;
        }
        let c = std::mem::take(&mut command);
        let words: Vec<&str> = c.split_whitespace().collect();
        let verb = words
            .iter()
            .find(|w| !(w.starts_with('-') || **w == "kubectl" || **w == NAMESPACE))
            .copied()
            .unwrap_or_default();
        let writes = (c.starts_with("kubectl ") && ["apply", "create", "delete"].contains(&verb))
            || c.starts_with("helm upgrade")
            || c.starts_with("helm install");
        if c.starts_with("kubectl ")
            && ["wait", "rollout", "logs", "exec", "port-forward"].contains(&verb)
        {
            continue;
        }
        out.push_str(&c);
        if writes {
            out.push_str(" --dry-run=server");
        }
        out.push('\n');
    }
    out
}

fn bash(dir: &Path, tools: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                tools.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KUBECONFIG", common::real_cluster().kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docs/install.md:\n{script}\nfailed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn namespace_gone(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    common::wait_for(
        "issueops-system to be gone",
        Duration::from_secs(120),
        || async {
            namespaces
                .get_opt(NAMESPACE)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[test]
fn the_guide_marks_its_commands_and_dry_runs_every_write() {
    let guide = include_str!("../docs/install.md");
    let found = blocks(guide);
    assert!(found.len() >= 8, "{found:?}");
    assert!(
        found
            .iter()
            .all(|(m, p, _)| ["run", "dry-run"].contains(&m.as_str())
                && ["", "kustomize", "helm"].contains(&p.as_str())),
        "{found:?}"
    );
    assert_eq!(
        dry("kubectl apply -k x\nkubectl -n issueops-system wait --for=condition=complete job/j\nkubectl -n issueops-system create secret generic s \\\n  --from-literal=a=b\nhelm upgrade --install i c -n ns\n"),
        "kubectl apply -k x --dry-run=server\nkubectl -n issueops-system create secret generic s \\\n  --from-literal=a=b --dry-run=server\nhelm upgrade --install i c -n ns --dry-run=server\n"
    );
}

#[tokio::test]
async fn following_the_install_guide_installs_and_uninstalls_issueops() {
    let tools = std::path::PathBuf::from(std::env::var("ISSUEOPS_TEST_DEPLOY_TOOLS").expect(
        "ISSUEOPS_TEST_DEPLOY_TOOLS is set by scripts/test (eval \"$(scripts/deploy-tools)\")",
    ));
    let client = kube::Client::try_from(common::real_config().await).unwrap();
    // A namespace left by an earlier, interrupted run.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NAMESPACE).await.unwrap().is_some() {
        let _ = namespaces.delete(NAMESPACE, &Default::default()).await;
        namespace_gone(&client).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo.join("deploy"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    // What `issueops github-app create --kubernetes-secret` writes (its own
    // test checks that shape against the fake GitHub).
    let pem = common::rsa_key();
    let secret = |name: &str, data: serde_json::Value| {
        serde_yaml::to_string(&serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": { "name": name, "namespace": NAMESPACE },
            "stringData": data,
        }))
        .unwrap()
    };
    std::fs::write(
        dir.path().join("github-app-secrets.yaml"),
        [
            secret(
                "issueops-github-app",
                serde_json::json!({ "app-id": "4242", "private-key.pem": pem }),
            ),
            secret(
                "issueops-webhook",
                serde_json::json!({ "secrets": "e340154128314309424b7c8e90325147d99fdafa" }),
            ),
            secret(
                "issueops-ui-oauth",
                serde_json::json!({ "client-secret": "1726be1638095a19edd134c77bde3aa2ece1e5d8" }),
            ),
        ]
        .join("---\n"),
    )
    .unwrap();

    let guide = std::fs::read_to_string(repo.join("docs/install.md")).unwrap();
    for path in ["kustomize", "helm"] {
        for (mode, _, block) in blocks(&guide)
            .into_iter()
            .filter(|(_, p, _)| p.is_empty() || p == path)
        {
            let script = if mode == "dry-run" {
                dry(&block)
            } else {
                block.clone()
            };
            bash(dir.path(), &tools, &script);
            if block.contains("kubectl apply -k my-issueops") {
                // The install as the guide made it: the config edited in, the
                // image replaced, the agent key wired.
                let deployment = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
                    .get("issueops")
                    .await
                    .unwrap();
                let pod = deployment.spec.template.spec.unwrap();
                let container = &pod.containers[0];
                assert_eq!(
                    container.image.as_deref(),
                    Some("registry.example.com/issueops/issueops:0.1.0")
                );
                let env: Vec<String> = container
                    .env
                    .clone()
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                assert!(
                    env.contains(&"ISSUEOPS_AGENT_API_KEY_FILE".to_string()),
                    "{env:?}"
                );
                let config = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
                    .get("issueops-config")
                    .await
                    .unwrap();
                let file = &config.data.unwrap()["issueops.yaml"];
                assert!(
                    file.contains("registry.example.com/issueops/agent:0.1.0"),
                    "{file}"
                );
                let parsed: issueops_core::Config = serde_yaml::from_str(file).unwrap();
                assert_eq!(parsed.repos, ["my-org/my-repo"]);
            }
        }
        // What the guide had people write renders to manifests valid for
        // Kubernetes 1.37 under strict validation (its Kustomize overlay, its
        // Helm values in both modes).
        let renders: Vec<Vec<String>> = match path {
            "kustomize" => vec![vec![
                tools.join("kustomize").display().to_string(),
                "build".into(),
                "my-issueops".into(),
            ]],
            _ => ["embedded", "production"]
                .iter()
                .map(|mode| {
                    [
                        tools.join("helm").display().to_string().as_str(),
                        "template",
                        "issueops",
                        "deploy/helm/issueops",
                        "-n",
                        NAMESPACE,
                        "-f",
                        "my-values.yaml",
                        "--set",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([format!("mode={mode}")])
                    .collect()
                })
                .collect(),
        };
        for argv in renders {
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{argv:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = dir.path().join("rendered.yaml");
            std::fs::write(&file, &out.stdout).unwrap();
            let valid = Command::new("kubernetes-validate")
                .args(["--strict", "-k", "1.37.0", "--quiet"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                valid.status.success(),
                "{argv:?}: {}{}",
                String::from_utf8_lossy(&valid.stdout),
                String::from_utf8_lossy(&valid.stderr)
            );
        }
        // The uninstall block ran last: issueops' own objects are gone.
        namespace_gone(&client).await;
    }
    let rendered = Command::new(tools.join("helm"))
        .args(["template", "issueops"])
        .arg(repo.join("deploy/helm/issueops"))
        .args(["-n", NAMESPACE, "--set", "mode=production"])
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.contains("helm.sh/hook: pre-install,pre-upgrade"),
        "an upgrade migrates before the new services start"
    );
}

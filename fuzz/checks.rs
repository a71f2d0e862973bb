// The properties the fuzz targets check, shared by `fuzz_targets/*.rs`
// (cargo fuzz, nightly) and `tests/fuzz_corpus.rs` (stable, every corpus
// file on every `cargo test`). Included with `include!`, so it names its
// crates in full.

/// A stranger's bytes as a webhook body: the gateway's decode, then the
/// control plane's decision on them as either event we act on. Neither may
/// panic; a run's namespace must be one the scope check accepts in the
/// folder the state repo layout gives it.
pub fn webhook_payload(data: &[u8]) {
    let decoded = issueops_gateway::router::decode(data);
    if decoded.is_ok() {
        // Built as a tree, it is an object. A number beyond f64 is valid JSON
        // (kept as received; nothing downstream builds the payload as a tree)
        // but cannot be built: the one error allowed.
        match serde_json::from_slice::<serde_json::Value>(data) {
            Ok(value) => assert!(value.is_object(), "a decoded body is a JSON object"),
            Err(e) => assert!(
                e.to_string().starts_with("number out of range"),
                "a decoded body is not JSON: {e}"
            ),
        }
    }
    let text = String::from_utf8_lossy(data);
    let config = issueops_core::config::Config::default();
    for event in ["issues", "pull_request_review"] {
        let decision = issueops_control_plane::decide::decide(&config, event, &text, false);
        if let issueops_control_plane::decide::Decision::StartRun { event, .. } = decision {
            let namespace = issueops_core::naming::namespace_for_issue(
                &event.repository.full_name,
                event.issue.number,
            );
            assert!(
                issueops_core::naming::is_issue_namespace(&namespace),
                "{namespace:?} is not an issue namespace"
            );
            let path = format!("{}/job.yaml", issueops_core::state_repo::issue_dir(&namespace));
            assert_eq!(
                issueops_core::state_repo::namespace_of(&path),
                Ok(namespace.as_str())
            );
        }
    }
}

/// A state-repo file: the first line is its path, the rest its content.
/// Parsing and the scope check may refuse but never panic; what they admit
/// lies in the folder of the namespace it names, with this install's labels.
pub fn state_repo_file(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let path = String::from_utf8_lossy(&data[..split]);
    let content = data.get(split + 1..).unwrap_or_default();
    let folder = issueops_core::state_repo::namespace_of(&path);
    if let Ok(namespace) = folder {
        assert!(issueops_core::naming::is_issue_namespace(namespace));
    }
    let Ok(object) = issueops_reconciler::desired::parse(&path, content) else {
        return;
    };
    let kinds: Vec<String> = issueops_core::config::ClusterConfig::default().kinds;
    let scope = issueops_reconciler::desired::Scope::new("default", &kinds);
    for delete in [false, true] {
        if scope.admit(&object, delete).is_ok() {
            let namespace = object.namespace.as_deref().unwrap_or(&object.name);
            assert_eq!(folder, Ok(namespace), "admitted outside its folder");
            assert_eq!(object.label(issueops_core::INSTANCE_LABEL), Some("default"));
            assert!(kinds.contains(&object.resource.kind));
        }
    }
}

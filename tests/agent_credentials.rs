//! Agent credentials: a repo-scoped installation token written as a Secret in
//! the run's namespace, refreshed before expiry, deleted with the run — and
//! never found in the state repo history, the logs or the audit table.

mod common;

use common::{labeled, set_job_status, Db, Harness, REPO};
use issueops_core::naming;
use issueops_reconciler::observe::observe_jobs;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::io::Write;
use std::sync::{Arc, Mutex};

const TOKEN_ONE: &str = "ghs_FIRSTsecretTOKENvalue0001";
const TOKEN_TWO: &str = "ghs_SECONDsecretTOKENvalue002";
/// The agents' model API key, handed to the reconciler by the operator.
const API_KEY: &str = "sk-agentMODELapiKEYvalue0003";
/// 2030-01-01T00:00:00Z
const NOW: i64 = 1_893_456_000;

/// Collects every log line the test's components write.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_agent_token_lives_only_in_its_namespace_secret() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = common::fake_github_app(&[
        (TOKEN_ONE, "2030-01-01T00:10:00Z"),
        (TOKEN_TWO, "2030-01-01T01:00:00Z"),
    ])
    .await;
    let github = common::github_app_client(&server);
    let mut h = Harness::start(Db::Sqlite).await;
    h.reconciler =
        issueops_reconciler::Reconciler::new(h.store.clone(), h.repo.clone(), h.client.clone())
            .with_credentials(github, "issueops-github-token")
            .with_agent_api_key(issueops_reconciler::credentials::AgentApiKey(
                API_KEY.into(),
            ));
    h.post_signed(
        "issues",
        "cred-1",
        &labeled("issues/labeled.payload.json", "run:dev"),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    let ns = naming::namespace_for_issue(REPO, 1);
    let run = naming::run_id_for_delivery("cred-1");
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &ns);
    let token_in_secret =
        |s: Secret| String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap();

    // Written before the Job was applied, so the pod never starts without it;
    // the model API key rides along for the agent (the runner's
    // ISSUEOPS_AGENT_API_KEY_FILE).
    let written = secrets.get("issueops-github-token").await.unwrap();
    assert_eq!(
        written.data.as_ref().unwrap()["agent-api-key"].0,
        API_KEY.as_bytes()
    );
    assert_eq!(token_in_secret(written), TOKEN_ONE);
    let audit = h.audit().await;
    let position = |kind: &str, object: &str| {
        audit
            .iter()
            .position(|r| {
                r.kind == kind && r.object.as_deref().is_some_and(|o| o.starts_with(object))
            })
            .unwrap_or_else(|| panic!("no {kind} row for {object}"))
    };
    assert!(position("credentials", "Secret/") < position("apply", "Job/"));
    // Ten minutes left: refreshed before it expires.
    let refreshed = h.reconciler.refresh_credentials(NOW).await.unwrap();
    assert_eq!(refreshed.minted, vec![ns.clone()]);
    let secret = secrets.get("issueops-github-token").await.unwrap();
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["issueops.dev/run-id"],
        run
    );
    assert_eq!(token_in_secret(secret), TOKEN_TWO);
    // An hour left: nothing to do.
    assert!(h
        .reconciler
        .refresh_credentials(NOW)
        .await
        .unwrap()
        .minted
        .is_empty());

    // The run ends: the Secret goes with it.
    set_job_status(&h.client, &ns, &run, "succeeded").await;
    observe_jobs(&h.client, &h.store, issueops_core::DEFAULT_INSTANCE)
        .await
        .unwrap();
    let done = h.reconciler.refresh_credentials(NOW).await.unwrap();
    assert_eq!(done.deleted, vec![ns.clone()]);
    assert!(secrets
        .get_opt("issueops-github-token")
        .await
        .unwrap()
        .is_none());

    // Scan the state repo history, the audit table and the logs.
    let mut scanned = 0;
    for sha in h.repo.log().unwrap() {
        let info = h.repo.commit_info(&sha).unwrap();
        let mut text = format!("{}{:?}", info.summary, info.trailers);
        for content in h.repo.files_at(&sha).unwrap().values() {
            text.push_str(&String::from_utf8_lossy(content));
        }
        for token in [TOKEN_ONE, TOKEN_TWO, API_KEY] {
            assert!(!text.contains(token), "token in state repo commit {sha}");
        }
        assert!(
            text.contains("issueops-github-token"),
            "the Job names the Secret"
        );
        scanned += 1;
    }
    assert!(scanned > 0);
    let audit = serde_json::to_string(&h.audit().await).unwrap();
    assert!(
        audit.contains("\"kind\":\"credentials\""),
        "writing the Secret is audited"
    );
    let logs_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs_text.contains("agent token written"),
        "logs were captured"
    );
    for token in [TOKEN_ONE, TOKEN_TWO, API_KEY] {
        assert!(!audit.contains(token), "token in the audit table");
        assert!(!logs_text.contains(token), "token in the logs");
    }
    h.finish().await;
}

//! Scale scenarios (issue 11) of the regression gate: drift made by another
//! field manager, found and corrected by the served reconciler's resync from
//! its watched inventory.

use crate::{Env, Evidence, Issues};
use issueops_core::naming;
use issueops_core::state_repo::issue_dir;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// `kubectl edit` on a held issue's quota: a value issueops applied changes
/// hands (field manager `kubectl-edit`); serve's next resync puts it back
/// and audits which field and who. The object carries the blob id of its
/// state-repo file, so a reviewer can see what was applied.
pub async fn kubectl_edit_drift_corrected_by_resync(env: &Env, issues: &Issues) -> Evidence {
    let namespace = naming::namespace_for_issue(crate::common::REPO, issues.held[0]);
    let quotas: Api<ResourceQuota> = Api::namespaced(env.kube.clone(), &namespace);
    let before = quotas.get("issueops-quota").await.unwrap();
    let want = before.spec.clone().unwrap().hard.unwrap()["pods"].0.clone();
    let digest = before
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .get(issueops_core::DIGEST_ANNOTATION)
        .cloned()
        .expect("applied objects carry their file's blob id");
    let head = env.repo.head().unwrap().unwrap();
    let files = env.repo.files_at(&head).unwrap();
    let (path, content) = files
        .iter()
        .find(|(p, _)| p.starts_with(&format!("{}/", issue_dir(&namespace))) && p.contains("quota"))
        .expect("the quota's file");
    assert_eq!(
        issueops_core::state_repo::blob_id(content).to_string(),
        digest,
        "{path}"
    );
    let audit_before = env.store.audit_rows().await.unwrap().len();
    quotas
        .patch(
            "issueops-quota",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({ "spec": { "hard": { "pods": "99" } } })),
        )
        .await
        .unwrap();
    let reference = format!("ResourceQuota/{namespace}/issueops-quota");
    let row = env
        .wait_for("the resync corrects the edit", || async {
            env.store
                .audit_rows()
                .await
                .unwrap()
                .into_iter()
                .skip(audit_before)
                .find(|r| {
                    r.outcome == "applied"
                        && r.object.as_deref() == Some(reference.as_str())
                        && r.detail.contains("kubectl-edit")
                })
        })
        .await;
    let after = quotas.get("issueops-quota").await.unwrap();
    assert_eq!(after.spec.unwrap().hard.unwrap()["pods"].0, want);
    let mut e = Evidence::new();
    e.insert("object".into(), reference.into());
    e.insert("digest".into(), digest.into());
    e.insert("file".into(), path.clone().into());
    e.insert("correction_audit_id".into(), row.id.into());
    e.insert("detail".into(), row.detail.into());
    e
}

//! How to change the cluster: server-side apply and guarded delete, with retries.
//!
//! Invariants: one field manager (`issueops`) for every apply; an apply never
//! takes over an object that exists without our labels; a delete only ever
//! removes an object that carries our managed-by and instance labels, and only
//! the very object (uid) it looked at.

use crate::desired::DesiredObject;
use issueops_core::retry::{self, Retryable};
use issueops_core::{
    DEFAULT_INSTANCE, DIGEST_ANNOTATION, FIELD_MANAGER, INSTANCE_LABEL, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::Client;
use std::future::Future;
use std::time::Duration;

/// Attempts per API call before an error is reported.
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    AlreadyAbsent,
    /// The object exists but is not ours: left alone.
    NotManaged,
}

fn api(client: &Client, obj: &DesiredObject) -> Api<DynamicObject> {
    match &obj.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &obj.resource),
        None => Api::all_with(client.clone(), &obj.resource),
    }
}

/// Whether an API error is worth retrying: conflicts, throttling, server
/// errors, and failures to reach the server at all.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 409 || status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails permanently, or runs out of attempts,
/// with the project's backoff policy (exponential, jitter).
pub async fn with_backoff<T, F, Fut>(what: &str, op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    op.retry(retry::policy(
        FIRST_BACKOFF,
        MAX_BACKOFF,
        (MAX_ATTEMPTS - 1) as usize,
    ))
    .when(is_transient)
    .notify(|e, pause| tracing::warn!(%what, error = %e, ?pause, "transient API error; retrying"))
    .await
    .inspect_err(|_| issueops_core::metrics::api_error("kubernetes"))
}

/// Whether `obj` carries the labels of install `instance`. An object from
/// before instance labels existed counts as the default install's.
pub fn is_ours(obj: &kube::core::ObjectMeta, instance: &str) -> bool {
    let labels = obj.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE)
        && label(INSTANCE_LABEL).unwrap_or(DEFAULT_INSTANCE) == instance
}

/// Why an apply did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The object exists and is not ours: server-side apply with force would
    /// take it over (and a later removal would delete it), so it is refused.
    #[error("{reference} already exists and is not managed by this issueops install ({owner}); refusing to take it over")]
    NotOurs { reference: String, owner: String },
}

/// Who an existing object seems to belong to, for the refusal message.
fn owner_of(meta: &kube::core::ObjectMeta) -> String {
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).cloned();
    match (label(MANAGED_BY_LABEL), label(INSTANCE_LABEL)) {
        (Some(m), Some(i)) if m == MANAGED_BY_VALUE => format!("issueops instance {i:?}"),
        (Some(m), _) => format!("managed by {m:?}"),
        (None, _) => {
            let managers: Vec<&str> = meta
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|f| f.manager.as_deref())
                .collect();
            if managers.is_empty() {
                "no managed-by label".into()
            } else {
                format!("no managed-by label; written by {}", managers.join(", "))
            }
        }
    }
}

/// Who owns `obj` when it exists in the cluster and is not ours.
pub async fn foreign_object(
    client: &Client,
    obj: &DesiredObject,
    instance: &str,
) -> Result<Option<String>, kube::Error> {
    let api = api(client, obj);
    let current = with_backoff(&obj.reference(), || api.get_opt(&obj.name)).await?;
    Ok(current
        .filter(|o| !is_ours(&o.metadata, instance))
        .map(|o| owner_of(&o.metadata)))
}

/// Who owns namespace `name` when it exists and is not ours; `None` when it
/// is ours or does not exist (then applying into it fails on its own).
pub async fn foreign_namespace(
    client: &Client,
    name: &str,
    instance: &str,
) -> Result<Option<String>, kube::Error> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let current = with_backoff(&format!("Namespace/{name}"), || api.get_opt(name)).await?;
    Ok(current
        .filter(|ns| !is_ours(&ns.metadata, instance))
        .map(|ns| owner_of(&ns.metadata)))
}

/// Server-side applies `obj`, taking ownership of the fields it sets. With
/// `check_owner` (an object issueops has not applied before) it first makes
/// sure the object does not already exist as someone else's.
pub async fn apply(
    client: &Client,
    obj: &DesiredObject,
    instance: &str,
    check_owner: bool,
) -> Result<DynamicObject, ApplyError> {
    let api = api(client, obj);
    if check_owner {
        if let Some(current) = with_backoff(&obj.reference(), || api.get_opt(&obj.name)).await? {
            if !is_ours(&current.metadata, instance) {
                return Err(ApplyError::NotOurs {
                    reference: obj.reference(),
                    owner: owner_of(&current.metadata),
                });
            }
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut body = obj.object.clone();
    // Server-managed fields never belong in an apply body.
    body.metadata.resource_version = None;
    body.metadata.managed_fields = None;
    body.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(DIGEST_ANNOTATION.into(), obj.digest.to_string());
    let patch = Patch::Apply(&body);
    Ok(with_backoff(&obj.reference(), || api.patch(&obj.name, &params, &patch)).await?)
}

/// Deletes `obj` if it exists and is ours, with the uid it had when we looked
/// as a precondition: an object re-created meanwhile by someone else survives.
pub async fn delete(
    client: &Client,
    obj: &DesiredObject,
    instance: &str,
) -> Result<DeleteOutcome, kube::Error> {
    let api = api(client, obj);
    let current = with_backoff(&obj.reference(), || api.get_opt(&obj.name)).await?;
    let Some(current) = current else {
        return Ok(DeleteOutcome::AlreadyAbsent);
    };
    if !is_ours(&current.metadata, instance) {
        return Ok(DeleteOutcome::NotManaged);
    }
    let mut params = DeleteParams::background();
    if let Some(uid) = current.metadata.uid.clone() {
        params = params.preconditions(kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        });
    }
    match with_backoff(&obj.reference(), || api.delete(&obj.name, &params)).await {
        Ok(_) => Ok(DeleteOutcome::Deleted),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(DeleteOutcome::AlreadyAbsent),
        // The uid changed: the object we looked at is gone already.
        Err(kube::Error::Api(s)) if s.code == 409 && s.message.contains("Precondition") => {
            Ok(DeleteOutcome::AlreadyAbsent)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    #[test]
    fn conflicts_throttling_and_server_errors_are_transient() {
        for code in [409, 429, 500, 503] {
            assert!(is_transient(&api_error(code)), "{code}");
        }
    }

    #[test]
    fn client_errors_are_permanent() {
        for code in [400, 403, 404, 422] {
            assert!(!is_transient(&api_error(code)), "{code}");
        }
    }
}

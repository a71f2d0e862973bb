//! How to change the cluster: server-side apply and guarded delete, with retries.
//!
//! Invariants: one field manager (`issueops`) for every apply; a delete only
//! ever removes an object that carries the issueops managed-by label.

use crate::desired::DesiredObject;
use issueops_core::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::Client;
use std::future::Future;
use std::time::Duration;

/// Attempts per API call before an error is reported.
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

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
/// doubling the pause between attempts.
pub async fn with_backoff<T, F, Fut>(what: &str, mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut pause = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                tracing::warn!(%what, attempt, error = %e, "transient API error; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Server-side applies `obj`, taking ownership of the fields it sets.
pub async fn apply(client: &Client, obj: &DesiredObject) -> Result<DynamicObject, kube::Error> {
    let api = api(client, obj);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut body = obj.object.clone();
    // Server-managed fields never belong in an apply body.
    body.metadata.resource_version = None;
    body.metadata.managed_fields = None;
    let patch = Patch::Apply(&body);
    with_backoff(&obj.reference(), || api.patch(&obj.name, &params, &patch)).await
}

/// Deletes `obj` if it exists and carries the managed-by label.
pub async fn delete(client: &Client, obj: &DesiredObject) -> Result<DeleteOutcome, kube::Error> {
    let api = api(client, obj);
    let current = with_backoff(&obj.reference(), || api.get_opt(&obj.name)).await?;
    let Some(current) = current else {
        return Ok(DeleteOutcome::AlreadyAbsent);
    };
    let managed = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE);
    if !managed {
        return Ok(DeleteOutcome::NotManaged);
    }
    let params = DeleteParams::background();
    match with_backoff(&obj.reference(), || api.delete(&obj.name, &params)).await {
        Ok(_) => Ok(DeleteOutcome::Deleted),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(DeleteOutcome::AlreadyAbsent),
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

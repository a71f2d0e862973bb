//! The test cluster's storage: a hostPath PersistentVolume for every claim
//! that waits for one (no storage class, or an empty one), pre-bound to it
//! (`claimRef`), in a folder of its own under `--provision-dir`, so the
//! real node's kubelet mounts the issue's `agent-home` claim and a session
//! outlives the pod that wrote it. The API server's PersistentVolume binder
//! completes the binding. A volume whose claim was deleted (Released) is
//! deleted with its folder, as a `Delete` reclaim policy would.
//!
//! The folder is world-writable (0777), as local-path provisioners make
//! theirs: a hostPath volume gets no fsGroup, and the provisioner does not
//! know which user the pod will run as.

use super::spawn_store;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PROVISIONED: &str = "standin.issueops.dev/provisioned";

pub async fn run(client: Client, dir: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let claims = spawn_store::<PersistentVolumeClaim>(&client);
    let volumes = spawn_store::<PersistentVolume>(&client);
    claims.wait_until_ready().await?;
    volumes.wait_until_ready().await?;
    let api: Api<PersistentVolume> = Api::all(client);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let bound_to: std::collections::HashSet<String> = volumes
            .state()
            .iter()
            .filter_map(|v| v.spec.as_ref()?.claim_ref.as_ref()?.uid.clone())
            .collect();
        for claim in claims.state() {
            if waits_for_a_volume(&claim)
                && claim
                    .metadata
                    .uid
                    .as_ref()
                    .is_some_and(|u| !bound_to.contains(u))
            {
                if let Err(e) = provision(&api, &dir, &claim).await {
                    tracing::warn!(error = %e, "provisioning failed; retrying");
                }
            }
        }
        for volume in volumes.state() {
            let ours = volume
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(PROVISIONED));
            let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
            if ours && matches!(phase, Some("Released" | "Failed")) {
                if let Err(e) = release(&api, &dir, &volume).await {
                    tracing::warn!(error = %e, "releasing a volume failed; retrying");
                }
            }
        }
    }
}

fn waits_for_a_volume(claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = &claim.spec else {
        return false;
    };
    claim.metadata.deletion_timestamp.is_none()
        && spec.volume_name.as_deref().unwrap_or_default().is_empty()
        && spec
            .storage_class_name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        && claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
}

async fn provision(
    api: &Api<PersistentVolume>,
    dir: &Path,
    claim: &PersistentVolumeClaim,
) -> Result<()> {
    let (Some(ns), Some(name), Some(uid), Some(spec)) = (
        claim.metadata.namespace.as_deref(),
        claim.metadata.name.as_deref(),
        claim.metadata.uid.as_deref(),
        claim.spec.as_ref(),
    ) else {
        return Ok(());
    };
    let volume = format!("pvc-{uid}");
    let path = dir.join(&volume);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": volume, "labels": { PROVISIONED: "true" } },
        "spec": {
            "capacity": { "storage": storage },
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "claimRef": { "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                          "namespace": ns, "name": name, "uid": uid },
            "hostPath": { "path": path, "type": "Directory" },
        },
    }))?;
    match api.create(&PostParams::default(), &pv).await {
        Ok(_) => tracing::info!(claim = %format!("{ns}/{name}"), %volume, "provisioned"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn release(api: &Api<PersistentVolume>, dir: &Path, volume: &PersistentVolume) -> Result<()> {
    let Some(name) = volume.metadata.name.as_deref() else {
        return Ok(());
    };
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let path = dir.join(name);
    if path.exists() {
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    tracing::info!(%name, "released");
    Ok(())
}

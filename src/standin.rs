//! The in-process cluster stand-in (kube-fake-client) made useful for a
//! person trying issueops without a cluster:
//!
//! - its objects persist in the data dir (`standin-cluster.json`), so `plan`,
//!   `reconcile` and the staff UI in another process see the same cluster as
//!   a running `serve`;
//! - with `simulate`, its Jobs move on their own: started at once, succeeded
//!   after a few seconds, with the reason "simulated" on the Job condition
//!   (and so on the run and in the UI), since no agent runs here.
//!
//! Secrets are never written to the file: they would only hold agent tokens,
//! and the reconciler writes them again when it needs them.

use anyhow::{Context, Result};
use issueops_reconciler::desired::managed_resources;
use issueops_reconciler::observe::SIMULATED_REASON;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file, in the data dir, that holds the stand-in's objects.
pub const FILE: &str = "standin-cluster.json";

/// How often a running `serve` writes the stand-in's objects to disk and
/// moves simulated Jobs.
const TICK: Duration = Duration::from_secs(1);

/// The saved stand-in: its objects and the key under which the reconciler
/// records what it applied to it. A new file (a new, empty cluster) gets a
/// new key, so the reconciler applies everything again.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    key: String,
    objects: Vec<Value>,
}

/// The stand-in with the objects saved in `dir`, and its state key.
pub async fn open(dir: &Path) -> Result<(kube::Client, String)> {
    let path = dir.join(FILE);
    let saved: Saved = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a saved stand-in cluster; move it away to start empty",
                path.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let saved = Saved {
                key: format!("in-memory-{}", hex::encode(rand::random::<[u8; 8]>())),
                objects: Vec::new(),
            };
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            write_atomically(&path, &serde_json::to_vec(&saved)?)?;
            saved
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !saved.objects.is_empty() {
        tracing::info!(objects = saved.objects.len(), file = %path.display(), "stand-in cluster loaded");
    }
    let client = kube_fake_client::ClientBuilder::new()
        .with_status_subresource::<Job>()
        .with_runtime_objects(saved.objects)
        .build()
        .await
        .context("cannot start the in-process Kubernetes API stand-in")?;
    Ok((client, saved.key))
}

/// Every object the stand-in holds of the kinds issueops manages, Secrets
/// excepted, in a stable order.
async fn snapshot(client: &kube::Client) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (resource, _) in managed_resources() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let list = api
            .list(&ListParams::default())
            .await
            .with_context(|| format!("cannot list {} in the stand-in", resource.plural))?;
        for mut object in list.items {
            object.types = Some(kube::core::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            out.push(serde_json::to_value(object).context("cannot serialize an object")?);
        }
    }
    Ok(out)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Writes the stand-in's objects to `dir` now (after a one-off `reconcile`).
pub async fn save(client: &kube::Client, dir: &Path, key: &str) -> Result<()> {
    let objects = snapshot(client).await?;
    let saved = Saved {
        key: key.to_string(),
        objects,
    };
    write_atomically(&dir.join(FILE), &serde_json::to_vec(&saved)?)
}

/// Keeps the stand-in alive for a `serve`: moves simulated Jobs (when
/// `job_seconds` is set) and saves the objects whenever they changed. Runs
/// until dropped.
pub async fn run(
    client: kube::Client,
    store: issueops_core::Store,
    dir: PathBuf,
    key: String,
    job_seconds: Option<u64>,
) {
    let mut saved: Option<Vec<u8>> = None;
    loop {
        if let Some(seconds) = job_seconds {
            if let Err(e) = simulate_jobs(&client, &store, seconds).await {
                tracing::warn!(error = %format!("{e:#}"), "moving simulated Jobs failed; will retry");
            }
        }
        let current = snapshot(&client).await.and_then(|objects| {
            Ok(serde_json::to_vec(&Saved {
                key: key.clone(),
                objects,
            })?)
        });
        match current {
            Ok(bytes) if saved.as_ref() != Some(&bytes) => {
                match write_atomically(&dir.join(FILE), &bytes) {
                    Ok(()) => saved = Some(bytes),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot save the stand-in cluster")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read the stand-in cluster"),
        }
        tokio::time::sleep(TICK).await;
    }
}

/// One step of the simulation: a Job without status starts; a Job started
/// `seconds` ago succeeds. Each move is handed to the reconciler's Job
/// handler at once, as a real cluster's watch would.
pub async fn simulate_jobs(
    client: &kube::Client,
    store: &issueops_core::Store,
    seconds: u64,
) -> Result<()> {
    let jobs: Api<Job> = Api::all(client.clone());
    let now = chrono_now();
    for job in jobs.list(&ListParams::default()).await?.items {
        let (Some(ns), Some(name)) = (&job.metadata.namespace, &job.metadata.name) else {
            continue;
        };
        let api: Api<Job> = Api::namespaced(client.clone(), ns);
        let status = job.status.clone().unwrap_or_default();
        let done = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"));
        if done {
            continue;
        }
        let patch = match &status.start_time {
            None => {
                tracing::info!(namespace = %ns, job = %name, "simulated Job started (stand-in: no agent runs)");
                json!({ "status": { "startTime": now.1, "active": 1 } })
            }
            Some(start) if now.0 - start.0.as_second() >= seconds as i64 => {
                tracing::info!(namespace = %ns, job = %name, "simulated Job succeeded (stand-in: no agent ran)");
                json!({ "status": {
                    "active": 0, "succeeded": 1, "completionTime": now.1,
                    "conditions": [{
                        "type": "Complete", "status": "True", "reason": SIMULATED_REASON,
                        "message": "the in-process cluster stand-in ran no agent",
                        "lastTransitionTime": now.1, "lastProbeTime": now.1,
                    }],
                } })
            }
            Some(_) => continue,
        };
        let moved = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("cannot move simulated Job {ns}/{name}"))?;
        issueops_reconciler::observe::record_job(client, &moved, store)
            .await
            .context("cannot record a simulated Job's move")?;
    }
    Ok(())
}

/// Seconds since the epoch and the RFC 3339 form Kubernetes uses.
fn chrono_now() -> (i64, String) {
    let now = k8s_openapi::jiff::Timestamp::now();
    (
        now.as_second(),
        now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

//! Drift and orphans: the periodic full resync, against the inventory.
//!
//! The state repo at HEAD is indexed by blob id (a tree walk, no file read);
//! every live object carries the blob id it was applied from (its digest
//! annotation). A file whose blob a live object carries, with every field the
//! file sets still owned by issueops, is in sync: nothing is read. Only files
//! with no such object (changed, missing, or applied by an older issueops) and
//! objects not yet verified since they last changed are read and parsed.
//! Missing or drifted objects are applied again; managed objects no file
//! describes are deleted, under the same prune safety as a cycle. Objects
//! without the managed-by label are never in the inventory, so never touched,
//! and a finished run's Job is never re-created.

use crate::desired::{self, DesiredObject};
use crate::inventory::LiveObject;
use crate::{ownership, CycleReport, ReconcileError, Reconciler, Step};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::state_repo::{Oid, StateRepo, StateRepoError};
use issueops_core::store::runs::RunState;
use kube::core::DynamicObject;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long a resync waits for the inventory's watches to finish listing.
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// Files read and parsed per batch (bounds the memory of a first resync).
const BATCH: usize = 512;
/// Drifted fields named per object in the log and audit row.
const MAX_EXPLAINED: usize = 5;

/// What a resync did, with the API calls it made to find out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResyncReport {
    pub cycle: CycleReport,
    /// Metadata LISTs made (0 while watches keep the inventory current).
    pub list_calls: usize,
    pub live_objects: usize,
    /// State-repo files read and parsed (the rest matched by blob id).
    pub files_read: usize,
}

/// What reading one file found.
enum Finding {
    /// The live object with this file's digest owns every field: in sync.
    InSync {
        reference: String,
        fingerprint: u64,
    },
    /// The live object with this file's digest lost fields to someone.
    Drifted {
        object: DesiredObject,
        why: String,
    },
    /// No live object carries this file's digest.
    Unmatched(DesiredObject),
    Refused(String),
}

/// A file of HEAD to read, and the live object carrying its digest, if any.
struct ToRead {
    path: String,
    blob: Oid,
    live: Option<(String, LiveObject)>,
}

impl Reconciler {
    /// Re-applies drifted or missing objects and deletes orphans.
    pub async fn resync(&self, force: bool) -> Result<ResyncReport, ReconcileError> {
        let started = std::time::Instant::now();
        let mut report = ResyncReport {
            list_calls: self
                .inventory
                .refresh(&self.client, &self.instance, SYNC_WAIT)
                .await
                .map_err(|e| ReconcileError::Kube(e.to_string()))?,
            ..Default::default()
        };
        // With an untrusted commit on the branch, the desired state is the
        // newest commit before it: the resync must not apply what the cycle
        // refused.
        let repo = self.repo.clone();
        let head = tokio::task::spawn_blocking(move || repo.head())
            .await
            .map_err(|e| ReconcileError::Task(e.to_string()))??;
        let trusted_head = match head {
            Some(head) => {
                let last = self.store.last_applied_commit(&self.state_key).await?;
                let untrusted = self.untrusted(last.as_deref(), &head).await?;
                match untrusted.first() {
                    None => Some(head),
                    Some(first) => {
                        let before = self.repo.first_parent(&first.sha)?.or(last);
                        tracing::warn!(head = %head, resync_at = ?before, "resync holds to the last trusted commit");
                        before
                    }
                }
            }
            None => None,
        };
        let repo = self.repo.clone();
        let index = tokio::task::spawn_blocking(move || -> Result<_, StateRepoError> {
            let Some(head) = trusted_head else {
                return Ok(None);
            };
            let index = repo.blob_index(&head, desired::is_manifest)?;
            Ok(Some((head, index)))
        })
        .await
        .map_err(|e| ReconcileError::Task(e.to_string()))??;
        let (head, index) = index.unwrap_or_default();
        let live = self.inventory.snapshot();
        // Every listed object has met the verdicts kept from before the start.
        self.inventory.forget_remembered();
        report.live_objects = live.values().filter(|o| !o.deleting).count();

        // Match files to live objects by blob id; read only what needs it.
        let by_digest: HashMap<Oid, &str> = live
            .iter()
            .filter(|(_, o)| !o.deleting)
            .filter_map(|(k, o)| o.digest.map(|d| (d, k.as_str())))
            .collect();
        let mut desired_refs: HashSet<String> = HashSet::new();
        let mut to_read = Vec::new();
        for (path, blob) in index.iter() {
            match by_digest.get(blob) {
                Some(reference) => {
                    desired_refs.insert(reference.to_string());
                    let object = &live[*reference];
                    if !object.verified {
                        to_read.push(ToRead {
                            path: path.clone(),
                            blob: *blob,
                            live: Some((reference.to_string(), object.clone())),
                        });
                    }
                }
                None => to_read.push(ToRead {
                    path: path.clone(),
                    blob: *blob,
                    live: None,
                }),
            }
        }
        report.files_read = to_read.len();
        let (repo, scope) = (self.repo.clone(), self.scope.clone());
        let findings = tokio::task::spawn_blocking(move || read_all(&repo, &scope, to_read))
            .await
            .map_err(|e| ReconcileError::Task(e.to_string()))??;

        let mut steps = Vec::new();
        for finding in findings {
            match finding {
                Finding::InSync {
                    reference,
                    fingerprint,
                } => self.inventory.mark_verified(&reference, fingerprint),
                Finding::Refused(reason) => report.cycle.refused.push(reason),
                Finding::Drifted { object, why } => {
                    tracing::info!(object = %object.reference(), %why, "drift");
                    steps.push(Step::apply(object, false, why));
                }
                Finding::Unmatched(object) => {
                    let reference = object.reference();
                    desired_refs.insert(reference.clone());
                    match live.get(&reference) {
                        Some(o) if o.deleting => {}
                        Some(_) => {
                            let why = "the object was applied from another version of its file"
                                .to_string();
                            tracing::info!(object = %reference, %why, "drift");
                            steps.push(Step::apply(object, false, why));
                        }
                        None => {
                            // A Job that ran (or runs) and is gone was deleted by
                            // someone: the observer ends its run; a resync never
                            // brings it back.
                            if self.job_started(&object).await? {
                                report.cycle.skipped.push(reference);
                                continue;
                            }
                            steps.push(Step::apply(
                                object,
                                true,
                                "missing from the cluster".into(),
                            ));
                        }
                    }
                }
            }
        }
        let orphans: Vec<Step> = live
            .iter()
            .filter(|(reference, o)| !o.deleting && !desired_refs.contains(*reference))
            .filter_map(|(reference, o)| self.orphan(reference, o))
            .collect();
        if !force {
            if let Some(reason) = self.safety.check(orphans.len(), report.live_objects) {
                let audit = AuditEvent::new(kind::RECONCILE, "blocked-prune-safety")
                    .commit(head.clone())
                    .detail(json!({ "resync": true, "deletes": orphans.len(), "inventory": report.live_objects, "reason": reason }));
                self.store.append_audit(&audit).await?;
                report.cycle.blocked = Some(reason);
                return Ok(report);
            }
        }
        steps.sort_by_key(|s| s.object.rank);
        let mut orphans = orphans;
        orphans.sort_by_key(|s| std::cmp::Reverse(s.object.rank));
        steps.extend(orphans);
        let pass = crate::execute::Pass::new(std::mem::take(&mut report.cycle));
        self.execute_all(&steps, &head, &pass).await?;
        report.cycle = pass.into_report();
        let audit = AuditEvent::new(kind::RECONCILE, if report.cycle.converged() { "resynced" } else { "resync-incomplete" })
            .commit(head.clone())
            .detail(json!({
                "live": report.live_objects, "desired": index.len(), "applied": report.cycle.applied,
                "deleted": report.cycle.deleted, "failed": report.cycle.failed, "list_calls": report.list_calls,
                "files_read": report.files_read,
            }));
        self.store.append_audit(&audit).await?;
        self.keep_verdicts().await;
        issueops_core::metrics::duration("resync", started.elapsed());
        Ok(report)
    }

    /// Whether `object` is a Job whose run has been applied before.
    async fn job_started(&self, object: &DesiredObject) -> Result<bool, ReconcileError> {
        if object.resource.kind != "Job" {
            return Ok(false);
        }
        let Some(run) = object.label(crate::RUN_LABEL) else {
            return Ok(false);
        };
        Ok(self
            .store
            .get_run(run)
            .await?
            .and_then(|r| r.run_state())
            .is_some_and(|s| s >= RunState::Applied))
    }

    /// The delete step for a live object no file describes.
    fn orphan(&self, reference: &str, live: &LiveObject) -> Option<Step> {
        let (resource, namespaced) = desired::managed_resources().into_iter().nth(live.rank)?;
        let mut parts = reference.splitn(3, '/').skip(1);
        let (namespace, name) = if namespaced {
            (Some(parts.next()?.to_string()), parts.next()?.to_string())
        } else {
            (None, parts.next()?.to_string())
        };
        let mut object = DynamicObject::new(&name, &resource);
        object.metadata.namespace = namespace.clone();
        Some(Step {
            object: DesiredObject {
                path: "(cluster)".into(),
                object,
                resource,
                namespace,
                name,
                rank: live.rank,
                digest: Oid::zero(),
            },
            delete: true,
            origin: None,
            check_owner: false,
            note: Some("no file in the state repo describes it".into()),
        })
    }
}

impl Step {
    /// An apply found by a resync, with why.
    fn apply(object: DesiredObject, missing: bool, why: String) -> Self {
        Step {
            object,
            delete: false,
            origin: None,
            check_owner: missing,
            note: Some(why),
        }
    }
}

/// Reads and judges every file of `to_read`, in batches, on every core.
fn read_all(
    repo: &StateRepo,
    scope: &desired::Scope,
    to_read: Vec<ToRead>,
) -> Result<Vec<Finding>, ReconcileError> {
    if to_read.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(to_read.len().div_ceil(BATCH));
    let share = to_read.len().div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = to_read
            .chunks(share)
            .map(|part| s.spawn(move || read_part(repo, scope, part)))
            .collect();
        let mut out = Vec::new();
        for worker in workers {
            match worker.join() {
                Ok(found) => out.extend(found?),
                Err(_) => {
                    return Err(ReconcileError::Task(
                        "a thread reading state-repo files panicked".into(),
                    ))
                }
            }
        }
        Ok(out)
    })
}

fn read_part(
    repo: &StateRepo,
    scope: &desired::Scope,
    part: &[ToRead],
) -> Result<Vec<Finding>, StateRepoError> {
    let mut out = Vec::new();
    for batch in part.chunks(BATCH) {
        let blobs: Vec<Oid> = batch.iter().map(|r| r.blob).collect();
        let contents = repo.read_blobs(&blobs)?;
        for (item, content) in batch.iter().zip(contents) {
            out.push(judge(scope, item, &content));
        }
    }
    Ok(out)
}

/// What one file says about the live object carrying its digest.
fn judge(scope: &desired::Scope, item: &ToRead, content: &[u8]) -> Finding {
    let object = match desired::parse(&item.path, content)
        .and_then(|o| scope.admit(&o, false).map(|()| o))
    {
        Ok(o) => o,
        Err(e) => return Finding::Refused(e.to_string()),
    };
    let Some((reference, live)) = &item.live else {
        return Finding::Unmatched(object);
    };
    if object.reference() != *reference {
        // Same content, another object: cannot be; judge it as new.
        return Finding::Unmatched(object);
    }
    let fields = live.fields.as_deref();
    let unowned = ownership::unowned_by_us(&object, fields, MAX_EXPLAINED);
    if unowned.is_empty() {
        return Finding::InSync {
            reference: reference.clone(),
            fingerprint: live.fingerprint,
        };
    }
    let others: Vec<(&str, serde_json::Value)> = fields
        .into_iter()
        .flat_map(|f| &f.others)
        .filter_map(|(m, theirs)| Some((&**m, serde_json::from_str(theirs).ok()?)))
        .collect();
    let want = serde_json::to_value(&object.object).unwrap_or_default();
    let why = unowned
        .iter()
        .map(|path| {
            match others
                .iter()
                .find(|(_, theirs)| ownership::owns(&want, theirs, path))
            {
                Some((manager, _)) => format!("{path} is now owned by field manager {manager:?}"),
                None => format!("{path} was removed or changed outside issueops"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Finding::Drifted { object, why }
}

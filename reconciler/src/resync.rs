//! Drift and orphans: the periodic full resync.
//!
//! Compares every desired object at HEAD with what the cluster holds, found
//! by one paged LIST per kind with the managed-by label selector (never a GET
//! per object). Missing or changed objects are applied again; managed objects
//! no longer desired are deleted, under the same prune safety as a cycle.
//! Objects without the managed-by label are never listed, so never touched,
//! and a finished run's Job is never re-created.

use crate::desired::{self, DesiredObject};
use crate::{CycleReport, ReconcileError, Reconciler, Step};
use issueops_core::audit::{kind, AuditEvent};
use issueops_core::store::runs::RunState;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use serde_json::json;
use std::collections::BTreeMap;

const PAGE: u32 = 500;

/// What a resync did, with the API calls it made to find out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResyncReport {
    pub cycle: CycleReport,
    pub list_calls: usize,
    pub live_objects: usize,
}

impl Reconciler {
    /// Re-applies drifted or missing objects and deletes orphans.
    pub async fn resync(&self, force: bool) -> Result<ResyncReport, ReconcileError> {
        let repo = self.repo.clone();
        let desired_files = tokio::task::spawn_blocking(
            move || -> Result<_, issueops_core::state_repo::StateRepoError> {
                let Some(head) = repo.head()? else {
                    return Ok(None);
                };
                Ok(Some((head.clone(), repo.files_at(&head)?)))
            },
        )
        .await
        .map_err(|e| ReconcileError::Task(e.to_string()))??;
        let mut report = ResyncReport::default();
        let (head, files) = desired_files.unwrap_or_default();
        let mut desired: BTreeMap<String, DesiredObject> = BTreeMap::new();
        for (path, content) in files.iter().filter(|(p, _)| desired::is_manifest(p)) {
            match desired::parse(path, content).and_then(|o| self.scope.check(&o).map(|()| o)) {
                Ok(o) => {
                    desired.insert(o.reference(), o);
                }
                Err(e) => report.cycle.refused.push(e.to_string()),
            }
        }
        let live = self.list_managed(&mut report).await?;
        report.live_objects = live.len();

        let mut steps = Vec::new();
        for (reference, want) in &desired {
            let missing = !live.contains_key(reference);
            let drifted = match live.get(reference) {
                None => true,
                Some((_, have)) => {
                    let mut want_json = serde_json::to_value(&want.object).unwrap_or_default();
                    // LIST items carry no apiVersion and kind: the list says them.
                    if let Some(o) = want_json.as_object_mut() {
                        o.remove("apiVersion");
                        o.remove("kind");
                    }
                    let have_json = serde_json::to_value(have).unwrap_or_default();
                    match desired::first_difference(&want_json, &have_json) {
                        Some(at) => {
                            tracing::info!(object = %reference, field = %at, "drift");
                            true
                        }
                        None => false,
                    }
                }
            };
            // A Job that ran (or runs) and is gone was deleted by someone: the
            // observer ends its run; a resync never brings it back.
            if missing && want.resource.kind == "Job" {
                if let Some(run) = want.label(crate::RUN_LABEL) {
                    let started = self
                        .store
                        .get_run(run)
                        .await?
                        .and_then(|r| r.run_state())
                        .is_some_and(|s| s >= RunState::Applied);
                    if started {
                        report.cycle.skipped.push(reference.clone());
                        continue;
                    }
                }
            }
            if drifted {
                steps.push(Step {
                    object: want.clone(),
                    delete: false,
                    origin: None,
                    check_owner: missing,
                });
            }
        }
        let orphans: Vec<Step> = live
            .iter()
            .filter(|(reference, _)| !desired.contains_key(*reference))
            .map(|(_, (template, obj))| {
                let mut o = template.clone();
                o.object = obj.clone();
                Step {
                    object: o,
                    delete: true,
                    origin: None,
                    check_owner: false,
                }
            })
            .collect();
        if !force {
            if let Some(reason) = self.safety.check(orphans.len(), live.len()) {
                let audit = AuditEvent::new(kind::RECONCILE, "blocked-prune-safety")
                    .commit(head.clone())
                    .detail(json!({ "resync": true, "deletes": orphans.len(), "inventory": live.len(), "reason": reason }));
                self.store.append_audit(&audit).await?;
                report.cycle.blocked = Some(reason);
                return Ok(report);
            }
        }
        steps.sort_by_key(|s| s.object.rank);
        let mut orphans = orphans;
        orphans.sort_by_key(|s| std::cmp::Reverse(s.object.rank));
        steps.extend(orphans);
        let mut refused = crate::Refusals::default();
        for step in &steps {
            self.execute(step, &head, &mut report.cycle, &mut refused)
                .await?;
        }
        let audit = AuditEvent::new(kind::RECONCILE, if report.cycle.converged() { "resynced" } else { "resync-incomplete" })
            .commit(head.clone())
            .detail(json!({
                "live": report.live_objects, "desired": desired.len(), "applied": report.cycle.applied,
                "deleted": report.cycle.deleted, "failed": report.cycle.failed, "list_calls": report.list_calls,
            }));
        self.store.append_audit(&audit).await?;
        Ok(report)
    }

    /// Every managed object in the cluster, by reference, with a template
    /// describing its API resource.
    async fn list_managed(
        &self,
        report: &mut ResyncReport,
    ) -> Result<BTreeMap<String, (DesiredObject, DynamicObject)>, ReconcileError> {
        let mut out = BTreeMap::new();
        for (rank, (resource, namespaced)) in desired::managed_resources().into_iter().enumerate() {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
            let mut params = ListParams::default()
                .labels(&issueops_core::managed_selector(&self.instance))
                .limit(PAGE);
            loop {
                let page = crate::apply::with_backoff("list managed objects", || api.list(&params))
                    .await
                    .map_err(|e| ReconcileError::Kube(e.to_string()))?;
                report.list_calls += 1;
                for obj in page.items {
                    let Some(name) = obj.metadata.name.clone() else {
                        continue;
                    };
                    // Already being deleted (a namespace emptying itself): neither
                    // drift nor an orphan to delete again.
                    if obj.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let namespace = if namespaced {
                        obj.metadata.namespace.clone()
                    } else {
                        None
                    };
                    let reference =
                        desired::reference_of(&resource.kind, namespace.as_deref(), &name);
                    let template = DesiredObject {
                        path: "(cluster)".into(),
                        object: obj.clone(),
                        resource: resource.clone(),
                        namespace,
                        name,
                        rank,
                    };
                    out.insert(reference, (template, obj));
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

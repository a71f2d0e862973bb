//! Executing a cycle's steps: applies and deletes side by side within a kind,
//! each audited, with the refusals that keep other people's objects safe.

use super::*;

impl Reconciler {
    /// Executes `steps` in order, the steps of one kind and direction (all
    /// Namespaces, then all Roles, …) side by side, at most
    /// [`APPLY_CONCURRENCY`] at a time.
    pub(crate) async fn execute_all(
        &self,
        steps: &[Step],
        head: &str,
        pass: &Pass,
    ) -> Result<(), ReconcileError> {
        use futures::{StreamExt, TryStreamExt};
        for group in steps.chunk_by(|a, b| (a.delete, a.object.rank) == (b.delete, b.object.rank)) {
            let done =
                futures::stream::iter(group.iter().map(|step| self.execute(step, head, pass)))
                    .buffer_unordered(APPLY_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await;
            // The rows of what was done are written even when a step failed.
            let rows = std::mem::take(&mut *pass.audits());
            self.store.append_audits(&rows).await?;
            done?;
        }
        Ok(())
    }

    async fn execute(&self, step: &Step, head: &str, pass: &Pass) -> Result<(), ReconcileError> {
        let obj = &step.object;
        let reference = obj.reference();
        let run_id = obj
            .label(RUN_LABEL)
            .or_else(|| trailer(step.origin.as_ref(), "Run-Id"))
            .map(str::to_string);
        let mut audit = AuditEvent::new(
            if step.delete {
                kind::DELETE
            } else {
                kind::APPLY
            },
            "",
        )
        .object(reference.clone())
        .commit(
            step.origin
                .as_ref()
                .map(|o| o.sha.clone())
                .unwrap_or_else(|| head.to_string()),
        );
        if let Some(run) = &run_id {
            audit = audit.run(run.clone());
        }
        if let Some(d) = trailer(step.origin.as_ref(), "Delivery-Id") {
            audit = audit.delivery(d);
        }
        if let Some(a) = trailer(step.origin.as_ref(), "Actor") {
            audit = audit.actor(a);
        }
        if let Some(note) = &step.note {
            audit = audit.detail(json!({ "resync": note }));
        }
        // A run runs once: a finished run's Job is never created again, not by a
        // resync, a drift correction or a rollback that brings its file back.
        if !step.delete && obj.resource.kind == "Job" {
            if let Some(run) = &run_id {
                let finished = self
                    .store
                    .get_run(run)
                    .await?
                    .and_then(|r| r.run_state())
                    .is_some_and(|s| s.is_finished());
                if finished {
                    tracing::info!(object = %reference, "run already finished; Job not re-created");
                    pass.report().skipped.push(reference.clone());
                    let audit = AuditEvent {
                        outcome: "skipped-finished-run".into(),
                        ..audit
                    };
                    self.store.append_audit(&audit).await?;
                    return Ok(());
                }
            }
        }
        // Everything in a namespace holding someone else's object is refused
        // with it: the run must not start beside, or with, a stranger's objects.
        let scope = obj.namespace.clone().unwrap_or_else(|| obj.name.clone());
        if !step.delete {
            let refused_scope = pass.refused().by_scope.get(&scope).cloned();
            if let Some(reason) = refused_scope {
                let reason = format!("not applied: {reason}");
                pass.report().skipped.push(reference.clone());
                self.store
                    .append_audit(
                        &AuditEvent {
                            outcome: "refused".into(),
                            ..audit
                        }
                        .detail(json!({ "reason": reason })),
                    )
                    .await?;
                if obj.resource.kind == "Job" {
                    self.fail_refused_run(run_id.as_deref(), &reason).await?;
                }
                return Ok(());
            }
        }
        // An object new to us goes only into a namespace that is ours: a
        // namespace someone else made (same name, not our labels) is refused
        // with everything in it.
        if !step.delete && step.check_owner {
            if let Some(ns) = obj.namespace.as_deref() {
                let known = {
                    let refused = pass.refused();
                    refused.created.contains(ns) || refused.verified.contains(ns)
                };
                if !known {
                    match apply::foreign_namespace(&self.client, ns, &self.instance).await {
                        Ok(None) => {
                            pass.refused().verified.insert(ns.to_string());
                        }
                        Ok(Some(owner)) => {
                            let reason = format!(
                                "namespace {ns} exists and is not managed by this issueops install ({owner}); refusing to put objects into it"
                            );
                            self.refuse_not_ours(&reference, scope, &reason, audit, pass)
                                .await?;
                            self.fail_runs_in(ns, &reason).await?;
                            return Ok(());
                        }
                        Err(e) => {
                            pass.report().failed.push(reference.clone());
                            let audit = AuditEvent {
                                outcome: "error".into(),
                                ..audit
                            }
                            .detail(json!({ "error": format!("cannot read namespace {ns}: {e}") }));
                            self.store.append_audit(&audit).await?;
                            return Ok(());
                        }
                    }
                }
            }
        }
        // The agent's token Secret exists before its Job does, so the pod
        // never starts without it; no Secret, no Job (retried next cycle).
        if !step.delete && obj.resource.kind == "Job" {
            if let Some(run) = &run_id {
                if let Err(e) = self.token_before_job(run).await {
                    tracing::error!(object = %reference, error = %e, "agent token not written; Job held back");
                    pass.report().failed.push(reference.clone());
                    let audit = AuditEvent {
                        outcome: "error".into(),
                        ..audit
                    }
                    .detail(json!({ "error": format!("agent token not written: {e}") }));
                    self.store.append_audit(&audit).await?;
                    return Ok(());
                }
            }
        }
        let check_owner = step.check_owner
            && !(obj
                .namespace
                .as_ref()
                .is_some_and(|ns| pass.refused().created.contains(ns)));
        let span = tracing::info_span!("object", object = %reference, run_id = run_id.as_deref().unwrap_or("-"));
        let started = std::time::Instant::now();
        let outcome = async {
            if step.delete {
                let outcome = apply::delete(&self.client, obj, &self.instance).await;
                if let Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyAbsent) = outcome {
                    self.inventory.forget(&reference);
                }
                outcome
                    .map(|o| match o {
                        DeleteOutcome::Deleted => "deleted",
                        DeleteOutcome::AlreadyAbsent => "already-absent",
                        DeleteOutcome::NotManaged => "skipped-not-managed",
                    })
                    .map_err(apply::ApplyError::from)
            } else {
                apply::apply(&self.client, obj, &self.instance, check_owner)
                    .await
                    .map(|live| {
                        // What the server answered is the newest state: the
                        // next resync needs no watch event to know it.
                        self.inventory.record_applied(obj, &live.metadata);
                        "applied"
                    })
            }
        }
        .instrument(span)
        .await;
        issueops_core::metrics::duration(
            if step.delete { "delete" } else { "apply" },
            started.elapsed(),
        );
        if let Err(apply::ApplyError::NotOurs { .. }) = &outcome {
            let reason = outcome
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            self.refuse_not_ours(&reference, scope, &reason, audit, pass)
                .await?;
            if obj.resource.kind == "Job" {
                self.fail_refused_run(run_id.as_deref(), &reason).await?;
            } else if let Some(ns) = &obj.namespace {
                self.fail_runs_in(ns, &reason).await?;
            } else {
                self.fail_runs_in(&obj.name, &reason).await?;
            }
            return Ok(());
        }
        // A namespace we just created holds nothing of anyone else's: its other
        // new objects need no look first (saves a GET per object of a new issue).
        if outcome.is_ok() && !step.delete && check_owner && obj.resource.kind == "Namespace" {
            pass.refused().created.insert(obj.name.clone());
        }
        let audit = match outcome {
            Ok(outcome) => {
                tracing::info!(object = %reference, outcome, "object reconciled");
                {
                    let mut report = pass.report();
                    match outcome {
                        "applied" => report.applied.push(reference.clone()),
                        "skipped-not-managed" => report.skipped.push(reference.clone()),
                        _ => report.deleted.push(reference.clone()),
                    }
                }
                if outcome == "applied" && obj.resource.kind == "Job" {
                    if let Some(run) = &run_id {
                        self.store
                            .set_run_state(run, RunState::Applied, None)
                            .await?;
                    }
                }
                AuditEvent {
                    outcome: outcome.into(),
                    ..audit
                }
            }
            Err(e) => {
                tracing::error!(object = %reference, error = %e, "object failed");
                pass.report().failed.push(reference.clone());
                AuditEvent {
                    outcome: "error".into(),
                    ..audit
                }
                .detail(json!({ "error": e.to_string() }))
            }
        };
        // Written with the rest of its group, in one transaction.
        pass.audit(audit);
        Ok(())
    }
}

/// Objects of one kind applied (or deleted) side by side in a cycle: enough
/// to keep the API server busy without flooding it.
const APPLY_CONCURRENCY: usize = 8;

/// What one pass has done so far, shared by the steps running side by side.
pub(crate) struct Pass {
    report: std::sync::Mutex<CycleReport>,
    refused: std::sync::Mutex<Refusals>,
    /// Audit rows of the steps done, written per group.
    audits: std::sync::Mutex<Vec<AuditEvent>>,
}

impl Pass {
    pub(crate) fn new(report: CycleReport) -> Self {
        Self {
            report: std::sync::Mutex::new(report),
            refused: Default::default(),
            audits: Default::default(),
        }
    }

    fn audits(&self) -> std::sync::MutexGuard<'_, Vec<AuditEvent>> {
        self.audits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn audit(&self, row: AuditEvent) {
        self.audits().push(row);
    }

    // A step that panicked while holding a lock left whole entries only.
    fn report(&self) -> std::sync::MutexGuard<'_, CycleReport> {
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, Refusals> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn into_report(self) -> CycleReport {
        self.report.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one pass refused, and the namespaces it created, by scope.
#[derive(Default)]
pub(crate) struct Refusals {
    /// Namespace → why its objects are not applied.
    by_scope: BTreeMap<String, String>,
    /// Namespaces this pass created (so nothing of anyone else's is inside).
    created: std::collections::BTreeSet<String>,
    /// Namespaces this pass found to be ours.
    verified: std::collections::BTreeSet<String>,
}

impl Reconciler {
    /// Records that `reference` (and everything else in its scope this cycle)
    /// is not applied because something there is not ours.
    async fn refuse_not_ours(
        &self,
        reference: &str,
        scope: String,
        reason: &str,
        audit: AuditEvent,
        pass: &Pass,
    ) -> Result<(), ReconcileError> {
        tracing::error!(object = %reference, %reason, "refused");
        pass.report().skipped.push(reference.to_string());
        pass.refused().by_scope.insert(scope, reason.to_string());
        self.store
            .append_audit(
                &AuditEvent {
                    outcome: "refused-not-ours".into(),
                    ..audit
                }
                .detail(json!({ "reason": reason })),
            )
            .await?;
        Ok(())
    }

    /// Ends a run whose objects were refused, with the reason, and audits it.
    async fn fail_refused_run(
        &self,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<(), ReconcileError> {
        let Some(run_id) = run_id else {
            return Ok(());
        };
        if self
            .store
            .advance_run(run_id, RunState::Failed, None, Some(reason))
            .await?
        {
            let audit = AuditEvent::new(kind::JOB_STATUS, RunState::Failed.as_str())
                .run(run_id.to_string())
                .detail(json!({ "reason": reason }));
            self.store.append_audit(&audit).await?;
        }
        Ok(())
    }

    /// Ends every active run of the issue in `namespace` (see [`Self::fail_refused_run`]).
    async fn fail_runs_in(&self, namespace: &str, reason: &str) -> Result<(), ReconcileError> {
        let runs = self.store.list_runs().await?;
        for run in runs.iter().filter(|r| {
            r.namespace == namespace
                && r.run_state()
                    .is_some_and(|s| s.is_active() && s >= RunState::Committed)
        }) {
            self.fail_refused_run(Some(&run.run_id), reason).await?;
        }
        Ok(())
    }
}

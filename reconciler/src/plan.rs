//! Planning a cycle: the diff since the last applied commit, turned into
//! ordered steps (objects that only moved are left alone).

use crate::{desired, CycleReport, Step};
use issueops_core::state_repo::{FileDelta, Oid, StateRepo, StateRepoError};
use std::collections::{BTreeMap, HashMap};

/// Objects that changed path in this diff (the layout move; a file renamed
/// by hand): by reference, the digests they left and arrived with. An
/// object that arrived needs no delete, whatever its content; one that
/// arrived with the content it left needs no apply either.
#[derive(Default)]
struct Moves {
    left: HashMap<String, Oid>,
    arrived: HashMap<String, Oid>,
}

impl Moves {
    fn of(deltas: &[FileDelta]) -> Self {
        let object = |path: &str, content: &[u8]| {
            desired::is_manifest(path)
                .then(|| desired::parse(path, content).ok())
                .flatten()
                .map(|o| (o.reference(), o.digest))
        };
        let left: HashMap<String, Oid> = deltas
            .iter()
            .filter_map(|d| match d {
                FileDelta::Deleted { path, content } => object(path, content),
                FileDelta::Upsert { .. } => None,
            })
            .collect();
        // Nothing left a path: nothing moved (and the upserts of a big
        // first apply are not parsed twice).
        if left.is_empty() {
            return Self::default();
        }
        let arrived = deltas
            .iter()
            .filter_map(|d| match d {
                FileDelta::Upsert {
                    path,
                    content,
                    added: true,
                } => object(path, content),
                _ => None,
            })
            .filter(|(reference, _)| left.contains_key(reference))
            .collect();
        Self { left, arrived }
    }

    /// Whether `object`'s step is not needed.
    fn skips(&self, object: &desired::DesiredObject, delete: bool) -> bool {
        let reference = object.reference();
        if delete {
            self.arrived.contains_key(&reference)
        } else {
            self.left.get(&reference) == Some(&object.digest)
        }
    }
}

/// Reads HEAD and the diff since `last`, in the order to execute it. `None`
/// when there is nothing to do. Files that cannot be parsed are reported as
/// failed (and block the commit from counting as applied) but stop nothing else.
pub(crate) fn plan_cycle(
    repo: &StateRepo,
    last: Option<&str>,
    scope: &desired::Scope,
) -> Result<Option<(String, Vec<Step>, CycleReport)>, StateRepoError> {
    let Some(head) = repo.head()? else {
        return Ok(None);
    };
    if last == Some(head.as_str()) {
        return Ok(None);
    }
    // A last commit that is gone from history (rewritten remote) means a full apply.
    let deltas = match repo.diff(last, &head) {
        Ok(d) => d,
        Err(StateRepoError::UnknownCommit(_)) => repo.diff(None, &head)?,
        Err(e) => return Err(e),
    };
    let paths: Vec<&str> = deltas.iter().map(FileDelta::path).collect();
    let mut origins = repo
        .attribute(last, &head, &paths)
        .or_else(|_| repo.attribute(None, &head, &paths))?;
    let mut report = CycleReport {
        head: Some(head.clone()),
        ..Default::default()
    };
    let moves = Moves::of(&deltas);
    let mut steps = Vec::new();
    for delta in &deltas {
        let (path, content, delete, added) = match delta {
            FileDelta::Upsert {
                path,
                content,
                added,
            } => (path, content, false, *added),
            FileDelta::Deleted { path, content } => (path, content, true, false),
        };
        if !desired::is_manifest(path) {
            continue;
        }
        match desired::parse(path, content).and_then(|o| scope.admit(&o, delete).map(|()| o)) {
            // The same object, same content, at a new path (the layout
            // move): already applied as it is; deleting it would take down
            // a live run.
            Ok(object) if moves.skips(&object, delete) => {}
            Ok(object) => steps.push(Step {
                object,
                delete,
                origin: origins.remove(path.as_str()),
                check_owner: added,
                note: None,
            }),
            Err(e) => report.refused.push(e.to_string()),
        }
    }
    // Applies: cluster-scoped first. Deletes: after applies, in reverse rank.
    let order: BTreeMap<(bool, i64, String), usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rank = if s.delete {
                -(s.object.rank as i64)
            } else {
                s.object.rank as i64
            };
            ((s.delete, rank, s.object.reference()), i)
        })
        .collect();
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let ordered = order.values().filter_map(|&i| slots[i].take()).collect();
    Ok(Some((head, ordered, report)))
}

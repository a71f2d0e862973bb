//! What is desired: Kubernetes objects parsed from state-repo files.
//!
//! Invariants: only the kinds issueops renders are accepted (a Secret or any
//! unknown kind in the state repo is refused, never applied), and the order of
//! kinds is fixed: cluster-scoped objects first on apply, last on delete.

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredError {
    #[error("{path}: not a Kubernetes object: {reason}")]
    Parse { path: String, reason: String },
    #[error("{path}: kind {api_version}/{kind} is not one issueops manages")]
    UnsupportedKind {
        path: String,
        api_version: String,
        kind: String,
    },
    #[error("{path}: namespaced {kind} {name} has no metadata.namespace")]
    MissingNamespace {
        path: String,
        kind: String,
        name: String,
    },
}

/// A kind issueops may apply, in apply order.
struct KnownKind {
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
}

const KINDS: &[KnownKind] = &[
    KnownKind {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    KnownKind {
        api_version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
    },
    KnownKind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
    },
    KnownKind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
    },
    KnownKind {
        api_version: "v1",
        kind: "ResourceQuota",
        plural: "resourcequotas",
        namespaced: true,
    },
    KnownKind {
        api_version: "v1",
        kind: "LimitRange",
        plural: "limitranges",
        namespaced: true,
    },
    KnownKind {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        namespaced: true,
    },
    KnownKind {
        api_version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    KnownKind {
        api_version: "batch/v1",
        kind: "Job",
        plural: "jobs",
        namespaced: true,
    },
];

/// One desired object with what is needed to call the API for it.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    pub path: String,
    pub object: DynamicObject,
    pub resource: ApiResource,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
    /// Position of the kind in apply order.
    pub rank: usize,
}

impl DesiredObject {
    /// `Kind/namespace/name` (or `Kind/name`), as shown in audit rows and logs.
    pub fn reference(&self) -> String {
        reference_of(&self.resource.kind, self.namespace.as_deref(), &self.name)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    }
}

/// Parses one state-repo file.
pub fn parse(path: &str, content: &[u8]) -> Result<DesiredObject, DesiredError> {
    let parse_err = |reason: String| DesiredError::Parse {
        path: path.to_string(),
        reason,
    };
    let object: DynamicObject =
        serde_yaml::from_slice(content).map_err(|e| parse_err(e.to_string()))?;
    let types = object
        .types
        .clone()
        .ok_or_else(|| parse_err("missing apiVersion or kind".into()))?;
    let Some((rank, known)) = KINDS
        .iter()
        .enumerate()
        .find(|(_, k)| k.api_version == types.api_version && k.kind == types.kind)
    else {
        return Err(DesiredError::UnsupportedKind {
            path: path.into(),
            api_version: types.api_version,
            kind: types.kind,
        });
    };
    let name = object
        .metadata
        .name
        .clone()
        .ok_or_else(|| parse_err("missing metadata.name".into()))?;
    let namespace =
        if known.namespaced {
            Some(object.metadata.namespace.clone().ok_or_else(|| {
                DesiredError::MissingNamespace {
                    path: path.into(),
                    kind: known.kind.into(),
                    name: name.clone(),
                }
            })?)
        } else {
            None
        };
    let (group, version) = match known.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", known.api_version),
    };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, known.kind),
        known.plural,
    );
    Ok(DesiredObject {
        path: path.into(),
        object,
        resource,
        namespace,
        name,
        rank,
    })
}

/// Every kind issueops manages, as API resources with their scope, in apply order.
pub fn managed_resources() -> Vec<(ApiResource, bool)> {
    KINDS
        .iter()
        .map(|k| {
            let (group, version) = match k.api_version.split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", k.api_version),
            };
            (
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, version, k.kind),
                    k.plural,
                ),
                k.namespaced,
            )
        })
        .collect()
}

/// `Kind/namespace/name` (or `Kind/name`) of any object.
pub fn reference_of(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// Whether every field `desired` sets has the same value in `live` (fields the
/// server adds are ignored). Lists must match element by element.
pub fn is_subset(desired: &serde_json::Value, live: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (d, l) => d == l,
    }
}

/// Whether a file of the state repo holds an object (other files, such as a
/// README, are left alone).
pub fn is_manifest(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_namespaced_object() {
        let o = parse(
            "a/job.yaml",
            b"apiVersion: batch/v1\nkind: Job\nmetadata: {name: j, namespace: n}\nspec: {}\n",
        )
        .unwrap();
        assert_eq!(o.reference(), "Job/n/j");
        assert_eq!(o.resource.plural, "jobs");
        assert_eq!(o.resource.group, "batch");
    }

    #[test]
    fn secrets_and_unknown_kinds_are_refused() {
        let err = parse(
            "s.yaml",
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\n",
        )
        .unwrap_err();
        assert!(matches!(err, DesiredError::UnsupportedKind { .. }));
        let err = parse(
            "c.yaml",
            b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: c}\n",
        )
        .unwrap_err();
        assert!(matches!(err, DesiredError::UnsupportedKind { .. }));
    }

    #[test]
    fn namespaced_kind_without_namespace_is_refused() {
        let err = parse(
            "r.yaml",
            b"apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n",
        )
        .unwrap_err();
        assert!(matches!(err, DesiredError::MissingNamespace { .. }));
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            parse("x.yaml", b"[1, 2"),
            Err(DesiredError::Parse { .. })
        ));
        assert!(matches!(
            parse("x.yaml", b"kind: Job\n"),
            Err(DesiredError::Parse { .. })
        ));
    }

    #[test]
    fn subset_ignores_server_fields_but_not_changed_values() {
        let desired = serde_json::json!({"spec": {"a": 1, "l": [{"x": 1}]}});
        let live =
            serde_json::json!({"spec": {"a": 1, "b": 2, "l": [{"x": 1, "y": 0}]}, "status": {}});
        assert!(is_subset(&desired, &live));
        let drifted = serde_json::json!({"spec": {"a": 2, "l": [{"x": 1}]}});
        assert!(!is_subset(&desired, &drifted));
        let shorter = serde_json::json!({"spec": {"a": 1, "l": []}});
        assert!(!is_subset(&desired, &shorter));
    }

    #[test]
    fn namespace_ranks_before_job() {
        let ns = parse(
            "n.yaml",
            b"apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
        )
        .unwrap();
        let job = parse(
            "j.yaml",
            b"apiVersion: batch/v1\nkind: Job\nmetadata: {name: j, namespace: n}\n",
        )
        .unwrap();
        assert!(ns.rank < job.rank);
        assert_eq!(ns.namespace, None);
    }
}

//! What is desired: Kubernetes objects parsed from state-repo files.
//!
//! Invariants: only the kinds issueops renders are accepted (a Secret or any
//! unknown kind in the state repo is refused, never applied), and the order of
//! kinds is fixed: cluster-scoped objects first on apply, last on delete. An
//! object is in scope ([`Scope::check`]) only inside its issue's folder and
//! namespace, with this install's labels.

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
    #[error("{path}: refused, outside what this install manages: {reason}")]
    OutOfScope { path: String, reason: String },
    #[error("{path}: refused, weaker than what issueops renders: {reason}")]
    Weakened { path: String, reason: String },
}

/// What one install may touch: the kinds of `cluster.kinds`, in issue
/// namespaces (`issues/<bucket>/<namespace>/…`, named as issueops names them), with
/// its managed-by and instance labels.
#[derive(Debug, Clone)]
pub struct Scope {
    pub instance: String,
    pub kinds: Vec<String>,
    /// The Pod Security level issue namespaces must carry (`cluster.pod_security`).
    pub pod_security: String,
}

impl Scope {
    pub fn new(instance: &str, kinds: &[String]) -> Self {
        Self {
            instance: instance.into(),
            kinds: kinds.to_vec(),
            pod_security: issueops_core::config::ClusterConfig::default().pod_security,
        }
    }

    /// Why `obj` must not be applied for what it says (`invariants`), if it
    /// must not. Deletes are not judged by content.
    pub fn check_content(&self, obj: &DesiredObject) -> Result<(), DesiredError> {
        crate::invariants::check(&obj.resource.kind, &obj.object, &self.pod_security).map_err(
            |reason| DesiredError::Weakened {
                path: obj.path.clone(),
                reason,
            },
        )
    }

    /// [`Scope::check`], then [`Scope::check_content`] for an apply.
    pub fn admit(&self, obj: &DesiredObject, delete: bool) -> Result<(), DesiredError> {
        self.check(obj)?;
        if delete {
            Ok(())
        } else {
            self.check_content(obj)
        }
    }

    /// Why `obj` must not be applied (or deleted) by this install, if it must not.
    pub fn check(&self, obj: &DesiredObject) -> Result<(), DesiredError> {
        let refuse = |reason: String| DesiredError::OutOfScope {
            path: obj.path.clone(),
            reason,
        };
        let kind = &obj.resource.kind;
        if !self.kinds.iter().any(|k| k == kind) {
            return Err(refuse(format!(
                "kind {kind} is not in cluster.kinds ({})",
                self.kinds.join(", ")
            )));
        }
        let folder = issueops_core::state_repo::namespace_of(&obj.path)
            .map_err(|e| refuse(e.to_string()))?;
        let namespace = obj.namespace.as_deref().unwrap_or(&obj.name);
        if namespace != folder {
            return Err(refuse(format!(
                "{} belongs to namespace {namespace:?}, but its file is in the folder of {folder:?}",
                obj.reference()
            )));
        }
        let managed = obj.label(issueops_core::MANAGED_BY_LABEL);
        let instance = obj.label(issueops_core::INSTANCE_LABEL);
        if managed != Some(issueops_core::MANAGED_BY_VALUE) || instance != Some(&self.instance) {
            return Err(refuse(format!(
                "it lacks the labels {}={} and {}={}",
                issueops_core::MANAGED_BY_LABEL,
                issueops_core::MANAGED_BY_VALUE,
                issueops_core::INSTANCE_LABEL,
                self.instance
            )));
        }
        Ok(())
    }
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
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
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
    /// The git blob id of the file: put on the object as
    /// [`issueops_core::DIGEST_ANNOTATION`] when applied.
    pub digest: issueops_core::state_repo::Oid,
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
        digest: issueops_core::state_repo::blob_id(content),
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
/// server adds are ignored). Lists must match element by element. Quantities
/// compare by value: the API server stores `0.5` as `500m` and `1024Mi` as
/// `1Gi`, and that is no drift.
pub fn is_subset(desired: &serde_json::Value, live: &serde_json::Value) -> bool {
    first_difference(desired, live).is_none()
}

/// Where `live` first differs from what `desired` sets (`spec.template...`),
/// by [`is_subset`]'s rules; `None` when it does not. Said in drift audit rows.
pub fn first_difference(desired: &serde_json::Value, live: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let join = |k: &str, rest: Option<String>| -> String {
        match rest.filter(|r| !r.is_empty()) {
            Some(r) if r.starts_with('[') => format!("{k}{r}"),
            Some(r) => format!("{k}.{r}"),
            None => k.to_string(),
        }
    };
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, v)| match l.get(k) {
            // The API server omits empty values (`ingress: []`) when it stores them.
            None if v.is_null()
                || v.as_array().is_some_and(|a| a.is_empty())
                || v.as_object().is_some_and(|o| o.is_empty()) =>
            {
                None
            }
            None => Some(join(k, None)),
            Some(lv) => first_difference(v, lv).map(|r| join(k, Some(r))),
        }),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            d.iter().zip(l).enumerate().find_map(|(i, (a, b))| {
                first_difference(a, b).map(|r| join(&format!("[{i}]"), Some(r)))
            })
        }
        (Value::String(d), Value::String(l)) if d == l || same_quantity(d, l) => None,
        (Value::Number(d), Value::String(l)) if same_quantity(&d.to_string(), l) => None,
        (d, l) if d == l => None,
        _ => Some(String::new()),
    }
}

/// Whether two strings are the same Kubernetes quantity written two ways.
fn same_quantity(a: &str, b: &str) -> bool {
    matches!((quantity_nanos(a), quantity_nanos(b)), (Some(x), Some(y)) if x == y)
}

/// A Kubernetes quantity (`1.5`, `500m`, `2G`, `1Gi`, `1e3`) in billionths,
/// rounded up as the API server rounds; `None` when `s` is not one.
pub fn quantity_nanos(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, digits) = match number.as_bytes().first()? {
        b'-' => (true, &number[1..]),
        b'+' => (false, &number[1..]),
        _ => (false, number),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // value = mantissa × 10^exp10 × 2^exp2
    let mut mantissa: i128 = format!("{whole}{frac}").parse().ok()?;
    let mut exp10: i32 = -(frac.len() as i32);
    let exp2: u32 = match suffix {
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        "Ti" => 40,
        "Pi" => 50,
        "Ei" => 60,
        _ => 0,
    };
    if exp2 == 0 {
        exp10 += match suffix {
            "" => 0,
            "n" => -9,
            "u" => -6,
            "m" => -3,
            "k" => 3,
            "M" => 6,
            "G" => 9,
            "T" => 12,
            "P" => 15,
            "E" => 18,
            e if e.starts_with(['e', 'E']) => e[1..].parse::<i32>().ok()?,
            _ => return None,
        };
    }
    mantissa = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let scale = exp10 + 9;
    let nanos = if scale >= 0 {
        mantissa.checked_mul(10i128.checked_pow(scale as u32)?)?
    } else {
        let div = 10i128.checked_pow(scale.unsigned_abs())?;
        (mantissa + div - 1) / div
    };
    Some(if negative { -nanos } else { nanos })
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
        // What the API server leaves out when it stores an object.
        let empty = serde_json::json!({"spec": {"ingress": [], "podSelector": {}, "x": null}});
        assert!(is_subset(&empty, &serde_json::json!({"spec": {}})));
        assert_eq!(
            first_difference(&desired, &drifted).as_deref(),
            Some("spec.a")
        );
        assert_eq!(
            first_difference(
                &desired,
                &serde_json::json!({"spec": {"a": 1, "l": [{"x": 2}]}})
            )
            .as_deref(),
            Some("spec.l[0].x")
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        for (a, b) in [
            ("0.5", "500m"),
            ("1000m", "1"),
            ("1024Mi", "1Gi"),
            ("2G", "2G"),
            ("2000M", "2G"),
            ("1e3", "1k"),
            ("0.1", "100m"),
        ] {
            assert_eq!(quantity_nanos(a), quantity_nanos(b), "{a} vs {b}");
            assert!(
                is_subset(&serde_json::json!(a), &serde_json::json!(b)),
                "{a} vs {b}"
            );
        }
        assert!(is_subset(
            &serde_json::json!(0.5),
            &serde_json::json!("500m")
        ));
        assert!(!is_subset(
            &serde_json::json!("1Gi"),
            &serde_json::json!("1G")
        ));
        assert!(!is_subset(
            &serde_json::json!("500m"),
            &serde_json::json!("1")
        ));
        assert!(!is_subset(
            &serde_json::json!("ALL"),
            &serde_json::json!("NET_RAW")
        ));
        assert_eq!(quantity_nanos("run-abc"), None);
        assert_eq!(quantity_nanos("1Xi"), None);
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

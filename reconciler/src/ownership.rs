//! Field ownership: which of the fields a desired object sets are owned by a
//! field manager, read from the object's `managedFields` (`fieldsV1`).
//!
//! Why this is enough to find drift: every field issueops applies is owned by
//! its manager (`issueops`) until someone else changes or removes it. A change
//! by another manager (`kubectl edit`, `kubectl apply`, a controller) moves the
//! field to that manager; a removal drops it from every set. So "every field
//! the file sets is still ours", together with the object's digest annotation
//! naming the file at HEAD, means the live values are the file's, without
//! keeping or comparing the objects themselves.
//!
//! The walk needs no schema: a list item is matched by its `k:` key (all key
//! fields the desired item has must agree), its `v:` value or its `i:` index,
//! and a list owned as a leaf is atomic (owned whole).

use serde_json::{Map, Value};

/// Fields the API server keeps out of `managedFields`: the object's identity.
const IDENTITY: [&str; 2] = ["apiVersion", "kind"];
const IDENTITY_METADATA: [&str; 2] = ["name", "namespace"];

/// The fields `desired` sets that `fields` (one manager's `fieldsV1`) does
/// not own, as paths (`data.x`, `spec.containers[name=agent].image`), at
/// most `limit` of them.
pub fn unowned(desired: &Value, fields: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    walk(desired, fields, "", true, limit, &mut |path, owned| {
        if !owned {
            out.push(path.to_string());
        }
    });
    out
}

/// The fields `desired`'s file sets that issueops' apply does not own in
/// `fields` (a live object's field sets), at most `limit`: empty means the
/// live object has the file's values.
pub fn unowned_by_us(
    desired: &crate::desired::DesiredObject,
    fields: Option<&crate::inventory::Fields>,
    limit: usize,
) -> Vec<String> {
    let want = serde_json::to_value(&desired.object).unwrap_or_default();
    let ours = fields
        .and_then(|f| f.ours.as_deref())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    unowned(&want, &ours, limit)
}

/// Whether `fields` (another manager's `fieldsV1`) owns the field at `path`
/// of `desired`.
pub fn owns(desired: &Value, fields: &Value, path: &str) -> bool {
    let mut found = false;
    walk(desired, fields, "", true, usize::MAX, &mut |p, owned| {
        found |= owned && p == path;
    });
    found
}

/// Visits every leaf `desired` sets with whether `fields` owns it; stops
/// after `limit` unowned leaves.
fn walk(
    desired: &Value,
    fields: &Value,
    path: &str,
    top: bool,
    limit: usize,
    visit: &mut dyn FnMut(&str, bool),
) -> usize {
    let Value::Object(map) = desired else {
        return 0;
    };
    let empty = Map::new();
    let owned = fields.as_object().unwrap_or(&empty);
    let mut missing = 0;
    for (key, value) in map {
        if missing >= limit {
            break;
        }
        if top && IDENTITY.contains(&key.as_str()) {
            continue;
        }
        if is_empty(value) {
            // Nothing to own (and empty values are not always recorded).
            continue;
        }
        let here = join(path, key);
        let sub_fields = if top && key == "metadata" {
            // Identity fields of metadata are never owned.
            let mut m = value.as_object().cloned().unwrap_or_default();
            for k in IDENTITY_METADATA {
                m.remove(k);
            }
            match owned.get("f:metadata") {
                Some(f) => {
                    missing += walk(&Value::Object(m), f, &here, false, limit - missing, visit);
                    continue;
                }
                None if m.values().all(is_empty) => continue,
                None => None,
            }
        } else {
            owned.get(&format!("f:{key}"))
        };
        let Some(sub_fields) = sub_fields else {
            visit(&here, false);
            missing += 1;
            continue;
        };
        if sub_fields.as_object().is_none_or(|m| m.is_empty()) {
            // Owned as a leaf: an atomic struct or list (`roleRef`), owned whole.
            visit(&here, true);
            continue;
        }
        missing += match value {
            Value::Object(_) => walk(value, sub_fields, &here, false, limit - missing, visit),
            Value::Array(items) => walk_list(items, sub_fields, &here, limit - missing, visit),
            _ => {
                visit(&here, true);
                0
            }
        };
    }
    missing
}

fn walk_list(
    items: &[Value],
    fields: &Value,
    path: &str,
    limit: usize,
    visit: &mut dyn FnMut(&str, bool),
) -> usize {
    let owned = match fields.as_object() {
        Some(m) if !m.is_empty() => m,
        // Owned as a leaf: an atomic list, owned whole.
        _ => {
            visit(path, true);
            return 0;
        }
    };
    let mut missing = 0;
    for (i, item) in items.iter().enumerate() {
        if missing >= limit {
            break;
        }
        let found = owned
            .iter()
            .find(|(k, _)| item_matches(k, item, i))
            .map(|(k, v)| (k.as_str(), v));
        let here = format!("{path}[{}]", item_label(found.map(|(k, _)| k), i));
        match found {
            None => {
                visit(&here, false);
                missing += 1;
            }
            Some((_, sub)) => {
                missing += match item {
                    Value::Object(_) => walk(item, sub, &here, false, limit - missing, visit),
                    _ => {
                        visit(&here, true);
                        0
                    }
                }
            }
        }
    }
    missing
}

/// Whether `fieldsV1` list key `key` names `item` (at index `index`).
fn item_matches(key: &str, item: &Value, index: usize) -> bool {
    if let Some(k) = key.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        let Some(obj) = item.as_object() else {
            return false;
        };
        // Key fields the desired item leaves out are defaulted by the server
        // (a port's protocol): only the ones it sets must agree.
        let mut any = false;
        for (name, want) in &keys {
            match obj.get(name) {
                Some(have) if have == want => any = true,
                Some(_) => return false,
                None => {}
            }
        }
        any
    } else if let Some(v) = key.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|v| &v == item)
    } else if let Some(i) = key.strip_prefix("i:") {
        i.parse::<usize>().is_ok_and(|i| i == index)
    } else {
        false
    }
}

fn item_label(key: Option<&str>, index: usize) -> String {
    match key.and_then(|k| k.strip_prefix("k:")) {
        Some(k) => match serde_json::from_str::<Map<String, Value>>(k) {
            Ok(m) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(","),
            Err(_) => index.to_string(),
        },
        None => index.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "run-1", "namespace": "ns", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {
                "containers": [{"name": "agent", "image": "img:1", "args": ["x", "y"],
                                "ports": [{"containerPort": 80}]}],
                "volumes": [{"name": "home", "emptyDir": {}}]
            }}}
        })
    }

    /// What kube-apiserver records for issueops' apply of [`job`].
    fn applied_fields() -> Value {
        json!({
            "f:metadata": {"f:labels": {"f:a": {}}},
            "f:spec": {"f:template": {"f:spec": {
                "f:containers": {"k:{\"name\":\"agent\"}": {
                    ".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                }},
                "f:volumes": {"k:{\"name\":\"home\"}": {".": {}, "f:name": {}, "f:emptyDir": {}}}
            }}}
        })
    }

    #[test]
    fn everything_applied_is_owned() {
        assert_eq!(unowned(&job(), &applied_fields(), 10), Vec::<String>::new());
    }

    #[test]
    fn a_field_taken_by_another_manager_is_named() {
        let mut ours = applied_fields();
        ours["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"agent\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:image");
        let path = "spec.template.spec.containers[name=agent].image";
        assert_eq!(unowned(&job(), &ours, 10), vec![path.to_string()]);
        let theirs = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"agent\"}": {"f:image": {}}}}}}});
        assert!(owns(&job(), &theirs, path));
        assert!(!owns(&job(), &theirs, "metadata.labels.a"));
    }

    #[test]
    fn a_removed_label_and_list_item_are_unowned() {
        let mut ours = applied_fields();
        ours["f:metadata"]["f:labels"] = json!({"f:b": {}});
        ours["f:spec"]["f:template"]["f:spec"]["f:volumes"] = json!({"k:{\"name\":\"other\"}": {}});
        assert_eq!(
            unowned(&job(), &ours, 10),
            vec![
                "metadata.labels.a".to_string(),
                "spec.template.spec.volumes[0]".to_string()
            ]
        );
        assert_eq!(unowned(&job(), &ours, 1).len(), 1, "stops at the limit");
    }

    #[test]
    fn atomic_lists_and_empty_values_need_no_item_keys() {
        // kube-fake-client records lists as leaves and leaves out empty maps.
        let fields = json!({"f:metadata": {"f:labels": {"f:a": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {}, "f:volumes": {}}}}});
        assert!(unowned(&job(), &fields, 10).is_empty());
        // An atomic struct (a RoleBinding's roleRef) is owned as a leaf.
        let binding = json!({"roleRef": {"kind": "Role", "name": "agent"}});
        assert!(unowned(&binding, &json!({"f:roleRef": {}}), 10).is_empty());
        assert_eq!(unowned(&job(), &json!({}), 10).len(), 2);
    }
}

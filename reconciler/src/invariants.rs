//! What an object from the state repo may *say*, beyond where it may go
//! (`desired::Scope`): the state repo is an input like a webhook. A hand
//! edit, an old commit brought back by a rollback, or a merged pull request
//! could otherwise weaken an issue namespace's Pod Security label, add a
//! privileged or hostPath Job, widen the agent's Role or bind it to someone
//! else. Each rule here is also enforced by the API server through the
//! ValidatingAdmissionPolicy in `deploy/` (so a cluster with the policy is
//! protected even from a compromised issueops); checking here first makes a
//! cluster without it safe too, and the refusal readable in `plan` and the
//! audit table.
//!
//! The rules follow what the templates render: a template change that needs
//! more must change these rules (and the policy) with it, on purpose.

use kube::core::DynamicObject;
use serde_json::Value;

/// The Role rules the agent may get: (API groups, resources, verbs) of
/// `manifests-templates/issue/role.yaml`. A rule is allowed when each of its
/// groups, resources and verbs is within one of these.
const AGENT_ROLE: &[(&[&str], &[&str], &[&str])] = &[
    (&[""], &["pods", "pods/log"], &["get", "list", "watch"]),
    (
        &[""],
        &["configmaps"],
        &["get", "list", "watch", "create", "update", "patch"],
    ),
];

/// The Role and ServiceAccount of every issue namespace.
pub const AGENT: &str = "agent";

/// Volume sources Pod Security `restricted` allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Why `object` (of `kind`, in an issue namespace, with Pod Security level
/// `pod_security` configured) must not be applied, if it must not.
pub fn check(kind: &str, object: &DynamicObject, pod_security: &str) -> Result<(), String> {
    let data = &object.data;
    match kind {
        "Namespace" => namespace(object, pod_security),
        "Role" => role(data),
        "RoleBinding" => role_binding(object),
        "Job" => job(data),
        _ => Ok(()),
    }
}

fn namespace(object: &DynamicObject, pod_security: &str) -> Result<(), String> {
    let labels = object.metadata.labels.clone().unwrap_or_default();
    for mode in ["enforce", "warn", "audit"] {
        let key = format!("pod-security.kubernetes.io/{mode}");
        let value = labels.get(&key).map(String::as_str);
        if value != Some(pod_security) {
            return Err(format!(
                "the Namespace's {key} label is {value:?}, not {pod_security:?} (cluster.pod_security)"
            ));
        }
    }
    if let Some(version) = labels.get("pod-security.kubernetes.io/enforce-version") {
        if version != "latest" {
            return Err(format!(
                "the Namespace pins pod-security.kubernetes.io/enforce-version to {version:?}: an older profile may be weaker"
            ));
        }
    }
    Ok(())
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn role(data: &Value) -> Result<(), String> {
    let Some(rules) = data.get("rules").and_then(Value::as_array) else {
        return Ok(());
    };
    for (i, rule) in rules.iter().enumerate() {
        if rule.get("nonResourceURLs").is_some() {
            return Err(format!("Role rule {i} names nonResourceURLs"));
        }
        let (groups, resources, verbs) = (
            strings(&rule["apiGroups"]),
            strings(&rule["resources"]),
            strings(&rule["verbs"]),
        );
        let within = AGENT_ROLE.iter().any(|(g, r, v)| {
            groups.iter().all(|x| g.contains(x))
                && resources.iter().all(|x| r.contains(x))
                && verbs.iter().all(|x| v.contains(x))
        });
        if !within {
            return Err(format!(
                "Role rule {i} (apiGroups {groups:?}, resources {resources:?}, verbs {verbs:?}) grants more than the agent's Role template"
            ));
        }
    }
    Ok(())
}

fn role_binding(object: &DynamicObject) -> Result<(), String> {
    let data = &object.data;
    let role_ref = &data["roleRef"];
    if role_ref["kind"] != "Role"
        || role_ref["name"] != AGENT
        || role_ref["apiGroup"] != "rbac.authorization.k8s.io"
    {
        return Err(format!(
            "the RoleBinding refers to {} {}, not the issue's Role {AGENT}",
            role_ref["kind"], role_ref["name"]
        ));
    }
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    let subjects = data["subjects"].as_array().cloned().unwrap_or_default();
    let own = |s: &Value| {
        s["kind"] == "ServiceAccount"
            && s["name"] == AGENT
            && s["namespace"].as_str().is_none_or(|n| n == namespace)
    };
    if subjects.is_empty() || !subjects.iter().all(own) {
        return Err(format!(
            "the RoleBinding binds {}, not only the issue's ServiceAccount {AGENT}",
            Value::Array(subjects)
        ));
    }
    Ok(())
}

/// The pod template against Pod Security `restricted` (what the API server's
/// PodSecurity admission would refuse at pod creation, refused here before
/// the Job exists), and the issue's own ServiceAccount.
fn job(data: &Value) -> Result<(), String> {
    let pod = &data["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().unwrap_or("default");
    if account != AGENT {
        return Err(format!(
            "the Job's pods run as ServiceAccount {account:?}, not the issue's {AGENT:?}"
        ));
    }
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            return Err(format!("the Job's pods set {host}"));
        }
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("?");
        let source = volume
            .as_object()
            .and_then(|o| o.keys().find(|k| k.as_str() != "name"))
            .map(String::as_str)
            .unwrap_or("none");
        if !RESTRICTED_VOLUMES.contains(&source) {
            return Err(format!(
                "the Job's volume {name:?} is a {source} volume (restricted allows {})",
                RESTRICTED_VOLUMES.join(", ")
            ));
        }
    }
    let pod_context = &pod["securityContext"];
    let pod_non_root = pod_context["runAsNonRoot"] == true;
    if pod_context["runAsUser"] == 0 {
        return Err("the Job's pods run as user 0".into());
    }
    seccomp(&pod_context["seccompProfile"], None)?;
    let pod_seccomp = pod_context["seccompProfile"]["type"].is_string();
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().cloned().unwrap_or_default());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?").to_string();
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            return Err(format!("the Job's container {name:?} is privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            return Err(format!(
                "the Job's container {name:?} does not set allowPrivilegeEscalation: false"
            ));
        }
        if sc["runAsUser"] == 0 {
            return Err(format!("the Job's container {name:?} runs as user 0"));
        }
        if sc["runAsNonRoot"] == false || !(pod_non_root || sc["runAsNonRoot"] == true) {
            return Err(format!(
                "the Job's container {name:?} is not required to run as non-root"
            ));
        }
        let drop = strings(&sc["capabilities"]["drop"]);
        if !drop.contains(&"ALL") {
            return Err(format!(
                "the Job's container {name:?} does not drop ALL capabilities"
            ));
        }
        let add = strings(&sc["capabilities"]["add"]);
        if add.iter().any(|a| *a != "NET_BIND_SERVICE") {
            return Err(format!(
                "the Job's container {name:?} adds capabilities {add:?}"
            ));
        }
        if !sc["seccompProfile"]["type"].is_string() && !pod_seccomp {
            return Err(format!(
                "the Job's container {name:?} has no seccomp profile (RuntimeDefault or Localhost)"
            ));
        }
        seccomp(&sc["seccompProfile"], Some(&name))?;
        for port in c["ports"].as_array().into_iter().flatten() {
            if port.get("hostPort").is_some_and(|p| p != 0) {
                return Err(format!("the Job's container {name:?} opens a host port"));
            }
        }
    }
    Ok(())
}

fn seccomp(profile: &Value, container: Option<&str>) -> Result<(), String> {
    match profile["type"].as_str() {
        None | Some("RuntimeDefault") | Some("Localhost") => Ok(()),
        Some(other) => Err(format!(
            "the Job's {} seccomp profile is {other}",
            container.map_or("pod's".to_string(), |c| format!("container {c:?}'s"))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn hardened_job() -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "name": "run-r1", "namespace": "ns" },
            "spec": { "template": { "spec": {
                "serviceAccountName": "agent",
                "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
                "containers": [{
                    "name": "agent", "image": "x",
                    "securityContext": {
                        "runAsNonRoot": true, "allowPrivilegeEscalation": false, "privileged": false,
                        "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" }
                    }
                }],
                "volumes": [
                    { "name": "workspace", "emptyDir": {} },
                    { "name": "agent-home", "persistentVolumeClaim": { "claimName": "agent-home" } }
                ]
            }}}
        })
    }

    #[test]
    fn the_hardened_job_passes_and_each_weakening_is_refused() {
        assert_eq!(check("Job", &object(hardened_job()), "restricted"), Ok(()));
        type Weaken = Box<dyn Fn(&mut Value)>;
        let weakened: Vec<(&str, Weaken)> = vec![
            (
                "privileged",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                        ["privileged"] = json!(true)
                }),
            ),
            (
                "allowPrivilegeEscalation",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                        ["allowPrivilegeEscalation"] = json!(true)
                }),
            ),
            (
                "hostPath",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["volumes"][0] =
                        json!({ "name": "host", "hostPath": { "path": "/" } })
                }),
            ),
            (
                "hostNetwork",
                Box::new(|j| j["spec"]["template"]["spec"]["hostNetwork"] = json!(true)),
            ),
            (
                "user 0",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] =
                        json!(0)
                }),
            ),
            (
                "non-root",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                        ["runAsNonRoot"] = json!(false);
                }),
            ),
            (
                "capabilities",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                        ["capabilities"]["add"] = json!(["SYS_ADMIN"])
                }),
            ),
            (
                "drop ALL",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                        ["capabilities"]["drop"] = json!([])
                }),
            ),
            (
                "seccomp",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                        ["seccompProfile"]["type"] = json!("Unconfined")
                }),
            ),
            (
                "ServiceAccount",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["serviceAccountName"] = json!("default")
                }),
            ),
            (
                "init container",
                Box::new(
                    |j| j["spec"]["template"]["spec"]["initContainers"] = json!([{ "name": "setup", "image": "x", "securityContext": { "privileged": true } }]),
                ),
            ),
            (
                "host port",
                Box::new(|j| {
                    j["spec"]["template"]["spec"]["containers"][0]["ports"] =
                        json!([{ "containerPort": 80, "hostPort": 80 }])
                }),
            ),
        ];
        for (what, weaken) in weakened {
            let mut job = hardened_job();
            weaken(&mut job);
            assert!(
                check("Job", &object(job), "restricted").is_err(),
                "{what} was let through"
            );
        }
    }

    #[test]
    fn namespaces_keep_the_configured_pod_security_level() {
        let ns = |enforce: &str| {
            object(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": "ns", "labels": {
                    "pod-security.kubernetes.io/enforce": enforce,
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                }}
            }))
        };
        assert_eq!(check("Namespace", &ns("restricted"), "restricted"), Ok(()));
        let refused = check("Namespace", &ns("privileged"), "restricted").unwrap_err();
        assert!(refused.contains("enforce"), "{refused}");
        let unlabelled = object(
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "ns" } }),
        );
        assert!(check("Namespace", &unlabelled, "restricted").is_err());
    }

    #[test]
    fn the_role_stays_within_the_template_and_binds_only_the_agent() {
        let role = |rules: Value| {
            object(
                json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": { "name": "agent", "namespace": "ns" }, "rules": rules }),
            )
        };
        let template = json!([
            { "apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch"] }
        ]);
        assert_eq!(check("Role", &role(template), "restricted"), Ok(()));
        assert_eq!(
            check(
                "Role",
                &role(json!([{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] }])),
                "restricted"
            ),
            Ok(()),
            "narrower is fine"
        );
        for wider in [
            json!([{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] }]),
            json!([{ "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] }]),
            json!([{ "apiGroups": [""], "resources": ["pods"], "verbs": ["create"] }]),
            json!([{ "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"] }]),
            json!([{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }]),
        ] {
            assert!(
                check("Role", &role(wider.clone()), "restricted").is_err(),
                "{wider}"
            );
        }
        let binding = |role_ref: Value, subjects: Value| {
            object(
                json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": { "name": "agent", "namespace": "ns" }, "roleRef": role_ref, "subjects": subjects }),
            )
        };
        let own_ref =
            json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent" });
        let own_sa = json!([{ "kind": "ServiceAccount", "name": "agent", "namespace": "ns" }]);
        assert_eq!(
            check(
                "RoleBinding",
                &binding(own_ref.clone(), own_sa.clone()),
                "restricted"
            ),
            Ok(())
        );
        for (role_ref, subjects) in [
            (
                json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" }),
                own_sa.clone(),
            ),
            (
                own_ref.clone(),
                json!([{ "kind": "ServiceAccount", "name": "default", "namespace": "kube-system" }]),
            ),
            (
                own_ref.clone(),
                json!([{ "kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io" }]),
            ),
            (own_ref.clone(), json!([])),
        ] {
            assert!(
                check(
                    "RoleBinding",
                    &binding(role_ref.clone(), subjects.clone()),
                    "restricted"
                )
                .is_err(),
                "{role_ref} {subjects}"
            );
        }
    }
}

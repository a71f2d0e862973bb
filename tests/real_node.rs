//! The test cluster's real node (`scripts/lib/real-node.sh`): a kubelet built
//! from the Kubernetes module, Debian's containerd and runc, CNI bridge
//! networking. What only a real node shows: Pod Security `restricted`
//! refuses an unhardened pod at admission *and* the hardened one really
//! starts (non-root, read-only root, no capabilities, RuntimeDefault seccomp)
//! in a container with an address of its own, and `pods/log` through the API
//! server reaches the kubelet.

mod common;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// The real node's name (`REAL_NODE` in scripts/lib/real-node.sh).
const NODE: &str = "issueops-node";
/// The pause image the script builds and loads into the node's containerd.
const IMAGE: &str = "registry.k8s.io/pause:3.10";

fn pod(name: &str, security: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            // No scheduler here: the pod names its node, so the stand-in leaves it alone.
            "nodeName": NODE,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{ "name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                "securityContext": security }],
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn restricted_refuses_an_unhardened_pod_and_runs_the_hardened_one_in_a_real_container() {
    let client = kube::Client::try_from(common::real_config().await).unwrap();
    let node = Api::<Node>::all(client.clone()).get(NODE).await.unwrap();
    let info = node.status.clone().unwrap().node_info.unwrap();
    assert_eq!(info.kubelet_version, "v1.36.3");
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );

    let namespace = format!("real-node-{}", common::unique_issue());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels: serde_json::Map<String, serde_json::Value> = ["enforce", "warn", "audit"]
        .iter()
        .map(|m| {
            (
                format!("pod-security.kubernetes.io/{m}"),
                json!("restricted"),
            )
        })
        .collect();
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace, "labels": labels } }))
                .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    // Capabilities kept and escalation allowed: refused at admission.
    let refused = pods
        .create(
            &PostParams::default(),
            &pod("unhardened", json!({ "allowPrivilegeEscalation": true })),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("not an API refusal: {refused}")
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("restricted"), "{}", status.message);

    let hardened = json!({
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "privileged": false,
        "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" },
    });
    pods.create(&PostParams::default(), &pod("hardened", hardened))
        .await
        .unwrap();
    let running = common::wait_for(
        "the hardened pod runs on the real node",
        Duration::from_secs(90),
        || async {
            let p = pods.get("hardened").await.unwrap();
            let status = p.status.clone()?;
            (status.phase.as_deref() == Some("Running")).then_some(p)
        },
    )
    .await;
    let status = running.status.unwrap();
    let container = &status.container_statuses.unwrap()[0];
    assert!(
        container
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{container:?}"
    );
    let ip = status.pod_ip.expect("the pod has an address");
    assert!(ip.starts_with("10.244.0."), "{ip}");
    // The API server proxies pods/log to the kubelet (pause prints nothing).
    let log = pods.logs("hardened", &LogParams::default()).await.unwrap();
    assert_eq!(log, "");

    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    common::wait_for(
        "the namespace and its pod are gone",
        Duration::from_secs(90),
        || async {
            namespaces
                .get_opt(&namespace)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

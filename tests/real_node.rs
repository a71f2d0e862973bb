//! The test cluster's real node (`scripts/lib/real-node.sh`): a kubelet built
//! from the Kubernetes module, Debian's containerd and runc, CNI bridge
//! networking. What only a real node shows: Pod Security `restricted`
//! refuses an unhardened pod at admission *and* the hardened one really
//! starts (non-root, read-only root, no capabilities, RuntimeDefault seccomp)
//! in a container with an address of its own, and `pods/log` through the API
//! server reaches the kubelet; the agent image's runner runs there as the Job
//! runs it, and the termination message a real runtime keeps is the one the
//! reconciler parses.

mod common;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// The real node's name (`REAL_NODE` in scripts/lib/real-node.sh).
const NODE: &str = "issueops-node";
/// The pause image the script builds and loads into the node's containerd.
const IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The agent image's test build the script loads (`AGENT_IMAGE`).
const AGENT_IMAGE: &str = "issueops.test/agent:dev";
/// The container security context of the Job template's steps.
fn hardened() -> serde_json::Value {
    json!({
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "privileged": false,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// A namespace labelled Pod Security `restricted`, as issue namespaces are.
async fn restricted_namespace(client: &kube::Client) -> String {
    let namespace = format!("real-node-{}", common::unique_issue());
    let labels: serde_json::Map<String, serde_json::Value> = ["enforce", "warn", "audit"]
        .iter()
        .map(|m| {
            (
                format!("pod-security.kubernetes.io/{m}"),
                json!("restricted"),
            )
        })
        .collect();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace, "labels": labels } }))
                .unwrap(),
        )
        .await
        .unwrap();
    namespace
}

async fn delete_namespace(client: &kube::Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(namespace, &DeleteParams::default())
        .await
        .unwrap();
    common::wait_for(
        "the namespace and its pod are gone",
        Duration::from_secs(90),
        || async {
            namespaces
                .get_opt(namespace)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

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
    assert_eq!(
        info.kubelet_version,
        std::env::var("ISSUEOPS_TEST_KUBE_VERSION").unwrap()
    );
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );

    let namespace = restricted_namespace(&client).await;
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

    pods.create(&PostParams::default(), &pod("hardened", hardened()))
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

    delete_namespace(&client, &namespace).await;
}

/// The agent image's runner, in a real container as the Job template runs a
/// step (uid 65532, read-only root, its termination message file), given a
/// step it does not know: it exits 2, and the message the runtime kept is the
/// runner's result document, which the reconciler reads as the run's result.
#[tokio::test]
async fn the_agent_images_runner_leaves_its_result_as_a_real_termination_message() {
    let client = kube::Client::try_from(common::real_config().await).unwrap();
    let namespace = restricted_namespace(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut step = pod("runner", hardened());
    let mut container = serde_json::to_value(&step.spec.as_ref().unwrap().containers[0]).unwrap();
    container["name"] = json!("agent");
    container["image"] = json!(AGENT_IMAGE);
    container["args"] = json!(["push"]);
    container["env"] = json!([{ "name": "ISSUEOPS_RESULT_FILE", "value": "/dev/termination-log" }]);
    container["terminationMessagePath"] = json!("/dev/termination-log");
    container["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    step.spec.as_mut().unwrap().containers[0] = serde_json::from_value(container).unwrap();
    pods.create(&PostParams::default(), &step).await.unwrap();
    let ended = common::wait_for(
        "the runner's container ends",
        Duration::from_secs(90),
        || async {
            let p = pods.get("runner").await.unwrap();
            let status = p.status.clone()?;
            let state = status.container_statuses?.first()?.state.clone()?;
            state.terminated
        },
    )
    .await;
    assert_eq!(ended.exit_code, 2, "{ended:?}");
    let message = ended.message.clone().expect("a termination message");
    let Some(issueops_reconciler::agent_result::Message::Result(result)) =
        issueops_reconciler::agent_result::parse(&message)
    else {
        panic!("not the runner's result document: {message}")
    };
    assert_eq!(result.outcome, "failed");
    let reason = result.reason.unwrap_or_default();
    assert!(
        reason.contains("\"push\"") && reason.contains("clone, agent, publish"),
        "{reason}"
    );
    // What the step printed is kept as the run's transcript, through the
    // real pods/log (the kubelet's log of the container), outliving the pod.
    let dir = tempfile::tempdir().unwrap();
    let store =
        issueops_core::Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
    store.migrate().await.unwrap();
    let kept = issueops_reconciler::transcript::keep(
        &client,
        &store,
        &namespace,
        "runner",
        &["agent".to_string()],
        "r-transcript",
    )
    .await
    .unwrap();
    assert!(kept);
    delete_namespace(&client, &namespace).await;
    let transcript = store.transcript("r-transcript").await.unwrap().unwrap();
    assert!(
        transcript.text.starts_with("===== agent =====\n") && transcript.text.contains("push"),
        "{}",
        transcript.text
    );
}

/// The issueops image the script builds from deploy/Dockerfile on the same
/// locally made base as the agent image (`ISSUEOPS_IMAGE` there).
const ISSUEOPS_IMAGE: &str = "issueops.test/issueops:dev";

/// deploy/Dockerfile's image in a real container, as deploy/ runs it (uid
/// 65532, read-only root, all capabilities dropped, restricted): `issueops
/// demo` takes a signed delivery through its gateway to a commit and the
/// applied objects inside the container, so the binary, its libraries and
/// its entrypoint work on that base.
#[tokio::test]
async fn the_issueops_image_runs_the_whole_path_in_a_real_container() {
    let client = kube::Client::try_from(common::real_config().await).unwrap();
    let namespace = restricted_namespace(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut demo = pod("issueops", hardened());
    let mut container = serde_json::to_value(&demo.spec.as_ref().unwrap().containers[0]).unwrap();
    container["name"] = json!("issueops");
    container["image"] = json!(ISSUEOPS_IMAGE);
    container["args"] = json!(["demo"]);
    container["env"] = json!([{ "name": "TMPDIR", "value": "/tmp" }]);
    container["volumeMounts"] = json!([{ "name": "tmp", "mountPath": "/tmp" }]);
    let spec = demo.spec.as_mut().unwrap();
    spec.containers[0] = serde_json::from_value(container).unwrap();
    spec.volumes = Some(vec![serde_json::from_value(
        json!({ "name": "tmp", "emptyDir": {} }),
    )
    .unwrap()]);
    pods.create(&PostParams::default(), &demo).await.unwrap();
    let ended = common::wait_for(
        "the issueops container ends",
        Duration::from_secs(120),
        || async {
            let p = pods.get("issueops").await.unwrap();
            let status = p.status.clone()?;
            let state = status.container_statuses?.first()?.state.clone()?;
            state.terminated
        },
    )
    .await;
    let log = pods.logs("issueops", &Default::default()).await.unwrap();
    assert_eq!(ended.exit_code, 0, "{ended:?}\n{log}");
    assert!(
        log.contains("202 Accepted")
            && log.contains("applied Namespace/")
            && log.contains("applied Job/"),
        "{log}"
    );
    delete_namespace(&client, &namespace).await;
}

/// Forwards connections on the pod gateway (where the real node's pods
/// reach this host) to the API server on loopback, bytes as they are (TLS
/// end to end); returns the port. The test cluster has no kube-proxy, so
/// the `kubernetes` Service's address is not routable from pods.
async fn api_server_for_pods() -> u16 {
    let kubeconfig = std::fs::read_to_string(common::real_cluster().kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("the kubeconfig names its server")
        .trim()
        .to_string();
    let listener = tokio::net::TcpListener::bind((common::git_http::pod_host(), 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// The issueops image in a real container with its in-cluster identity (a
/// ServiceAccount's projected token, the cluster's CA from
/// `kube-root-ca.crt`, `KUBERNETES_SERVICE_HOST`): `issueops migrate` then
/// `issueops reconcile --cluster kube` reach the API server as that account
/// and converge. The account is bound to `cluster-admin` here: what it may
/// do is `tests/deploy_rbac.rs`'s question, that it is who it says this one's.
#[tokio::test]
async fn the_issueops_image_reaches_the_api_server_as_its_service_account() {
    let client = kube::Client::try_from(common::real_config().await).unwrap();
    let namespace = restricted_namespace(&client).await;
    let port = api_server_for_pods().await;
    let apply = |v: serde_json::Value| {
        let client = client.clone();
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(v).unwrap();
            let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
            let (ar, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
            let api: Api<kube::api::DynamicObject> = match &obj.metadata.namespace {
                Some(ns) => Api::namespaced_with(client, ns, &ar),
                None => Api::all_with(client, &ar),
            };
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
    };
    apply(json!({ "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "issueops", "namespace": namespace } }))
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let run = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let mut probe = pod(name, hardened());
            let mut container =
                serde_json::to_value(&probe.spec.as_ref().unwrap().containers[0]).unwrap();
            container["name"] = json!("issueops");
            container["image"] = json!(ISSUEOPS_IMAGE);
            container["command"] = json!(["sh", "-c",
                "issueops --data-dir /tmp/data migrate && issueops --data-dir /tmp/data reconcile --resync --cluster kube"]);
            container["env"] = json!([
                { "name": "KUBERNETES_SERVICE_HOST", "value": common::git_http::pod_host().to_string() },
                { "name": "KUBERNETES_SERVICE_PORT", "value": port.to_string() },
            ]);
            container["volumeMounts"] = json!([{ "name": "tmp", "mountPath": "/tmp" }]);
            let spec = probe.spec.as_mut().unwrap();
            spec.containers[0] = serde_json::from_value(container).unwrap();
            spec.service_account_name = Some("issueops".into());
            spec.automount_service_account_token = Some(true);
            spec.volumes = Some(vec![serde_json::from_value(
                json!({ "name": "tmp", "emptyDir": {} }),
            )
            .unwrap()]);
            pods.create(&PostParams::default(), &probe).await.unwrap();
            let ended = common::wait_for(
                "the issueops container ends",
                Duration::from_secs(120),
                || async {
                    let p = pods.get(name).await.unwrap();
                    let state = p.status?.container_statuses?.first()?.state.clone()?;
                    state.terminated
                },
            )
            .await;
            (
                ended.exit_code,
                pods.logs(name, &Default::default()).await.unwrap(),
            )
        }
    };
    // Before its binding: the API server knows the account and refuses it.
    let (code, log) = run("unbound").await;
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains(&format!("system:serviceaccount:{namespace}:issueops"))
            && log.contains("forbidden"),
        "{log}"
    );
    let binding = format!("{namespace}-issueops");
    apply(json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": binding },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
        "subjects": [{ "kind": "ServiceAccount", "name": "issueops", "namespace": namespace }] }))
    .await;
    let (code, log) = run("bound").await;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .delete(&binding, &Default::default())
        .await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("applied 0, deleted 0, skipped 0, failed 0"),
        "{log}"
    );
    delete_namespace(&client, &namespace).await;
}

//! The reconciler against kube-fake-client: retries of transient API errors,
//! failures that hold the last applied commit back, and deletes that never
//! touch an object without the managed-by label.

mod common;

use common::{labeled, Db, Harness};
use issueops_core::state_repo::issue_dir;
use issueops_core::state_repo::{Change, CommitRequest, StateRepo};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube_fake_client::{interceptor, ClientBuilder, Error};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A client whose first `failures` patches of Jobs fail with `make_error`.
async fn flaky_client(
    failures: usize,
    make_error: fn() -> Error,
) -> (kube::Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let client = ClientBuilder::new()
        .with_interceptor_funcs(interceptor::Funcs::new().patch(move |ctx| {
            // The run's Job (`run-<id>`), not its prompt ConfigMap (`run-<id>-prompt`).
            let job = ctx.name.starts_with("run-") && !ctx.name.ends_with("-prompt");
            if job && seen.fetch_add(1, Ordering::SeqCst) < failures {
                return Err(make_error());
            }
            Ok(None)
        }))
        .build()
        .await
        .unwrap();
    (client, calls)
}

async fn harness_with(client: kube::Client) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
    Harness::start_with(Db::Sqlite, dir, repo, client).await
}

async fn commit_one_run(h: &Harness) {
    let body = labeled("issues/labeled.payload.json", "run:dev");
    assert_eq!(h.post_signed("issues", "d-1", &body).await.0, 202);
    h.control_plane.process_pending().await.unwrap();
}

#[tokio::test]
async fn conflicts_and_server_errors_are_retried_until_they_converge() {
    for make_error in [
        (|| Error::Conflict("the object has been modified".into())) as fn() -> Error,
        || Error::Internal("etcd timeout".into()),
    ] {
        let (client, calls) = flaky_client(2, make_error).await;
        let h = harness_with(client).await;
        commit_one_run(&h).await;
        let report = h.reconciler.reconcile_once().await.unwrap();
        assert!(report.converged(), "{report:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two failures, then success"
        );
        h.finish().await;
    }
}

#[tokio::test]
async fn a_persistent_error_holds_the_commit_back_and_the_next_cycle_retries() {
    let (client, _) = flaky_client(usize::MAX, || Error::Internal("down".into())).await;
    let h = harness_with(client).await;
    commit_one_run(&h).await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(h.store.last_applied_commit("default").await.unwrap(), None);
    let job_rows: Vec<_> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.object.as_deref().is_some_and(|o| o.starts_with("Job/")))
        .collect();
    assert_eq!(job_rows.len(), 1);
    assert_eq!(job_rows[0].outcome, "error");
    assert!(job_rows[0].detail.contains("down"));
    // The run is not marked applied while its Job is not.
    assert_eq!(h.store.list_runs().await.unwrap()[0].state, "committed");
    h.finish().await;
}

/// An issue namespace's folder, as the control plane names it.
fn issue_namespace() -> String {
    issueops_core::naming::namespace_for_issue("Codertocat/Hello-World", 7)
}

/// A ConfigMap in `namespace` with this install's labels.
fn our_config_map(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/managed-by: issueops\n    issueops.dev/instance: default\ndata: {{}}\n"
    )
}

fn commit(changes: Vec<Change>) -> CommitRequest {
    CommitRequest {
        subject: "t".into(),
        body: String::new(),
        trailers: vec![],
        changes,
    }
}

#[tokio::test]
async fn deletes_only_objects_that_carry_the_managed_by_label() {
    let h = harness_with(ClientBuilder::new().build().await.unwrap()).await;
    let ns = issue_namespace();
    // Two ConfigMaps in the state repo; one of them exists in the cluster
    // without the managed-by label (someone else's object of the same name).
    h.repo
        .commit(&commit(vec![
            Change::Write {
                path: format!("{}/ours.yaml", issue_dir(&ns)),
                content: our_config_map("ours", &ns).into_bytes(),
            },
            Change::Write {
                path: format!("{}/theirs.yaml", issue_dir(&ns)),
                content: our_config_map("theirs", &ns).into_bytes(),
            },
        ]))
        .unwrap();
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    let api = Api::<ConfigMap>::namespaced(h.client.clone(), &ns);
    // "theirs" is replaced in the cluster by an object issueops does not manage.
    api.delete("theirs", &Default::default()).await.unwrap();
    let mut foreign = ConfigMap::default();
    foreign.metadata.name = Some("theirs".into());
    api.create(&PostParams::default(), &foreign).await.unwrap();

    h.repo
        .commit(&commit(vec![
            Change::Remove {
                path: format!("{}/ours.yaml", issue_dir(&ns)),
            },
            Change::Remove {
                path: format!("{}/theirs.yaml", issue_dir(&ns)),
            },
            // The issue's folder keeps a file: an emptied repo is another test.
            Change::Write {
                path: format!("{}/kept.yaml", issue_dir(&ns)),
                content: our_config_map("kept", &ns).into_bytes(),
            },
        ]))
        .unwrap();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.deleted, vec![format!("ConfigMap/{ns}/ours")]);
    assert_eq!(report.skipped, vec![format!("ConfigMap/{ns}/theirs")]);
    assert!(api.get_opt("ours").await.unwrap().is_none());
    assert!(
        api.get_opt("theirs").await.unwrap().is_some(),
        "an unmanaged object must never be deleted"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_secret_in_the_state_repo_is_refused_not_applied() {
    let h = harness_with(ClientBuilder::new().build().await.unwrap()).await;
    let ns = issue_namespace();
    h.repo
        .commit(&commit(vec![Change::Write {
            path: format!("{}/secret.yaml", issue_dir(&ns)),
            content: format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: {ns}}}\nstringData: {{token: x}}\n").into_bytes(),
        }]))
        .unwrap();
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.refused.len(), 1);
    assert!(report.refused[0].contains("Secret"), "{report:?}");
    assert!(report.converged(), "a refused file holds nothing else back");
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), &ns);
    assert!(secrets.get_opt("s").await.unwrap().is_none());
    h.finish().await;
}

/// Files outside what this install manages are refused, audited, and never
/// applied: another namespace, a folder that names another namespace, an
/// object without this install's labels, a kind left out of `cluster.kinds`.
#[tokio::test]
async fn files_outside_the_install_are_refused_and_audited() {
    let client = ClientBuilder::new().build().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
    let mut config = issueops_core::Config::default();
    config
        .cluster
        .kinds
        .retain(|k| k != "PersistentVolumeClaim");
    let h = Harness::start_full(Db::Sqlite, dir, repo, client, config).await;
    let ns = issue_namespace();
    let other = issueops_core::naming::namespace_for_issue("Codertocat/Hello-World", 8);
    let unlabeled =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bare, namespace: {ns}}}\n");
    let claim = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c\n  namespace: {ns}\n  labels: {{app.kubernetes.io/managed-by: issueops, issueops.dev/instance: default}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    );
    let files = [
        (
            "issues/kube-system/cm.yaml".to_string(),
            our_config_map("cm", "kube-system"),
        ),
        (
            format!("{}/elsewhere.yaml", issue_dir(&ns)),
            our_config_map("elsewhere", &other),
        ),
        (format!("{}/bare.yaml", issue_dir(&ns)), unlabeled),
        (format!("{}/claim.yaml", issue_dir(&ns)), claim),
        (
            "outside/cm.yaml".to_string(),
            our_config_map("outside", &ns),
        ),
        (
            format!("{}/fine.yaml", issue_dir(&ns)),
            our_config_map("fine", &ns),
        ),
    ];
    h.repo
        .commit(&commit(
            files
                .iter()
                .map(|(path, content)| Change::Write {
                    path: path.clone(),
                    content: content.clone().into_bytes(),
                })
                .collect(),
        ))
        .unwrap();
    let plan = h.reconciler.plan().await.unwrap();
    assert_eq!(
        plan.iter().filter(|l| l.starts_with("refuse ")).count(),
        5,
        "{plan:?}"
    );
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert_eq!(
        report.applied,
        vec![format!("ConfigMap/{ns}/fine")],
        "{report:?}"
    );
    assert_eq!(report.refused.len(), 5, "{report:?}");
    let why = report.refused.join("\n");
    for expected in [
        "\"kube-system\" is not an issue namespace",
        &format!("belongs to namespace \"{other}\""),
        "lacks the labels",
        "PersistentVolumeClaim is not in cluster.kinds",
        "files live under issues/<bucket>/<namespace>/",
    ] {
        assert!(why.contains(expected), "{expected}: {why}");
    }
    let audited = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.outcome == "refused-out-of-scope")
        .count();
    assert_eq!(audited, 5);
    for (name, namespace) in [
        ("cm", "kube-system"),
        ("elsewhere", other.as_str()),
        ("bare", ns.as_str()),
    ] {
        let api = Api::<ConfigMap>::namespaced(h.client.clone(), namespace);
        assert!(
            api.get_opt(name).await.unwrap().is_none(),
            "{name} was applied"
        );
    }
    h.finish().await;
}

/// However small the install, a HEAD without any manifest deletes nothing
/// until `--force`.
#[tokio::test]
async fn an_emptied_state_repo_deletes_nothing_without_force() {
    let h = harness_with(ClientBuilder::new().build().await.unwrap()).await;
    commit_one_run(&h).await;
    let first = h.reconciler.reconcile_once().await.unwrap();
    assert!(first.converged() && !first.applied.is_empty(), "{first:?}");
    h.repo
        .commit(&commit(vec![Change::Remove {
            path: "issues".into(),
        }]))
        .unwrap();
    let blocked = h.reconciler.reconcile_once().await.unwrap();
    let reason = blocked.blocked.expect("the emptied repo is blocked");
    assert!(
        reason.contains("holds no manifests") && reason.contains("--force"),
        "{reason}"
    );
    assert!(blocked.deleted.is_empty());
    let ns = issueops_core::naming::namespace_for_issue("Codertocat/Hello-World", 1);
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(h.client.clone());
    assert!(namespaces.get_opt(&ns).await.unwrap().is_some());
    let forced = h.reconciler.reconcile(true).await.unwrap();
    assert!(
        forced.blocked.is_none() && !forced.deleted.is_empty(),
        "{forced:?}"
    );
    h.finish().await;
}

/// A request that times out (the transport gives up) is retried: the first
/// patch of each Job fails with tower's timeout error before reaching the API.
#[tokio::test]
async fn timeouts_are_retried_until_they_converge() {
    let fake = ClientBuilder::new().build().await.unwrap();
    let timed_out = Arc::new(AtomicUsize::new(0));
    let seen = timed_out.clone();
    let inner = fake.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let seen = seen.clone();
        async move {
            let is_job_patch =
                req.method() == http::Method::PATCH && req.uri().path().contains("/jobs/");
            if is_job_patch && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                let elapsed: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(tower::timeout::error::Elapsed::new());
                return Err(elapsed);
            }
            inner
                .send(req)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        }
    });
    let client = kube::Client::new(service, "default");
    let h = harness_with(client).await;
    commit_one_run(&h).await;
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert_eq!(
        timed_out.load(Ordering::SeqCst),
        2,
        "one timeout, one retry"
    );
    let ns = issueops_core::naming::namespace_for_issue(common::REPO, 1);
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(fake, &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1);
    h.finish().await;
}

/// The state repo is an input like a webhook: a commit that weakens the
/// issue Namespace's Pod Security label, widens the agent's Role, binds it
/// to another account, or adds a privileged Job with a hostPath volume is
/// refused before anything is applied (shown by `plan`, audited), and the
/// cluster keeps what was applied before.
#[tokio::test]
async fn a_commit_that_weakens_what_issueops_renders_is_refused() {
    let h = harness_with(ClientBuilder::new().build().await.unwrap()).await;
    commit_one_run(&h).await;
    assert!(h.reconciler.reconcile_once().await.unwrap().converged());
    let head = h.repo.head().unwrap().unwrap();
    let files = h.repo.files_at(&head).unwrap();
    let file = |suffix: &str| {
        let (path, content) = files
            .iter()
            .find(|(p, _)| p.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {:?}", files.keys()));
        (path.clone(), String::from_utf8(content.clone()).unwrap())
    };
    let (ns_path, ns_yaml) = file("namespace.yaml");
    let (role_path, role_yaml) = file("role.yaml");
    let (binding_path, binding_yaml) = file("rolebinding.yaml");
    let (job_path, job_yaml) = file("job.yaml");
    let ns = issueops_core::state_repo::namespace_of(&ns_path)
        .unwrap()
        .to_string();
    let privileged = ns_yaml.replace(
        "pod-security.kubernetes.io/enforce: restricted",
        "pod-security.kubernetes.io/enforce: privileged",
    );
    assert_ne!(
        privileged, ns_yaml,
        "the label is where the test looks: {ns_yaml}"
    );
    let wider: serde_yaml::Value = {
        let mut role: serde_yaml::Value = serde_yaml::from_str(&role_yaml).unwrap();
        role["rules"].as_sequence_mut().unwrap().push(
            serde_yaml::from_str("{apiGroups: [''], resources: [secrets], verbs: [get, list]}")
                .unwrap(),
        );
        role
    };
    let rebound: serde_yaml::Value = {
        let mut b: serde_yaml::Value = serde_yaml::from_str(&binding_yaml).unwrap();
        b["subjects"][0]["name"] = "default".into();
        b["subjects"][0]["namespace"] = "kube-system".into();
        b
    };
    let evil_job: serde_yaml::Value = {
        let mut job: serde_yaml::Value = serde_yaml::from_str(&job_yaml).unwrap();
        job["metadata"]["name"] = "run-evil".into();
        let pod = &mut job["spec"]["template"]["spec"];
        pod["containers"][0]["securityContext"]["privileged"] = true.into();
        pod["volumes"]
            .as_sequence_mut()
            .unwrap()
            .push(serde_yaml::from_str("{name: host, hostPath: {path: /}}").unwrap());
        job
    };
    let evil_path = job_path.replace("job.yaml", "evil-job.yaml");
    h.repo
        .commit(&commit(vec![
            Change::Write {
                path: ns_path,
                content: privileged.into_bytes(),
            },
            Change::Write {
                path: role_path,
                content: serde_yaml::to_string(&wider).unwrap().into_bytes(),
            },
            Change::Write {
                path: binding_path,
                content: serde_yaml::to_string(&rebound).unwrap().into_bytes(),
            },
            Change::Write {
                path: evil_path,
                content: serde_yaml::to_string(&evil_job).unwrap().into_bytes(),
            },
        ]))
        .unwrap();
    let plan = h.reconciler.plan().await.unwrap();
    assert_eq!(
        plan.iter().filter(|l| l.starts_with("refuse ")).count(),
        4,
        "{plan:?}"
    );
    let report = h.reconciler.reconcile_once().await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    let why = report.refused.join("\n");
    for expected in [
        "pod-security.kubernetes.io/enforce label is Some(\"privileged\")",
        "grants more than the agent's Role template",
        "not only the issue's ServiceAccount",
        "is a hostPath volume",
    ] {
        assert!(why.contains(expected), "{expected}: {why}");
    }
    assert_eq!(
        h.audit()
            .await
            .iter()
            .filter(|r| r.outcome == "refused-out-of-scope")
            .count(),
        4
    );
    // What was applied before is what the cluster still has.
    let live_ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(h.client.clone())
        .get(&ns)
        .await
        .unwrap();
    assert_eq!(
        live_ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let role = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(h.client.clone(), &ns)
        .get("agent")
        .await
        .unwrap();
    assert_eq!(role.rules.unwrap_or_default().len(), 2);
    let evil = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(h.client.clone(), &ns)
        .get_opt("run-evil")
        .await
        .unwrap();
    assert!(evil.is_none(), "the privileged Job was applied");
    h.finish().await;
}

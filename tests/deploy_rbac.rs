//! `deploy/` on the real API server: every manifest passes a server-side dry
//! run, and the reconciler, running as the ServiceAccount bound to deploy/'s
//! ClusterRole (not as an admin), does its whole job: applies a run's objects
//! (the agent Role included, which RBAC lets it grant only what it holds),
//! writes and deletes the agent token Secret, observes the Job, prunes — while
//! that role cannot read the cluster's Secrets.

mod common;

use common::{
    eventually, labeled_issue, real_cluster, real_cluster_config, real_config, unique_issue, Db,
    Harness, REPO,
};
use issueops_core::naming;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;

const SYSTEM_NAMESPACE: &str = "issueops-system";
const SERVICE_ACCOUNT: &str = "issueops-reconciler";

/// The ways to install issueops: the Kustomize overlays and the Helm chart
/// in both modes, each as `(name, command rendering it)`.
fn variants() -> Vec<(&'static str, Vec<String>)> {
    let tools = std::path::PathBuf::from(std::env::var("ISSUEOPS_TEST_DEPLOY_TOOLS").unwrap_or_else(|_| {
        panic!("ISSUEOPS_TEST_DEPLOY_TOOLS is not set: run the tests with scripts/test, or `eval \"$(scripts/deploy-tools)\"`")
    }));
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let kustomize = tools.join("kustomize").display().to_string();
    let helm = tools.join("helm").display().to_string();
    let overlay = |name: &str| deploy.join("overlays").join(name).display().to_string();
    let chart = deploy.join("helm/issueops").display().to_string();
    vec![
        (
            "kustomize-embedded",
            vec![kustomize.clone(), "build".into(), overlay("embedded")],
        ),
        (
            "kustomize-production",
            vec![kustomize, "build".into(), overlay("production")],
        ),
        (
            "helm-embedded",
            vec![
                helm.clone(),
                "template".into(),
                "issueops".into(),
                chart.clone(),
                "-n".into(),
                SYSTEM_NAMESPACE.into(),
            ],
        ),
        (
            "helm-production",
            vec![
                helm,
                "template".into(),
                "issueops".into(),
                chart,
                "-n".into(),
                SYSTEM_NAMESPACE.into(),
                "--set".into(),
                "mode=production".into(),
            ],
        ),
    ]
}

fn render(variant: &str) -> String {
    let (_, argv) = variants().into_iter().find(|(n, _)| *n == variant).unwrap();
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{variant}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every object of a rendered install, with its kind and name for messages.
fn objects_of(yaml: &str) -> Vec<(String, DynamicObject)> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value).unwrap();
        let kind = obj.types.as_ref().unwrap().kind.clone();
        out.push((
            format!("{kind}/{}", obj.metadata.name.clone().unwrap_or_default()),
            obj,
        ));
    }
    out
}

/// The production overlay: what the reconciler's RBAC test installs.
fn deploy_objects() -> Vec<(String, DynamicObject)> {
    objects_of(&render("kustomize-production"))
}

const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

async fn apply(
    client: &kube::Client,
    obj: &DynamicObject,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let types = obj.types.clone().unwrap();
    let gvk = GroupVersionKind::try_from(&types).unwrap();
    let (resource, caps) = pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match (&caps.scope, obj.metadata.namespace.as_deref()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply("issueops-deploy-test").force();
    params.dry_run = dry_run;
    api.patch(
        obj.metadata.name.as_deref().unwrap(),
        &params,
        &Patch::Apply(obj),
    )
    .await
}

/// A client that authenticates as the reconciler's ServiceAccount, with a
/// token from the TokenRequest API.
async fn service_account_client(admin: &kube::Client) -> kube::Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), SYSTEM_NAMESPACE);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(real_cluster().kubeconfig).unwrap()).unwrap();
    kubeconfig["users"][0]["user"] = serde_yaml::from_str(&format!("{{token: {token}}}")).unwrap();
    let kubeconfig: kube::config::Kubeconfig = serde_yaml::from_value(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn allowed(
    client: &kube::Client,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

#[tokio::test]
async fn deploy_is_accepted_and_its_service_account_runs_the_reconciler_without_reading_secrets() {
    let admin = kube::Client::try_from(real_config().await).unwrap();
    let objects = deploy_objects();
    assert!(objects.len() >= 8, "{} objects", objects.len());

    // The namespace for real (a dry run of the rest needs it), everything else dry.
    let (_, namespace) = objects
        .iter()
        .find(|(_, o)| o.types.as_ref().unwrap().kind == "Namespace")
        .unwrap();
    apply(&admin, namespace, false).await.unwrap();
    for (file, obj) in &objects {
        apply(&admin, obj, true).await.unwrap_or_else(|e| {
            panic!(
                "{file}: {} {:?} refused: {e}",
                obj.types.as_ref().unwrap().kind,
                obj.metadata.name
            )
        });
    }

    // Install the reconciler's identity and role for real, and act as it.
    for (_, obj) in objects
        .iter()
        .filter(|(_, o)| RBAC_KINDS.contains(&o.types.as_ref().unwrap().kind.as_str()))
    {
        apply(&admin, obj, false).await.unwrap();
    }
    let sa = service_account_client(&admin).await;
    eventually("RBAC sees the new binding", || async {
        allowed(&sa, "create", "namespaces", None).await
    })
    .await;
    for verb in ["get", "list", "watch"] {
        assert!(
            !allowed(&sa, verb, "secrets", None).await,
            "{verb} secrets cluster-wide"
        );
        assert!(
            !allowed(&sa, verb, "secrets", Some("kube-system")).await,
            "{verb} secrets in kube-system"
        );
    }
    assert!(allowed(&sa, "patch", "secrets", Some("any-run-namespace")).await);

    // The whole job, as that ServiceAccount.
    const TOKEN: &str = "ghs_deployRBACtestTOKEN0000001";
    let server = common::fake_github_app(&[(TOKEN, "2030-01-01T01:00:00Z")]).await;
    let mut config = real_cluster_config();
    config.lifecycle.run_retention_seconds = 0;
    config.lifecycle.issue_idle_seconds = 0;
    let dir = tempfile::tempdir().unwrap();
    let repo =
        issueops_core::state_repo::StateRepo::local(&dir.path().join("state.git"), "main").unwrap();
    let mut h = Harness::start_full(Db::Sqlite, dir, repo, sa.clone(), config.clone()).await;
    h.reconciler =
        issueops_reconciler::Reconciler::new(h.store.clone(), h.repo.clone(), sa.clone())
            .with_instance(config.instance.clone())
            .with_credentials(common::github_app_client(&server), "issueops-github-token");
    let issue = unique_issue();
    let ns = naming::namespace_for_issue(REPO, issue);
    assert_eq!(
        h.post_signed("issues", "deploy-rbac-1", &labeled_issue("run:dev", issue))
            .await
            .0,
        202
    );
    h.control_plane.process_pending().await.unwrap();
    let run = naming::run_id_for_delivery("deploy-rbac-1");
    let report = h.reconciler.reconcile_once().await.unwrap();
    h.assert_no_audit_errors().await;
    assert_eq!(report.applied.len(), 10, "{report:?}");

    let instance = config.instance.clone();
    eventually("the run succeeds", || async {
        issueops_reconciler::observe::observe_jobs(&sa, &h.store, &instance)
            .await
            .unwrap();
        h.store.get_run(&run).await.unwrap().unwrap().state == "succeeded"
    })
    .await;
    let resync = h.reconciler.resync(false).await.unwrap();
    assert!(resync.cycle.converged(), "{resync:?}");
    let done = h
        .reconciler
        .refresh_credentials(issueops_core::now_ms() / 1000)
        .await
        .unwrap();
    assert_eq!(
        done.deleted,
        vec![ns.clone()],
        "the token Secret goes with the run"
    );
    h.control_plane
        .prune_due(issueops_core::now_ms() + 1)
        .await
        .unwrap();
    let pruned = h.reconciler.reconcile_once().await.unwrap();
    assert!(pruned.converged(), "{pruned:?}");
    assert_eq!(pruned.deleted.len(), 10, "{pruned:?}");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    eventually("the run's namespace is gone", || async {
        namespaces.get_opt(&ns).await.unwrap().is_none()
    })
    .await;
    h.finish().await;

    // Leave the cluster as we found it.
    for (_, obj) in objects.iter().filter(|(f, o)| {
        f == "reconciler.yaml"
            && matches!(
                o.types.as_ref().unwrap().kind.as_str(),
                "ClusterRole" | "ClusterRoleBinding"
            )
    }) {
        let gvk = GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
        let (resource, _) = pinned_kind(&admin, &gvk).await.unwrap();
        Api::<DynamicObject>::all_with(admin.clone(), &resource)
            .delete(
                obj.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
    }
    namespaces
        .delete(SYSTEM_NAMESPACE, &DeleteParams::default())
        .await
        .unwrap();
    eventually("issueops-system is gone", || async {
        namespaces
            .get_opt(SYSTEM_NAMESPACE)
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

/// Both deploy paths in both modes: rendered by the real tools, valid for
/// Kubernetes 1.36 under `kubernetes-validate --strict`, and accepted by the
/// test cluster's API server (server-side dry run); the production variants
/// have two gateways behind a PodDisruptionBudget, two reconcilers, and a
/// NetworkPolicy for issueops' namespace.
#[tokio::test]
async fn kustomize_and_helm_render_valid_installs_the_api_server_accepts() {
    let admin = kube::Client::try_from(real_config().await).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Server-side dry runs of namespaced objects need the namespace.
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": SYSTEM_NAMESPACE }
    }))
    .unwrap();
    let _ = Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await;
    for (variant, _) in variants() {
        let yaml = render(variant);
        let file = dir.path().join(format!("{variant}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let validated = std::process::Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.36.0", "--quiet"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            validated.status.success(),
            "{variant}: {}{}",
            String::from_utf8_lossy(&validated.stdout),
            String::from_utf8_lossy(&validated.stderr)
        );
        let objects = objects_of(&yaml);
        for (what, obj) in &objects {
            apply(&admin, obj, true)
                .await
                .unwrap_or_else(|e| panic!("{variant}: {what} refused: {e}"));
        }
        let kinds: Vec<&str> = objects.iter().map(|(w, _)| w.as_str()).collect();
        let replicas = |name_part: &str| -> Option<u64> {
            objects
                .iter()
                .find(|(w, _)| w.starts_with("Deployment/") && w.contains(name_part))
                .and_then(|(_, o)| o.data["spec"]["replicas"].as_u64())
        };
        if variant.ends_with("production") {
            assert_eq!(replicas("gateway"), Some(2), "{variant}");
            assert_eq!(replicas("reconciler"), Some(2), "{variant}");
            for kind in ["PodDisruptionBudget/", "NetworkPolicy/", "Job/"] {
                assert!(
                    kinds.iter().any(|k| k.starts_with(kind)),
                    "{variant}: no {kind} in {kinds:?}"
                );
            }
        } else {
            let serve = objects
                .iter()
                .filter(|(w, _)| w.starts_with("Deployment/"))
                .collect::<Vec<_>>();
            assert_eq!(serve.len(), 1, "{variant}: {kinds:?}");
            assert_eq!(serve[0].1.data["spec"]["replicas"].as_u64(), Some(1));
            assert!(
                kinds
                    .iter()
                    .any(|k| k.starts_with("PersistentVolumeClaim/")),
                "{variant}"
            );
        }
        for kind in [
            "Role/",
            "RoleBinding/",
            "ClusterRole/",
            "ServiceAccount/",
            "ConfigMap/",
        ] {
            assert!(
                kinds.iter().any(|k| k.starts_with(kind)),
                "{variant}: no {kind}"
            );
        }
    }
}

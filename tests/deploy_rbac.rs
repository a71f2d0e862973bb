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
    // The embedded overlay with every optional component, as docs/install.md
    // has people write their own overlay (Kustomize wants relative paths).
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/deploy-variants/embedded-all");
    std::fs::create_dir_all(&all).unwrap();
    std::fs::write(
        all.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../../../deploy/overlays/embedded]\n\
         components:\n  - ../../../deploy/components/agent-api-key\n  - ../../../deploy/components/github-sign-in\n  - ../../../deploy/components/ingress\n",
    )
    .unwrap();
    vec![
        (
            "kustomize-embedded-all",
            vec![kustomize.clone(), "build".into(), all.display().to_string()],
        ),
        (
            "helm-embedded-all",
            [
                helm.as_str(), "template", "issueops", chart.as_str(), "-n", SYSTEM_NAMESPACE,
                "--set", "secrets.agentApiKey=issueops-agent-api-key,secrets.uiOAuth=issueops-ui-oauth,secrets.uiCookieKey=issueops-ui-cookie,secrets.signingKey=issueops-signing",
                "--set", "ui.listen=0.0.0.0:8081,ingress.enabled=true,ingress.ui=true,ingress.tlsSecretName=issueops-tls,ingress.className=nginx",
                "--set", "imagePullSecrets[0].name=registry,extraEnv[0].name=RUST_LOG,extraEnv[0].value=issueops=debug",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            "helm-embedded-without-github",
            [helm.as_str(), "template", "issueops", chart.as_str(), "-n", SYSTEM_NAMESPACE, "--set", "secrets.githubApp="]
                .map(String::from)
                .to_vec(),
        ),
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

/// The install's `instance` in these tests: the admission policy names it,
/// and both tests here install the same policy (one fixed value, so they
/// agree; no other test uses it).
const DEPLOY_INSTANCE: &str = "deploy-test";

/// The production overlay: what the reconciler's RBAC test installs, its
/// admission policy set to [`DEPLOY_INSTANCE`] (as an operator sets it to
/// their config's `instance`).
fn deploy_objects() -> Vec<(String, DynamicObject)> {
    let mut objects = objects_of(&render("kustomize-production"));
    for (_, obj) in &mut objects {
        if obj.types.as_ref().unwrap().kind == "ValidatingAdmissionPolicy" {
            let instance = obj.data["spec"]["variables"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|v| v["name"] == "instance")
                .expect("the policy's instance variable");
            assert_eq!(instance["expression"], "'default'");
            instance["expression"] = format!("'{DEPLOY_INSTANCE}'").into();
        }
    }
    objects
}

/// What the tests install for real: the reconciler's identity, its roles,
/// and the admission policy that fences it.
const INSTALLED_KINDS: [&str; 7] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
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

/// Installs the reconciler's identity, roles and admission policy.
async fn install(admin: &kube::Client, objects: &[(String, DynamicObject)]) {
    for (_, obj) in objects
        .iter()
        .filter(|(_, o)| INSTALLED_KINDS.contains(&o.types.as_ref().unwrap().kind.as_str()))
    {
        apply(admin, obj, false).await.unwrap();
    }
}

/// Whether RBAC lets `client` do `verb` on `resource` (`group/plural`, or a
/// core plural).
async fn allowed(
    client: &kube::Client,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let (group, resource) = resource.split_once('/').unwrap_or(("", resource));
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
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
    let _one = ONE_INSTALL_AT_A_TIME.lock().await;
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

    // Install the reconciler's identity, role and fence for real, and act as it.
    install(&admin, &objects).await;
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
    config.instance = DEPLOY_INSTANCE.into();
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

    uninstall(&admin, &objects).await;
}

/// Leaves the cluster as the test found it: the install's cluster-wide
/// objects and its namespace removed.
async fn uninstall(admin: &kube::Client, objects: &[(String, DynamicObject)]) {
    for (_, obj) in objects.iter().filter(|(_, o)| {
        matches!(
            o.types.as_ref().unwrap().kind.as_str(),
            "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        )
    }) {
        let gvk = GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
        let (resource, _) = pinned_kind(admin, &gvk).await.unwrap();
        Api::<DynamicObject>::all_with(admin.clone(), &resource)
            .delete(
                obj.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(admin.clone());
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

/// The tests here install and remove the same cluster-wide objects and
/// namespace: one at a time.
static ONE_INSTALL_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Both deploy paths in both modes: rendered by the real tools, valid for
/// Kubernetes 1.37 under `kubernetes-validate --strict`, and accepted by the
/// test cluster's API server (server-side dry run); the production variants
/// have two gateways behind a PodDisruptionBudget, two reconcilers, and a
/// NetworkPolicy for issueops' namespace.
#[tokio::test]
async fn kustomize_and_helm_render_valid_installs_the_api_server_accepts() {
    let _one = ONE_INSTALL_AT_A_TIME.lock().await;
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
            .args(["--strict", "-k", "1.37.0", "--quiet"])
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
        let env_of_serve = || -> Vec<String> {
            objects
                .iter()
                .find(|(w, _)| w.starts_with("Deployment/"))
                .map(|(_, o)| {
                    o.data["spec"]["template"]["spec"]["containers"][0]["env"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap()
        };
        if variant.ends_with("-all") {
            let env = env_of_serve();
            for wanted in [
                "ISSUEOPS_AGENT_API_KEY_FILE",
                "ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE",
                "ISSUEOPS_UI_COOKIE_KEY_FILE",
                "ISSUEOPS_GITHUB_APP_KEY_FILE",
            ] {
                assert!(
                    env.iter().any(|e| e == wanted),
                    "{variant}: no {wanted} in {env:?}"
                );
            }
            assert!(
                kinds.iter().any(|k| k.starts_with("Ingress/")),
                "{variant}: {kinds:?}"
            );
        }
        if variant == "helm-embedded-all" {
            let env = env_of_serve();
            assert!(
                env.iter().any(|e| e == "RUST_LOG")
                    && env.iter().any(|e| e == "ISSUEOPS_SIGNING_KEY_FILE"),
                "{env:?}"
            );
            assert!(
                yaml.contains("imagePullSecrets:\n        - name: registry"),
                "{yaml}"
            );
        }
        if variant == "helm-embedded-without-github" {
            let env = env_of_serve();
            assert!(
                !env.iter().any(|e| e.starts_with("ISSUEOPS_GITHUB")),
                "{env:?}"
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

/// A dry-run create (or a patch, or a delete) as `client`: `Ok` when the API
/// server would accept it, else its message.
async fn try_write(
    client: &kube::Client,
    namespace: Option<&str>,
    verb: &str,
    obj: serde_json::Value,
) -> Result<(), String> {
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    let types = obj.types.clone().unwrap();
    let gvk = GroupVersionKind::try_from(&types).unwrap();
    let (resource, _) = pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let name = obj.metadata.name.clone().unwrap();
    let done = match verb {
        "create" => api
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &obj,
            )
            .await
            .map(|_| ()),
        "apply" => {
            let mut params = PatchParams::apply("issueops").force();
            params.dry_run = true;
            api.patch(&name, &params, &Patch::Apply(&obj))
                .await
                .map(|_| ())
        }
        "delete" => api
            .delete(
                &name,
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .await
            .map(|_| ()),
        _ => unreachable!(),
    };
    done.map_err(|e| e.to_string())
}

fn hardened_job(namespace: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "template": { "spec": {
            "serviceAccountName": "agent", "restartPolicy": "Never",
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{ "name": "agent", "image": "registry.example/agent:1",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] },
                    "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } } }],
            "volumes": [{ "name": "work", "emptyDir": {} }]
        }}}
    })
}

fn agent_binding(namespace: &str, role_kind: &str, role: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "agent", "namespace": namespace },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": "agent", "namespace": namespace }]
    })
}

fn secret(namespace: &str) -> serde_json::Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "issueops-github-token", "namespace": namespace },
        "stringData": { "token": "x" } })
}

/// The admission policy in deploy/ fences issueops' ServiceAccount where
/// RBAC alone would not: in `default` and `kube-system` its Jobs, Secrets
/// and RoleBindings are denied by the policy (RBAC allows them), as are
/// deleting someone else's namespace and making an unlabelled one; in an issue
/// namespace of the install the same writes pass, but a privileged or
/// hostPath Job, a wider Role, a binding to another role or account, and a
/// weaker Pod Security label are denied.
#[tokio::test]
async fn the_admission_policy_fences_issueops_service_account_where_rbac_would_not() {
    let _one = ONE_INSTALL_AT_A_TIME.lock().await;
    let admin = kube::Client::try_from(real_config().await).unwrap();
    let objects = deploy_objects();
    let (_, namespace) = objects
        .iter()
        .find(|(_, o)| o.types.as_ref().unwrap().kind == "Namespace")
        .unwrap();
    apply(&admin, namespace, false).await.unwrap();
    install(&admin, &objects).await;
    let sa = service_account_client(&admin).await;
    eventually("RBAC sees the new binding", || async {
        allowed(&sa, "create", "batch/jobs", Some("default")).await
    })
    .await;
    // The policy takes effect once the API server has loaded it.
    eventually("the admission policy is in force", || async {
        try_write(&sa, Some("default"), "create", secret("default"))
            .await
            .is_err_and(|e| e.contains("issueops-reconciler-fence"))
    })
    .await;

    for ns in ["default", "kube-system"] {
        for resource in [
            "batch/jobs",
            "secrets",
            "rbac.authorization.k8s.io/rolebindings",
        ] {
            assert!(
                allowed(&sa, "create", resource, Some(ns)).await,
                "RBAC alone allows {resource} in {ns}"
            );
        }
        for (what, obj) in [
            ("Job", hardened_job(ns, "run-fence")),
            ("Secret", secret(ns)),
            // A role the account holds every permission of, so RBAC's own
            // escalation check passes and the policy is what says no.
            (
                "RoleBinding",
                agent_binding(ns, "ClusterRole", "issueops-reconciler"),
            ),
        ] {
            let denied = try_write(&sa, Some(ns), "create", obj)
                .await
                .expect_err(&format!("a {what} in {ns} was let through"));
            assert!(
                denied.contains("issueops-reconciler-fence")
                    && denied.contains("only in namespaces"),
                "{what} in {ns}: {denied}"
            );
        }
    }
    // kube-system and default cannot be deleted by anyone (NamespaceLifecycle);
    // any other namespace that is not ours, by issueops not either.
    let theirs = format!("fence-theirs-{}", hex::encode(rand::random::<[u8; 3]>()));
    let theirs_ns = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": theirs } });
    apply(
        &admin,
        &serde_json::from_value(theirs_ns.clone()).unwrap(),
        false,
    )
    .await
    .unwrap();
    let deleted = try_write(&sa, None, "delete", theirs_ns)
        .await
        .expect_err("issueops deleted a namespace not its own");
    assert!(deleted.contains("issueops-reconciler-fence"), "{deleted}");
    Api::<Namespace>::all(admin.clone())
        .delete(&theirs, &DeleteParams::default())
        .await
        .unwrap();
    let unlabelled = try_write(
        &sa,
        None,
        "create",
        serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "fence-unlabelled" } }),
    )
    .await
    .expect_err("an unlabelled Namespace was made");
    assert!(
        unlabelled.contains("issueops-reconciler-fence"),
        "{unlabelled}"
    );

    // An issue namespace of this install (made by the admin here).
    let ns = naming::namespace_for_issue(REPO, unique_issue());
    let labels = serde_json::json!({
        "app.kubernetes.io/managed-by": "issueops",
        "issueops.dev/instance": DEPLOY_INSTANCE,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    });
    let issue_ns = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": ns, "labels": labels } });
    apply(
        &admin,
        &serde_json::from_value(issue_ns.clone()).unwrap(),
        false,
    )
    .await
    .unwrap();
    let template_role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": "agent", "namespace": ns },
        "rules": [
            { "apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch"] }
        ]
    });
    apply(
        &admin,
        &serde_json::from_value(template_role.clone()).unwrap(),
        false,
    )
    .await
    .unwrap();
    for (what, verb, obj) in [
        ("Job", "create", hardened_job(&ns, "run-fence")),
        ("Secret", "create", secret(&ns)),
        ("RoleBinding", "create", agent_binding(&ns, "Role", "agent")),
        ("Role", "apply", template_role.clone()),
    ] {
        try_write(&sa, Some(&ns), verb, obj)
            .await
            .unwrap_or_else(|e| panic!("the {what} issueops renders was denied: {e}"));
    }
    try_write(&sa, None, "apply", issue_ns.clone())
        .await
        .unwrap_or_else(|e| panic!("the Namespace issueops renders was denied: {e}"));

    // (`privileged: true` itself the test cluster refuses for everyone:
    // --allow-privileged=false. Escalation and added capabilities it does not.)
    let mut escalating = hardened_job(&ns, "run-escalating");
    escalating["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["allowPrivilegeEscalation"] = true.into();
    let mut capable = hardened_job(&ns, "run-capable");
    capable["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
        ["add"] = serde_json::json!(["SYS_ADMIN"]);
    let mut host_path = hardened_job(&ns, "run-hostpath");
    host_path["spec"]["template"]["spec"]["volumes"] =
        serde_json::json!([{ "name": "root", "hostPath": { "path": "/" } }]);
    let mut wider = template_role.clone();
    wider["rules"]
        .as_array_mut()
        .unwrap()
        // One the account holds itself, so RBAC's escalation check passes
        // and the policy is what says no.
        .push(serde_json::json!({ "apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"] }));
    let mut other_account = agent_binding(&ns, "Role", "agent");
    other_account["subjects"][0]["name"] = "default".into();
    let mut weaker_ns = issue_ns.clone();
    weaker_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged".into();
    for (what, namespace, verb, obj) in [
        ("an escalating Job", Some(ns.as_str()), "create", escalating),
        ("a Job with SYS_ADMIN", Some(ns.as_str()), "create", capable),
        ("a hostPath Job", Some(ns.as_str()), "create", host_path),
        ("a wider Role", Some(ns.as_str()), "apply", wider),
        (
            "a binding to cluster-admin",
            Some(ns.as_str()),
            "create",
            agent_binding(&ns, "ClusterRole", "issueops-reconciler"),
        ),
        (
            "a binding of another account",
            Some(ns.as_str()),
            "create",
            other_account,
        ),
        ("a weaker Pod Security label", None, "apply", weaker_ns),
    ] {
        let denied = try_write(&sa, namespace, verb, obj)
            .await
            .expect_err(&format!("{what} was let through"));
        assert!(
            denied.contains("issueops-reconciler-fence"),
            "{what}: {denied}"
        );
    }
    Api::<Namespace>::all(admin.clone())
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    uninstall(&admin, &objects).await;
}

/// `helm lint --strict` passes for the chart as shipped and with every
/// optional part on: no warning, no error.
#[test]
fn the_chart_lints_clean() {
    let tools = std::path::PathBuf::from(
        std::env::var("ISSUEOPS_TEST_DEPLOY_TOOLS")
            .expect("ISSUEOPS_TEST_DEPLOY_TOOLS is set by scripts/test"),
    );
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/issueops");
    for extra in [
        vec![],
        vec!["--set", "mode=production,secrets.agentApiKey=k,secrets.uiOAuth=o,secrets.uiCookieKey=c,secrets.signingKey=s,ingress.enabled=true,imagePullSecrets[0].name=r"],
    ] {
        let out = std::process::Command::new(tools.join("helm"))
            .arg("lint")
            .arg("--strict")
            .arg(&chart)
            .args(&extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !text.contains("[WARNING]") && !text.contains("[ERROR]"), "{extra:?}: {text}");
    }
}

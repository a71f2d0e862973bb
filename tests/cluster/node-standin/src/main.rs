//! The test cluster's stand-in node, beside the real one (scripts/lib/real-node.sh),
//! and its scheduler and volume provisioner: the agent image's pods go to the
//! real node (`--real-node`, once their claims are bound), and this program
//! plays the node for every other pod, and for all of them with the real node
//! off (`ISSUEOPS_NODE=standin`). It registers a Ready Node, binds those pods
//! to it, waits like a kubelet until the
//! Secrets and ConfigMaps a pod mounts exist, writes their keys (or the keys
//! a volume's `items` select) as files under
//! `--volumes-dir/<namespace>/<pod>/<volume>/` and keeps them current (as a
//! kubelet refreshes Secret volumes), then reports the pod Running and, after
//! `--run-ms`, Succeeded or Failed, so the real Job controller completes or
//! fails the Job. Terminating pods are removed at once, as a kubelet does after
//! their containers stop, so namespaces can finish terminating.
//!
//! A pod's outcome: its annotation `standin.issueops.dev/outcome`
//! (`succeed`, `fail`, `hold`, `exec`), else its first container's image tag
//! when that is one of those words (`agent:fail`), else `--default-outcome`.
//! `hold` stays Running until the annotation says otherwise. The annotation
//! `standin.issueops.dev/termination-message` becomes the main containers'
//! termination message; init containers are reported completed.
//!
//! `exec` runs the containers for real, in order, each in a sandbox that
//! holds only its own mounts (see [`exec`]): the program is the agent image's
//! entrypoint, `issueops-runner`, found beside this binary (or
//! `--exec-program`). Their exit codes and termination message files become
//! the containers' terminated states, as a kubelet reports them.

mod exec;
mod provisioner;

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OUTCOME_ANNOTATION: &str = "standin.issueops.dev/outcome";
const MESSAGE_ANNOTATION: &str = "standin.issueops.dev/termination-message";
const MANAGER: &str = "issueops-node-standin";
/// Longest one pod's sync may take before the loop moves on.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Args {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "issueops-standin")]
    node: String,
    #[arg(long)]
    volumes_dir: PathBuf,
    /// `succeed`, `fail` or `hold`.
    #[arg(long, default_value = "succeed")]
    default_outcome: String,
    /// How long a pod stays Running before it finishes.
    #[arg(long, default_value_t = 1000)]
    run_ms: u64,
    /// The program `exec` pods run; default: `issueops-runner` beside this binary.
    #[arg(long)]
    exec_program: Option<PathBuf>,
    /// `HOST_FOLDER:PATH`: a host folder `exec` containers see read-only at
    /// PATH (the tests' stand-in agent, where the agent image has it);
    /// repeatable.
    #[arg(long, value_parser = parse_bind)]
    exec_bind: Vec<(PathBuf, String)>,
    /// The real node beside this one: pods whose every container's image
    /// starts with `--real-node-images` are bound to it, not here (there is
    /// no scheduler), except the `hold` model's, whose outcome a test decides
    /// here.
    #[arg(long, requires = "real_node_images")]
    real_node: Option<String>,
    #[arg(long)]
    real_node_images: Option<String>,
    /// Provision a hostPath PersistentVolume under this folder for every
    /// claim that waits for one (see [`provisioner`]).
    #[arg(long)]
    provision_dir: Option<PathBuf>,
    /// Serve the kubelet's log endpoint (what the API server proxies
    /// `pods/log` to) over HTTPS on this port, with `--tls-cert`/`--tls-key`.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    kubelet_port: Option<u16>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

fn parse_bind(s: &str) -> Result<(PathBuf, String), String> {
    match s.split_once(':') {
        Some((host, at)) if at.starts_with('/') => Ok((PathBuf::from(host), at.to_string())),
        _ => Err(format!("{s:?}: use HOST_FOLDER:/path/in/container")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Succeed,
    Fail,
    Hold,
    Exec,
}

fn parse_outcome(s: &str) -> Option<Outcome> {
    match s {
        "succeed" => Some(Outcome::Succeed),
        "fail" => Some(Outcome::Fail),
        "hold" => Some(Outcome::Hold),
        "exec" => Some(Outcome::Exec),
        _ => None,
    }
}

/// The real node, and the image prefix of the pods that go there.
struct RealNode {
    name: String,
    images: String,
}

/// Every container of the pod, init containers first.
fn all_containers(pod: &Pod) -> impl Iterator<Item = &k8s_openapi::api::core::v1::Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
}

impl RealNode {
    fn has_image_of(&self, pod: &Pod) -> bool {
        let mut images = all_containers(pod)
            .map(|c| c.image.as_deref().unwrap_or_default())
            .peekable();
        images.peek().is_some() && images.all(|i| i.starts_with(&self.images))
    }

    /// Whether `pod` runs there: its images are the real node's, and it is
    /// not an agent a test holds (model `hold`), whose outcome the test
    /// decides here with the outcome annotation.
    fn takes(&self, pod: &Pod) -> bool {
        let held = all_containers(pod)
            .flat_map(|c| c.env.iter().flatten())
            .any(|e| e.name == "ISSUEOPS_MODEL" && e.value.as_deref() == Some("hold"));
        self.has_image_of(pod) && !held
    }
}

fn outcome_of(pod: &Pod, default: Outcome, real: Option<&RealNode>) -> Outcome {
    // The real node's image holds the runner this node runs for `exec`.
    let real_image = real
        .is_some_and(|r| r.has_image_of(pod))
        .then_some(Outcome::Exec);
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OUTCOME_ANNOTATION))
        .and_then(|v| parse_outcome(v));
    let by_image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .and_then(|i| i.rsplit_once(':'))
        .and_then(|(_, tag)| parse_outcome(tag));
    annotated.or(real_image).or(by_image).unwrap_or(default)
}

/// The kubelet's `containerLogs` endpoint: what an `exec` pod's process wrote,
/// with `tailLines` and `limitBytes` as the API server passes them on. The
/// API server authenticates itself with its kubelet client certificate; the
/// stand-in, on loopback only, does not check it.
mod logs {
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use std::path::PathBuf;

    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct LogQuery {
        tail_lines: Option<usize>,
        limit_bytes: Option<usize>,
    }

    pub fn router(volumes: PathBuf) -> Router {
        Router::new()
            .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
            .with_state(volumes)
    }

    async fn container_logs(
        State(volumes): State<PathBuf>,
        Path((ns, pod, container)): Path<(String, String, String)>,
        Query(q): Query<LogQuery>,
    ) -> Result<String, (StatusCode, String)> {
        let safe = |s: &str| !s.is_empty() && !s.contains(['/', '\\']) && !s.starts_with('.');
        if !safe(&ns) || !safe(&pod) || !safe(&container) {
            return Err((StatusCode::BAD_REQUEST, "bad pod reference".into()));
        }
        let path = crate::exec::log_file(&volumes, &ns, &pod, &container);
        let text = std::fs::read_to_string(path).map_err(|e| {
            (
                StatusCode::NOT_FOUND,
                format!("no log for {ns}/{pod}/{container}: {e}"),
            )
        })?;
        Ok(tail(&text, q.tail_lines, q.limit_bytes))
    }

    /// The last `lines` lines, then at most the last `bytes` bytes of them.
    pub fn tail(text: &str, lines: Option<usize>, bytes: Option<usize>) -> String {
        let mut out: &str = text;
        if let Some(n) = lines {
            let all: Vec<&str> = text.split_inclusive('\n').collect();
            let start = all.len().saturating_sub(n);
            let skip: usize = all[..start].iter().map(|l| l.len()).sum();
            out = &text[skip..];
        }
        if let Some(b) = bytes {
            let mut cut = out.len().saturating_sub(b);
            while !out.is_char_boundary(cut) {
                cut += 1;
            }
            out = &out[cut..];
        }
        out.to_string()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let default = parse_outcome(&args.default_outcome).with_context(|| {
        format!(
            "--default-outcome {}: use succeed, fail or hold",
            args.default_outcome
        )
    })?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    if let (Some(port), Some(cert), Some(key)) = (args.kubelet_port, &args.tls_cert, &args.tls_key)
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
        let app = logs::router(args.volumes_dir.clone());
        tokio::spawn(async move {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if let Err(e) = axum_server::bind_rustls(addr, tls)
                .serve(app.into_make_service())
                .await
            {
                tracing::error!(error = %e, "the kubelet log endpoint stopped");
            }
        });
    }
    register_node(&client, &args.node, args.kubelet_port).await?;
    if let Some(dir) = args.provision_dir.clone() {
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = provisioner::run(client, dir).await {
                tracing::error!(error = %e, "the volume provisioner stopped");
            }
        });
    }
    tracing::info!(node = %args.node, "node registered and Ready");

    let (reader, writer) = reflector::store::<Pod>();
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = reflector(writer, watcher(pods, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "pod watch interrupted; retrying");
            }
        }
    });
    reader.wait_until_ready().await?;
    // Mounted Secrets and ConfigMaps come from watches too, as a kubelet's do:
    // re-reading them per pod and tick would load the API server being measured.
    let secrets = spawn_store::<Secret>(&client);
    let config_maps = spawn_store::<ConfigMap>(&client);
    let claims = spawn_store::<PersistentVolumeClaim>(&client);
    secrets.wait_until_ready().await?;
    config_maps.wait_until_ready().await?;
    claims.wait_until_ready().await?;

    let exec_program = match args.exec_program {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("issueops-runner"))
            .context("locating issueops-runner beside the stand-in")?,
    };
    let mut kubelet = Kubelet {
        sandbox: exec::Sandbox {
            program: exec_program,
            binds: args.exec_bind,
            volumes_dir: args.volumes_dir.clone(),
        },
        processes: HashMap::new(),
        real_node: args
            .real_node
            .zip(args.real_node_images)
            .map(|(name, images)| RealNode { name, images }),
        client,
        node: args.node,
        volumes_dir: args.volumes_dir,
        default,
        run_for: Duration::from_millis(args.run_ms),
        started: HashMap::new(),
        secrets,
        config_maps,
        claims,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let state = reader.state();
        let live: std::collections::HashSet<String> = state
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        kubelet.started.retain(|uid, _| live.contains(uid));
        kubelet.processes.retain(|uid, _| live.contains(uid));
        for pod in state {
            // One request that never answers must not stall the whole node.
            match tokio::time::timeout(SYNC_TIMEOUT, kubelet.sync(&pod)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(pod = %pod_ref(&pod), error = %e, "pod sync failed; retrying")
                }
                Err(_) => tracing::warn!(pod = %pod_ref(&pod), "pod sync timed out; retrying"),
            }
        }
    }
}

/// A store of every `K` in the cluster, kept current by a watch.
fn spawn_store<K>(client: &Client) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watch interrupted; retrying");
            }
        }
    });
    reader
}

async fn register_node(client: &Client, name: &str, kubelet_port: Option<u16>) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" } },
    });
    let params = PatchParams::apply(MANAGER).force();
    nodes.patch(name, &params, &Patch::Apply(&node)).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let capacity =
        json!({ "cpu": "64", "memory": "256Gi", "pods": "20000", "ephemeral-storage": "1Ti" });
    let status = json!({ "status": {
        "capacity": capacity, "allocatable": capacity,
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }, { "type": "Hostname", "address": name }],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": kubelet_port.unwrap_or(0) } },
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "issueops node stand-in (no container runtime)",
            "lastHeartbeatTime": now, "lastTransitionTime": now }],
        "nodeInfo": { "kubeletVersion": "v1.36.3-standin", "architecture": "amd64", "operatingSystem": "linux",
            "containerRuntimeVersion": "standin://0", "kernelVersion": "", "osImage": "issueops node stand-in",
            "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": "" },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

struct Kubelet {
    /// How `exec` pods run, and the ones running now (by pod uid).
    sandbox: exec::Sandbox,
    processes: HashMap<String, exec::Execution>,
    real_node: Option<RealNode>,
    client: Client,
    node: String,
    volumes_dir: PathBuf,
    default: Outcome,
    run_for: Duration,
    /// When we reported each pod (by uid) Running.
    started: HashMap<String, Instant>,
    secrets: reflector::Store<Secret>,
    config_maps: reflector::Store<ConfigMap>,
    claims: reflector::Store<PersistentVolumeClaim>,
}

impl Kubelet {
    async fn sync(&mut self, pod: &Pod) -> Result<()> {
        let (Some(ns), Some(name), Some(uid)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
            pod.metadata.uid.as_deref(),
        ) else {
            return Ok(());
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let spec = pod.spec.clone().unwrap_or_default();
        let bound = spec.node_name.as_deref();
        if bound.is_some_and(|n| n != self.node) {
            return Ok(());
        }
        if pod.metadata.deletion_timestamp.is_some() {
            // The containers "stopped": report them terminated, as a kubelet
            // does before the pod goes (a Job with a podFailurePolicy keeps its
            // pod's finalizer until the pod is terminal), then confirm the
            // deletion.
            self.processes.remove(uid);
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if bound.is_some() && !matches!(phase, Some("Succeeded" | "Failed")) {
                set_finished(&api, pod, 137, Some("the pod was deleted".into())).await?;
            }
            if bound.is_some() {
                let _ = std::fs::remove_dir_all(self.volumes_dir.join(ns).join(name));
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(uid.to_string()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(());
        }
        if bound.is_none() {
            let target = match &self.real_node {
                Some(real) if real.takes(pod) => {
                    // As kube-scheduler's volume binding does: a pod whose
                    // claims are not bound yet waits here, not on the node
                    // (whose kubelet would retry its mounts with backoff).
                    if !self.claims_bound(ns, &spec) {
                        return Ok(());
                    }
                    &real.name
                }
                _ => &self.node,
            };
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": { "name": name, "namespace": ns, "uid": uid },
                "target": { "apiVersion": "v1", "kind": "Node", "name": target },
            });
            match api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => tracing::info!(pod = %pod_ref(pod), node = %target, "bound"),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let outcome = outcome_of(pod, self.default, self.real_node.as_ref());
        if outcome != Outcome::Exec {
            // An annotation overrides a running process: stop it.
            self.processes.remove(uid);
        }
        if !matches!(phase, "Pending" | "Running") {
            return Ok(());
        }
        let volumes_ready = self.project_volumes(ns, name, &spec).await?;
        if outcome == Outcome::Exec {
            if !self.processes.contains_key(uid) {
                if phase == "Running" || has_progress(pod) {
                    // Started by an earlier stand-in: its processes are gone.
                    set_finished(&api, pod, 137, Some("the stand-in restarted".into())).await?;
                    return Ok(());
                }
                if !volumes_ready {
                    return Ok(()); // waits, like ContainerCreating, for what it mounts
                }
                self.processes
                    .insert(uid.to_string(), exec::Execution::new(ns, name, &spec));
            }
            let Some(execution) = self.processes.get_mut(uid) else {
                return Ok(());
            };
            execution.poll(&self.sandbox, &spec)?;
            if execution.reported != execution.version {
                let version = execution.version;
                let mut status = execution.status();
                if phase == "Pending" {
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    status["startTime"] = now.into();
                    status["hostIP"] = "127.0.0.1".into();
                    status["podIP"] = "127.0.0.1".into();
                }
                api.patch_status(
                    name_of(pod),
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await?;
                execution.reported = version;
            }
            return Ok(());
        }
        if phase == "Pending" {
            if !volumes_ready {
                return Ok(()); // waits, like ContainerCreating, for what it mounts
            }
            self.set_running(&api, pod).await?;
            self.started.insert(uid.to_string(), Instant::now());
            tracing::info!(pod = %pod_ref(pod), "running");
            return Ok(());
        }
        let started = *self
            .started
            .entry(uid.to_string())
            .or_insert_with(Instant::now);
        if outcome != Outcome::Hold && started.elapsed() >= self.run_for {
            let message = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MESSAGE_ANNOTATION))
                .cloned();
            let code = if outcome == Outcome::Succeed { 0 } else { 1 };
            set_finished(&api, pod, code, message).await?;
            tracing::info!(pod = %pod_ref(pod), ?outcome, "finished");
        }
        Ok(())
    }

    fn claims_bound(&self, ns: &str, spec: &k8s_openapi::api::core::v1::PodSpec) -> bool {
        spec.volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .all(|c| {
                self.claims
                    .get(&reflector::ObjectRef::new(&c.claim_name).within(ns))
                    .is_some_and(|claim| {
                        claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                    })
            })
    }

    /// Writes every Secret and ConfigMap volume's keys as files. `false` when
    /// one that is not optional does not exist yet.
    async fn project_volumes(
        &self,
        ns: &str,
        pod: &str,
        spec: &k8s_openapi::api::core::v1::PodSpec,
    ) -> Result<bool> {
        for volume in spec.volumes.iter().flatten() {
            let (data, optional): (Option<BTreeMap<String, Vec<u8>>>, bool) =
                if let Some(s) = &volume.secret {
                    let name = s.secret_name.clone().unwrap_or_default();
                    let got = self
                        .secrets
                        .get(&reflector::ObjectRef::new(&name).within(ns))
                        .map(|s| (*s).clone());
                    (
                        got.map(|s| {
                            s.data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0))
                                .collect()
                        }),
                        s.optional.unwrap_or(false),
                    )
                } else if let Some(c) = &volume.config_map {
                    let got = self
                        .config_maps
                        .get(&reflector::ObjectRef::new(&c.name).within(ns))
                        .map(|c| (*c).clone());
                    (
                        got.map(|c| {
                            c.data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.into_bytes()))
                                .collect()
                        }),
                        c.optional.unwrap_or(false),
                    )
                } else {
                    continue;
                };
            let Some(mut data) = data else {
                if optional {
                    continue;
                }
                return Ok(false);
            };
            // `items` projects only the keys it names, at the paths it gives.
            let items = volume
                .secret
                .as_ref()
                .and_then(|s| s.items.clone())
                .or_else(|| volume.config_map.as_ref().and_then(|c| c.items.clone()));
            if let Some(items) = items {
                data = items
                    .into_iter()
                    .filter_map(|i| data.get(&i.key).map(|v| (i.path, v.clone())))
                    .collect();
            }
            let dir = self.volumes_dir.join(ns).join(pod).join(&volume.name);
            write_volume(&dir, &data)?;
        }
        Ok(true)
    }

    async fn set_running(&self, api: &Api<Pod>, pod: &Pod) -> Result<()> {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let state = json!({ "running": { "startedAt": now } });
        let status = json!({
            "phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        });
        patch_status(api, pod, status, state, true, &now).await
    }
}

/// Reports the pod's container terminated with `code` and `message`.
async fn set_finished(api: &Api<Pod>, pod: &Pod, code: i32, message: Option<String>) -> Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let succeeded = code == 0;
    let state = json!({ "terminated": {
        "exitCode": code,
        "reason": if succeeded { "Completed" } else { "Error" },
        "message": message, "finishedAt": now,
    } });
    let status = json!({ "phase": if succeeded { "Succeeded" } else { "Failed" } });
    patch_status(api, pod, status, state, false, &now).await
}

/// Reports `status` for the pod, with every main container in `state`, the
/// init containers completed, and the pod's conditions saying whether it is
/// `ready`.
async fn patch_status(
    api: &Api<Pod>,
    pod: &Pod,
    mut status: serde_json::Value,
    state: serde_json::Value,
    ready: bool,
    now: &str,
) -> Result<()> {
    let containers: Vec<_> = containers(pod)
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": "", "ready": ready, "restartCount": 0,
                "started": ready, "state": state,
            })
        })
        .collect();
    status["containerStatuses"] = json!(containers);
    let at = now;
    let completed: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0,
                "started": false,
                "state": { "terminated": { "exitCode": 0, "reason": "Completed", "finishedAt": at } },
            })
        })
        .collect();
    status["initContainerStatuses"] = json!(completed);
    status["conditions"] = conditions(now, if ready { "True" } else { "False" });
    api.patch_status(
        name_of(pod),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Whether some container of the pod was reported started.
fn has_progress(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .any(|c| {
            c.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
        })
}

fn name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

fn containers(pod: &Pod) -> impl Iterator<Item = (String, String)> + '_ {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
}

fn conditions(now: &str, ready: &str) -> serde_json::Value {
    json!([
        { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
        { "type": "Initialized", "status": "True", "lastTransitionTime": now },
        { "type": "ContainersReady", "status": ready, "lastTransitionTime": now },
        { "type": "Ready", "status": ready, "lastTransitionTime": now },
    ])
}

/// Replaces the volume's files only when they changed, each by an atomic
/// rename, so a reader never sees half a token.
fn write_volume(dir: &Path, data: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (key, value) in data {
        let path = dir.join(key);
        if std::fs::read(&path).is_ok_and(|old| old == *value) {
            continue;
        }
        let tmp = dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, value)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

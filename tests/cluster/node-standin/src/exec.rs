//! `exec` pods: their containers run for real, one at a time in the order a
//! kubelet runs them (init containers, then the main ones), each as the
//! container's program in a sandbox of its own made by bubblewrap (`bwrap`):
//! new user, PID, mount, IPC and UTS namespaces, the host's network (the
//! test's git server and fake GitHub are on loopback), and a filesystem that
//! holds only what the container would see:
//!
//! - the host's `/usr` (and the `/etc` files programs need to run), read-only,
//!   standing in for the image's root; the root itself is read-only when the
//!   container asks for `readOnlyRootFilesystem`;
//! - the agent image's entrypoint, `issueops-runner`, at
//!   [`ENTRYPOINT`], and any `--exec-bind` folders (the tests' stand-in agent),
//!   read-only;
//! - the container's own volume mounts at their mount paths (Secret and
//!   ConfigMap volumes read-only, as a kubelet mounts them), and its
//!   termination message file at its `terminationMessagePath`;
//! - its own `/proc` and a minimal `/dev`;
//! - the uid of its `runAsUser`.
//!
//! So a container that does not mount a volume cannot reach its files: there
//! is no path to them, as in a real container. What is not modelled: cgroups
//! and resource limits, seccomp, images (every container runs the runner).

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where the agent image's entrypoint is inside the sandbox.
pub const ENTRYPOINT: &str = "/opt/issueops/bin/issueops-runner";
/// The `/etc` entries a program on the host's `/usr` needs to start and to
/// resolve names; nothing else of the host's `/etc` is visible.
const ETC: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "alternatives",
    "ssl/certs",
    "ca-certificates",
    "localtime",
];
/// Longest termination message a kubelet keeps.
const MAX_MESSAGE: usize = 4096;

/// How `exec` pods are run on this node.
pub struct Sandbox {
    pub program: PathBuf,
    /// Host folders and where containers see them (read-only).
    pub binds: Vec<(PathBuf, String)>,
    pub volumes_dir: PathBuf,
}

/// One container's state, as a kubelet reports it.
#[derive(Clone, Debug)]
enum State {
    Waiting(&'static str),
    Running(String),
    Terminated {
        code: i32,
        message: Option<String>,
        at: String,
    },
}

impl State {
    fn json(&self) -> Value {
        match self {
            State::Waiting(reason) => json!({ "waiting": { "reason": reason } }),
            State::Running(at) => json!({ "running": { "startedAt": at } }),
            State::Terminated { code, message, at } => json!({ "terminated": {
                "exitCode": code,
                "reason": if *code == 0 { "Completed" } else { "Error" },
                "message": message, "finishedAt": at,
            } }),
        }
    }
}

/// A pod's containers, run one after another.
pub struct Execution {
    ns: String,
    pod: String,
    /// Every container, init containers first: (container, is init).
    containers: Vec<(Container, bool)>,
    states: Vec<State>,
    current: Option<(usize, Child)>,
    /// Bumped on every change; the kubelet reports when it moved.
    pub version: u64,
    pub reported: u64,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Execution {
    pub fn new(ns: &str, pod: &str, spec: &PodSpec) -> Execution {
        let containers: Vec<(Container, bool)> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c.clone(), true))
            .chain(spec.containers.iter().map(|c| (c.clone(), false)))
            .collect();
        let states = containers
            .iter()
            .map(|(_, init)| {
                State::Waiting(if *init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                })
            })
            .collect();
        Execution {
            ns: ns.to_string(),
            pod: pod.to_string(),
            containers,
            states,
            current: None,
            version: 1,
            reported: 0,
        }
    }

    /// Starts the next container when none runs, notes the one that ended.
    pub fn poll(&mut self, sandbox: &Sandbox, spec: &PodSpec) -> Result<()> {
        if let Some((i, child)) = self.current.as_mut() {
            let Some(status) = child.try_wait()? else {
                return Ok(());
            };
            let i = *i;
            let code = status.code().unwrap_or(137);
            let path = message_file(
                &sandbox.volumes_dir,
                &self.ns,
                &self.pod,
                &self.containers[i].0,
            );
            let message = std::fs::read(&path)
                .ok()
                .filter(|m| !m.is_empty())
                .map(|m| String::from_utf8_lossy(&m[..m.len().min(MAX_MESSAGE)]).into_owned());
            self.states[i] = State::Terminated {
                code,
                message,
                at: now(),
            };
            self.current = None;
            self.version += 1;
            tracing::info!(pod = %format!("{}/{}", self.ns, self.pod), container = %self.containers[i].0.name, code, "container exited");
        }
        if self.done().is_some() {
            return Ok(());
        }
        let Some(next) = self
            .states
            .iter()
            .position(|s| matches!(s, State::Waiting(_)))
        else {
            return Ok(());
        };
        let child = start(sandbox, &self.ns, &self.pod, spec, &self.containers[next].0)?;
        self.states[next] = State::Running(now());
        self.current = Some((next, child));
        self.version += 1;
        Ok(())
    }

    /// `Some(code)` once the pod ended: the first container that failed, or
    /// the last one.
    pub fn done(&self) -> Option<i32> {
        for state in &self.states {
            match state {
                State::Terminated { code, .. } if *code != 0 => return Some(*code),
                State::Terminated { .. } => {}
                _ => return None,
            }
        }
        Some(0)
    }

    pub fn phase(&self) -> &'static str {
        match self.done() {
            Some(0) => "Succeeded",
            Some(_) => "Failed",
            None if self.initialized() => "Running",
            None => "Pending",
        }
    }

    fn initialized(&self) -> bool {
        self.containers
            .iter()
            .zip(&self.states)
            .all(|((_, init), s)| !init || matches!(s, State::Terminated { code: 0, .. }))
    }

    /// `initContainerStatuses`, `containerStatuses` and the conditions.
    pub fn status(&self) -> Value {
        let status = |want_init: bool| -> Vec<Value> {
            self.containers
                .iter()
                .zip(&self.states)
                .filter(|((_, init), _)| *init == want_init)
                .map(|((c, _), s)| {
                    let running = matches!(s, State::Running(_));
                    let ready =
                        running || want_init && matches!(s, State::Terminated { code: 0, .. });
                    json!({
                        "name": c.name, "image": c.image, "imageID": "", "restartCount": 0,
                        "ready": ready, "started": running, "state": s.json(),
                    })
                })
                .collect()
        };
        let at = now();
        let running = self.phase() == "Running";
        let flag = |b: bool| if b { "True" } else { "False" };
        json!({
            "phase": self.phase(),
            "initContainerStatuses": status(true),
            "containerStatuses": status(false),
            "conditions": [
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": at },
                { "type": "Initialized", "status": flag(self.initialized()), "lastTransitionTime": at },
                { "type": "ContainersReady", "status": flag(running), "lastTransitionTime": at },
                { "type": "Ready", "status": flag(running), "lastTransitionTime": at },
            ],
        })
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if let Some((_, child)) = self.current.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Where a container's output goes on the node.
pub fn log_file(volumes_dir: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    volumes_dir
        .join(ns)
        .join(pod)
        .join("_logs")
        .join(format!("{container}.log"))
}

fn message_file(volumes_dir: &Path, ns: &str, pod: &str, container: &Container) -> PathBuf {
    volumes_dir
        .join(ns)
        .join(pod)
        .join("_logs")
        .join(format!("{}.termination-log", container.name))
}

/// The local folder behind a pod's volume.
fn volume_dir(volumes_dir: &Path, ns: &str, pod: &str, volume: &Volume) -> PathBuf {
    match &volume.persistent_volume_claim {
        Some(claim) => volumes_dir.join(ns).join("_claims").join(&claim.claim_name),
        None => volumes_dir.join(ns).join(pod).join(&volume.name),
    }
}

fn start(sandbox: &Sandbox, ns: &str, pod: &str, spec: &PodSpec, c: &Container) -> Result<Child> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--share-net",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    .map(String::from)
    .to_vec();
    let mut bind = |how: &str, from: &Path, to: &str| {
        args.extend([how.to_string(), from.display().to_string(), to.to_string()]);
    };
    for etc in ETC {
        bind(
            "--ro-bind-try",
            &Path::new("/etc").join(etc),
            &format!("/etc/{etc}"),
        );
    }
    bind("--ro-bind", &sandbox.program, ENTRYPOINT);
    for m in c.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .with_context(|| format!("mount {} names no volume", m.name))?;
        let local = volume_dir(&sandbox.volumes_dir, ns, pod, volume);
        std::fs::create_dir_all(&local)?;
        let projected = volume.secret.is_some() || volume.config_map.is_some();
        let how = if m.read_only == Some(true) || projected {
            "--ro-bind"
        } else {
            "--bind"
        };
        bind(how, &local, &m.mount_path);
    }
    // After the volumes: a checkout under /tmp must not be hidden by a
    // container's /tmp volume.
    for (extra, at) in &sandbox.binds {
        bind("--ro-bind", extra, at);
    }
    let message = message_file(&sandbox.volumes_dir, ns, pod, c);
    std::fs::create_dir_all(message.parent().context("message folder")?)?;
    std::fs::write(&message, "")?;
    let message_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    bind("--bind", &message, &message_path);
    let pod_sc = spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user))
        .unwrap_or(0);
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group))
        .unwrap_or(uid);
    args.extend([
        "--unshare-user".into(),
        "--uid".into(),
        uid.to_string(),
        "--gid".into(),
        gid.to_string(),
        "--hostname".into(),
        pod.to_string(),
        "--chdir".into(),
        c.working_dir.clone().unwrap_or_else(|| "/".into()),
    ]);
    if sc.and_then(|s| s.read_only_root_filesystem) == Some(true) {
        args.extend(["--remount-ro".into(), "/".into()]);
    }
    args.push("--".into());
    // The image's entrypoint unless the container names a command.
    match &c.command {
        Some(command) if !command.is_empty() => args.extend(command.iter().cloned()),
        _ => args.push(ENTRYPOINT.into()),
    }
    args.extend(c.args.iter().flatten().cloned());
    let env: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_ref().map(|v| (e.name.clone(), v.clone())))
        .collect();
    let log_path = log_file(&sandbox.volumes_dir, ns, pod, &c.name);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = Command::new("bwrap")
        .args(&args)
        .env_clear()
        .env("PATH", "/opt/issueops/bin:/usr/local/bin:/usr/bin:/bin")
        .env("HOSTNAME", pod)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting bwrap (Debian's bubblewrap; scripts/cluster installs it)")?;
    tracing::info!(pod = %format!("{ns}/{pod}"), container = %c.name, uid, "container started");
    Ok(child)
}

# The test cluster's real node, sourced by scripts/cluster: the kubelet built
# from the Kubernetes module, Debian's containerd and runc, CNI bridge
# networking, a pause image built here from tests/cluster/node/pause.c. It
# sits beside the node stand-in: pods that name it (`spec.nodeName:
# issueops-node`) run in real containers; the stand-in binds the others.
#
# Two things of this machine shape it:
# - Its root lacks CAP_SYS_RESOURCE, so no process may lower its OOM score,
#   and runc fails to start a pod sandbox when it writes the kubelet's -998
#   ("can't get final child's PID from pipe: EOF"; `runc --debug` shows
#   "failed to update /proc/self/oom_score_adj: Permission denied"). runc runs
#   through a wrapper that raises negative scores to 0 (tests/cluster/node/runc).
# - The kubelet refuses a loopback node IP, so the node gets an address of its
#   own on a bridge with no ports (this kernel has no dummy interfaces),
#   where the kubelet listens for the API server.
#
# Its state (containerd's root, the kubelet's root, runc's, CNI's) lives in
# $STATE/node; `down` stops its containers and unmounts what the kubelet and
# containerd mounted there.

REAL_NODE=issueops-node
REAL_NODE_IP=10.250.0.1
REAL_NODE_SUBNET=10.244.0.0/24
# The pods' gateway: the host's address on their bridge. The tests' servers
# (git, fake GitHub) listen there, so pods reach them and nothing else the
# host serves on loopback (etcd, the API server).
POD_GATEWAY=10.244.0.1
PAUSE_IMAGE=registry.k8s.io/pause:3.10

real_node_tools() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

real_node_up() {
  local node="$STATE/node" pki="$STATE/pki"
  real_node_tools
  mkdir -p "$node"/{containerd,kubelet,cni,cni-data,runc,pod-logs,pause}
  # The node's own address, for the kubelet and the API server.
  # A bridge with no ports: this kernel has no dummy interfaces.
  ip link show issueops-node >/dev/null 2>&1 || ip link add issueops-node type bridge
  ip link set issueops-node up
  ip addr show dev issueops-node | grep -q "$REAL_NODE_IP/" || ip addr add "$REAL_NODE_IP/32" dev issueops-node

  # The pods' bridge, made here so the tests' servers can listen on its
  # address before the first pod; the CNI bridge plugin adopts it.
  ip link show issueops0 >/dev/null 2>&1 || ip link add issueops0 type bridge
  ip link set issueops0 up
  ip addr show dev issueops0 | grep -q "$POD_GATEWAY/" || ip addr add "$POD_GATEWAY/24" dev issueops0

  gcc -static -Os -o "$node/pause/pause" "$ROOT/tests/cluster/node/pause.c"
  python3 "$ROOT/tests/cluster/node/oci-pack.py" --ref "$PAUSE_IMAGE" --out "$node/pause.tar" \
    --entrypoint '["/pause"]' --user 65535 --layer "$node/pause" >/dev/null

  cat >"$node/cni/10-bridge.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "issueops-test", "plugins": [
  {"type": "bridge", "bridge": "issueops0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "dataDir": "$node/cni-data",
            "ranges": [[{"subnet": "$REAL_NODE_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
CNI
  cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
[grpc]
  address = "$node/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$ROOT/tests/cluster/node/runc"
        Root = "$node/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
TOML
  start containerd containerd --config "$node/containerd.toml"
  wait_for containerd 60 ctr --address "$node/containerd.sock" version
  ctr --address "$node/containerd.sock" -n k8s.io images import --snapshotter overlayfs "$node/pause.tar" >/dev/null
  agent_image "$node"
  issueops_image "$node"

  kubeconfig "$STATE/node.kubeconfig" node
  cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
localStorageCapacityIsolation: false
address: $REAL_NODE_IP
port: $(free_port)
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$node/containerd.sock
tlsCertFile: $pki/node.crt
tlsPrivateKeyFile: $pki/node.key
resolvConf: /etc/resolv.conf
podLogsDir: $node/pod-logs
enforceNodeAllocatable: []
evictionHard: {}
# Pods resync (and Secret volumes follow a refreshed token) every 10 s, not
# every minute: the gate waits for a refresh to reach a container.
syncFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
  start kubelet "$BIN/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$STATE/node.kubeconfig" \
    --root-dir "$node/kubelet" --node-ip "$REAL_NODE_IP" --hostname-override "$REAL_NODE" --v=1
}

# The agent image, built by buildah from agent/Dockerfile as users build it,
# with the build arguments a machine without a registry needs: BASE is a
# Debian made by mmdebstrap from Debian's packages (cached by its package
# list, with the Codex CLI), RUNNER_FROM=context takes this workspace's
# issueops-runner, and AGENT=test-agent adds the tests' stand-in agent
# beside Codex.
# Loaded into the node's containerd as $AGENT_IMAGE; its manifest digest goes
# to $STATE/agent-image.digest, its image id (the config's digest, which the
# kubelet reports as a container's imageID) to $STATE/agent-image.id.
AGENT_IMAGE=issueops.test/agent:dev
# Node.js and npm for the Codex CLI, which the base gets too (the version
# agent/Dockerfile pins), so a build does not download its 400 MB again.
AGENT_BASE_PACKAGES="git,ca-certificates,libssl3,nodejs,npm"
CODEX_VERSION="$(sed -n 's/^ARG CODEX_VERSION=//p' "$ROOT/agent/Dockerfile")"

agent_image() {
  local node="$1" base rootfs build="$1/buildah"
  local missing=()
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v buildah >/dev/null || missing+=(buildah)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  base="$CACHE_ROOT/agent-base-$(echo "bookworm minbase $AGENT_BASE_PACKAGES codex $CODEX_VERSION" | sha256sum | cut -c1-12).oci.tar"
  if [[ ! -f "$base" ]]; then
    log "making the agent image's Debian base ($AGENT_BASE_PACKAGES, Codex CLI $CODEX_VERSION; once)"
    # Tar files, said outright: mmdebstrap reads a target's format from its
    # name, and "….tmp" made a folder (which never counted as cached).
    # npm reaches its registry through this machine's TLS proxy: the host's
    # CA bundle is lent to the download and removed after.
    rootfs="$CACHE_ROOT/agent-base.$$.rootfs.tar"
    mmdebstrap --quiet --format=tar --variant=minbase --include="$AGENT_BASE_PACKAGES" --mode=root \
      --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/tmp/host-ca.crt"' \
      --customize-hook="chroot \"\$1\" env NODE_EXTRA_CA_CERTS=/tmp/host-ca.crt npm install -g --no-fund --no-audit @openai/codex@$CODEX_VERSION" \
      --customize-hook='chroot "$1" npm cache clean --force; rm -f "$1/tmp/host-ca.crt"' \
      --customize-hook="chroot \"\$1\" codex --version | grep -qx 'codex-cli $CODEX_VERSION'" \
      bookworm "$rootfs"
    python3 "$ROOT/tests/cluster/node/oci-pack.py" --ref issueops.test/agent-base:bookworm \
      --out "$base.$$.tmp" --entrypoint '[]' --layer "$rootfs" >/dev/null
    rm -f "$rootfs"
    mv "$base.$$.tmp" "$base"
    # Bases of other package lists are dead weight.
    find "$CACHE_ROOT" -maxdepth 1 -name 'agent-base-*' ! -path "$base" -exec rm -rf {} +
  fi
  log "building $AGENT_IMAGE from agent/Dockerfile"
  # buildah keeps its store in the node's state, and drops it once the image
  # is in containerd: vfs layers are full copies.
  local store=(--root "$build/root" --runroot "$build/run" --storage-driver vfs)
  (cd "$ROOT" && buildah "${store[@]}" build --quiet --isolation chroot \
    -f agent/Dockerfile --ignorefile agent/Dockerfile.dockerignore \
    --build-arg BASE="oci-archive:$base" --build-arg RUNNER_FROM=context \
    --build-arg RUNNER_PATH=target/debug/issueops-runner --build-arg AGENT=test-agent \
    --iidfile "$STATE/agent-image.id" -t "$AGENT_IMAGE" .) >"$STATE/logs/agent-image.log" 2>&1 || {
    log "building the agent image failed; its log:"
    tail -n 30 "$STATE/logs/agent-image.log" >&2
    return 1
  }
  buildah "${store[@]}" push --quiet --digestfile "$STATE/agent-image.digest" \
    "$AGENT_IMAGE" "oci-archive:$node/agent.tar:$AGENT_IMAGE" >>"$STATE/logs/agent-image.log" 2>&1
  ctr --address "$node/containerd.sock" -n k8s.io images import --snapshotter overlayfs "$node/agent.tar" >/dev/null
  rm -rf "$node/agent.tar" "$build"
}

# The issueops image, built by buildah from deploy/Dockerfile on the same
# locally made Debian as the agent image (BASE), with this workspace's
# issueops binary (ISSUEOPS_FROM=context). Loaded into the node's containerd
# as $ISSUEOPS_IMAGE.
ISSUEOPS_IMAGE=issueops.test/issueops:dev

issueops_image() {
  local node="$1" base build="$1/buildah-issueops"
  base="$(ls "$CACHE_ROOT"/agent-base-*.oci.tar | head -n 1)"
  log "building $ISSUEOPS_IMAGE from deploy/Dockerfile"
  local store=(--root "$build/root" --runroot "$build/run" --storage-driver vfs)
  (cd "$ROOT" && buildah "${store[@]}" build --quiet --isolation chroot \
    -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
    --build-arg BASE="oci-archive:$base" --build-arg ISSUEOPS_FROM=context \
    --build-arg ISSUEOPS_PATH=target/debug/issueops -t "$ISSUEOPS_IMAGE" .) >"$STATE/logs/issueops-image.log" 2>&1 || {
    log "building the issueops image failed; its log:"
    tail -n 30 "$STATE/logs/issueops-image.log" >&2
    return 1
  }
  buildah "${store[@]}" push --quiet "$ISSUEOPS_IMAGE" "oci-archive:$node/issueops.tar:$ISSUEOPS_IMAGE" \
    >>"$STATE/logs/issueops-image.log" 2>&1
  ctr --address "$node/containerd.sock" -n k8s.io images import --snapshotter overlayfs "$node/issueops.tar" >/dev/null
  rm -rf "$node/issueops.tar" "$build"
}

real_node_ready() {
  apiserver_ready "/api/v1/nodes/$REAL_NODE" | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
sys.exit(0 if ready and ready[0]["status"] == "True" else 1)'
}

# Stops every container of the node, then the kubelet and containerd, and
# unmounts what they mounted under $STATE/node.
real_node_down() {
  local node="$STATE/node" id pid
  stop_daemon kubelet
  if [[ -d "$node/runc/k8s.io" ]]; then
    for id in $(runc --root "$node/runc/k8s.io" list -q 2>/dev/null); do
      runc --root "$node/runc/k8s.io" kill "$id" KILL 2>/dev/null || true
      runc --root "$node/runc/k8s.io" delete -f "$id" 2>/dev/null || true
    done
  fi
  # The shims outlive containerd; they name its socket.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $node/containerd.sock" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop_daemon containerd
  ip link del issueops0 2>/dev/null || true
  if [[ -d "$node" ]]; then
    awk -v d="$node/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
  fi
}

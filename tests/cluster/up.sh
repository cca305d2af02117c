#!/bin/bash
# Start a real single-node Kubernetes cluster for the tests:
#   docker-registry (127.0.0.1:5000) -> etcd -> containerd (own root, state,
#   socket; CRI; CNI bridge) -> kube-apiserver -> controller-manager,
#   scheduler -> kubelet, kube-proxy (iptables)
# Idempotent: removes the leftovers of an earlier run first (down.sh).
# Prints the admin kubeconfig path on stdout as its last line; everything
# else (progress, timings) goes to stderr. Logs: $STATE/logs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
take_lock

T0=$(date +%s.%N)
TSTEP=$T0
step() { # report the time of the step that just finished
    local now; now=$(date +%s.%N)
    log "$(printf 'up: %-34s %6.1fs (total %6.1fs)' "$1" "$(echo "$now - $TSTEP" | bc)" "$(echo "$now - $T0" | bc)")"
    TSTEP=$now
}

# wait_for WHAT TIMEOUT CMD...: retry CMD every 0.25 s
wait_for() {
    local what=$1 t=$2 deadline; shift 2
    deadline=$(($(date +%s) + t))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "up: timed out after ${t}s waiting for $what"
            for f in "$LOGS"/*.log; do log "---- tail $f"; tail -n 15 "$f" >&2; done
            exit 1
        fi
        sleep 0.25
    done
}

start_proc() { # NAME BINARY ARGS...: start in its own session, remember pid + exe
    local name=$1; shift
    setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid" >"$RUN/$name.pid"
    sleep 0.05
    readlink "/proc/$pid/exe" >"$RUN/$name.exe" 2>/dev/null || true
}

alive_or_die() { pid_alive "$1" || { tail -n 30 "$LOGS/$1.log" >&2; die "$1 exited"; }; }

for tool in containerd runc docker-registry openssl iptables conntrack bc findmnt; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install containerd runc docker-registry openssl iptables conntrack bc util-linux)"
done
[ -x "$CNI_BIN/bridge" ] && [ -x "$CNI_BIN/host-local" ] && [ -x "$CNI_BIN/loopback" ] ||
    die "no CNI plugins in $CNI_BIN (apt-get install containernetworking-plugins)"

# ---------------------------------------------------------------- binaries
"$HERE/build.sh" >&2
step "binaries (build.sh)"

# ---------------------------------------------------------------- leftovers
"$HERE/down.sh" >&2
step "leftovers removed (down.sh)"

mkdir -p "$STATE" "$RUN" "$LOGS" "$PKI" "$RUN/containerd" "$STATE/cni/net.d" "$CACHE/registry"
chmod 700 "$STATE" "$PKI"

for k in "${KUBELET_SYSCTLS[@]}"; do
    v=$(sysctl -n "$k" 2>/dev/null) && echo "$k $v"
done >"$STATE/sysctl.saved"

# Network: the bridge exists before anything starts and carries the node
# address; the CNI bridge plugin adopts it.
ip link add "$BRIDGE" type bridge
ip addr add "$NODE_IP/${NODE_POD_CIDR#*/}" dev "$BRIDGE"
ip link set "$BRIDGE" up
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || sysctl -qw net.ipv4.ip_forward=1
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 ] || sysctl -qw net.bridge.bridge-nf-call-iptables=1
else
    log "up: no br_netfilter: pod -> service -> pod on the same bridge may not work"
fi

# ---------------------------------------------------------------- certificates
cd "$PKI"
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout ca.key -out ca.crt -days 3650 -subj "/CN=womm-cluster-ca" 2>/dev/null
cert() { # NAME CN O EXTUSAGE [SAN]
    local name=$1 cn=$2 o=$3 usage=$4 san=${5:-}
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn${o:+/O=$o}" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [ -z "$san" ] || echo "subjectAltName=$san"
    } >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "$name.crt" -days 3650 -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}
cert apiserver kube-apiserver "" serverAuth \
    "IP:$NODE_IP,IP:$API_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
cert admin kubernetes-admin system:masters clientAuth
cert controller-manager system:kube-controller-manager "" clientAuth
cert scheduler system:kube-scheduler "" clientAuth
cert kube-proxy system:kube-proxy "" clientAuth
cert kubelet-client "system:node:$NODE_NAME" system:nodes clientAuth
cert kubelet "$NODE_NAME" "" serverAuth "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
openssl pkey -in sa.key -pubout -out sa.pub
chmod 600 ./*.key
cd - >/dev/null

kubeconfig() { # FILE CERTNAME
    local f=$1 c=$2
    kubectl config --kubeconfig="$f" set-cluster womm --server="https://$NODE_IP:$API_PORT" \
        --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
    kubectl config --kubeconfig="$f" set-credentials "$c" --client-certificate="$PKI/$c.crt" \
        --client-key="$PKI/$c.key" --embed-certs >/dev/null
    kubectl config --kubeconfig="$f" set-context womm --cluster=womm --user="$c" >/dev/null
    kubectl config --kubeconfig="$f" use-context womm >/dev/null
    chmod 600 "$f"
}
for c in admin controller-manager scheduler kube-proxy kubelet-client; do
    kubeconfig "$STATE/$c.kubeconfig" "$c"
done
mv "$STATE/admin.kubeconfig" "$KUBECONFIG_ADMIN" 2>/dev/null || true
step "certificates and kubeconfigs"

# ---------------------------------------------------------------- registry
if ss -ltn "sport = :${REGISTRY##*:}" | grep -q LISTEN; then
    die "port ${REGISTRY##*:} is taken by another program: set WOMM_REGISTRY=127.0.0.1:PORT"
fi
cat >"$STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $CACHE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
start_proc registry docker-registry serve "$STATE/registry.yml"
wait_for "registry" 30 curl -fsS "http://$REGISTRY/v2/"
step "registry"

# ---------------------------------------------------------------- images
"$HERE/images.sh" >&2
step "images (pause, base) in registry"

# ---------------------------------------------------------------- etcd
start_proc etcd "$BIN/etcd" --name womm --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "womm=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn
wait_for "etcd" 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
step "etcd"

# ---------------------------------------------------------------- containerd
cat >"$STATE/cni/net.d/10-womm.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "womm",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUN/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # These machines have no CAP_SYS_RESOURCE: a pod's oom_score_adj may not
  # go below containerd's own (runc: "failed to update /proc/self/oom_score_adj").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
    endpoint = ["http://$REGISTRY"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."localhost:${REGISTRY##*:}"]
    endpoint = ["http://$REGISTRY"]
EOF
start_proc containerd containerd --config "$STATE/containerd.toml" --log-level warn
wait_for "containerd" 30 ctr -a "$CONTAINERD_SOCK" version
alive_or_die containerd
step "containerd"

# ---------------------------------------------------------------- control plane
start_proc kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SVC_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --profiling=false --v=1
wait_for "kube-apiserver /readyz" 120 kubectl --kubeconfig="$KUBECONFIG_ADMIN" get --raw /readyz
step "kube-apiserver"

start_proc kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=true \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size="${NODE_POD_CIDR#*/}" \
    --service-cluster-ip-range="$SVC_CIDR" --profiling=false --v=1
start_proc kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
step "controller-manager, scheduler started"

# ---------------------------------------------------------------- node
cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
serializeImagePulls: false
podLogsDir: $STATE/pod-logs
resolvConf: /etc/resolv.conf
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 110
EOF
start_proc kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet-client.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$STATE/kubelet" --v=1

cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $STATE/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start_proc kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
step "kubelet, kube-proxy started"

k() { kubectl --kubeconfig="$KUBECONFIG_ADMIN" "$@"; }
node_ready() {
    [ "$(k get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for "node $NODE_NAME Ready" 180 node_ready
step "node Ready"
wait_for "default ServiceAccount" 120 k -n default get serviceaccount default
step "default ServiceAccount"
for c in "${COMPONENTS[@]}"; do alive_or_die "$c"; done
log "up: cluster is up ($K8S_VERSION, node $NODE_NAME at $NODE_IP, registry $REGISTRY)"
echo "$KUBECONFIG_ADMIN"

# Shared settings of the single-node test cluster; sourced by up.sh, down.sh
# and images.sh. Every value can be overridden from the environment.
K8S_VERSION=${K8S_VERSION:-v1.34.10}
CACHE=${WOMM_CLUSTER_CACHE:-/var/cache/womm-cluster}
BIN=$CACHE/$K8S_VERSION/bin
STATE=${WOMM_CLUSTER_STATE:-/var/lib/womm-cluster}   # certs, configs, etcd, containerd root, kubelet
RUN=${WOMM_CLUSTER_RUN:-/run/womm-cluster}           # pid files, sockets, containerd state
LOGS=$STATE/logs
PKI=$STATE/pki
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig

NODE_NAME=${WOMM_NODE_NAME:-womm-node}
# The node address is the gateway address of the CNI bridge, which up.sh
# creates before anything starts: pods reach the apiserver and kubelet there,
# and nothing listens on a public interface.
BRIDGE=${WOMM_BRIDGE:-womm-br0}
POD_CIDR=${WOMM_POD_CIDR:-10.244.0.0/16}
NODE_POD_CIDR=${WOMM_NODE_POD_CIDR:-10.244.0.0/24}
NODE_IP=${WOMM_NODE_IP:-10.244.0.1}
SVC_CIDR=${WOMM_SVC_CIDR:-10.96.0.0/16}
API_SVC_IP=${WOMM_API_SVC_IP:-10.96.0.1}
API_PORT=${WOMM_API_PORT:-6443}
ETCD_PORT=${WOMM_ETCD_PORT:-12379}
ETCD_PEER_PORT=${WOMM_ETCD_PEER_PORT:-12380}
REGISTRY=${WOMM_REGISTRY:-127.0.0.1:5000}
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
CNI_BIN=${WOMM_CNI_BIN:-/usr/lib/cni}

# Images (in the local registry).
PAUSE_IMAGE=$REGISTRY/womm/pause:1
BASE_IMAGE=$REGISTRY/womm/base:bookworm

export PATH=$BIN:/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Processes that up.sh starts, in start order (down.sh stops them in reverse).
COMPONENTS=(registry etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

# Sysctls the kubelet changes on start (container_manager_linux.go,
# setupKernelTunables): up.sh records their values, down.sh puts them back.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# up.sh and down.sh hold this lock while they change the cluster; the pytest
# fixture holds it while it checks the cluster and maybe starts it.
LOCK=${WOMM_CLUSTER_LOCK:-/run/womm-cluster.lock}
take_lock() {
    [ -n "${WOMM_CLUSTER_LOCKED:-}" ] && return 0
    exec 9>>"$LOCK"
    flock -w 900 9 || die "could not lock $LOCK"
    export WOMM_CLUSTER_LOCKED=1
}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_alive NAME: the pid in $RUN/NAME.pid is running and is still NAME's program.
pid_alive() {
    local f=$RUN/$1.pid pid exe
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    exe=$(cat "$RUN/$1.exe" 2>/dev/null || true)
    # (a rebuilt binary shows as "PATH (deleted)")
    [ -z "$exe" ] || [ "$(readlink "/proc/$pid/exe" 2>/dev/null | sed 's/ (deleted)$//')" = "$exe" ]
}

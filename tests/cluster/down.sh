#!/bin/bash
# Stop the single-node test cluster and remove what up.sh made: its pods and
# containers (through the CRI, so CNI DEL runs), processes (tracked by pid
# files), mounts, network namespaces, iptables chains, the bridge, the kubelet
# cgroups and the state dir; put back the sysctls the kubelet changed.
# The build cache and the registry's storage ($WOMM_CLUSTER_CACHE) stay.
# Safe to run when nothing is up.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
take_lock

stop_procs() { # NAME...: SIGTERM all, wait up to $WAIT s (20), SIGKILL what is left
    local name pid i pids=() names=() wait=${WAIT:-20}
    for name in "$@"; do
        if pid_alive "$name"; then
            pid=$(cat "$RUN/$name.pid")
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && names+=("$name")
        fi
    done
    for ((i = 0; i < wait * 10; i++)); do
        local left=0
        for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && left=1; done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if [ -d "/proc/${pids[i]}" ]; then
            log "down: ${names[i]} (${pids[i]}) still running ${wait}s after SIGTERM: SIGKILL"
            kill -KILL "${pids[i]}" 2>/dev/null
            sleep 0.2
        fi
    done
    [ ${#names[@]} = 0 ] || log "down: stopped ${names[*]}"
    for name in "$@"; do rm -f "$RUN/$name.pid" "$RUN/$name.exe"; done
}

# 1. The kubelet first, so that it does not recreate what is removed below.
stop_procs kube-proxy kubelet

# 2. Pods: through the CRI (stops containers, CNI DEL, unmounts the netns).
if pid_alive containerd && [ -S "$CONTAINERD_SOCK" ] && [ -x "$BIN/cricleanup" ]; then
    timeout 120 "$BIN/cricleanup" "unix://$CONTAINERD_SOCK" || log "down: cricleanup failed; falling back to ctr"
fi
if pid_alive containerd && [ -S "$CONTAINERD_SOCK" ]; then
    for ns in $(ctr -a "$CONTAINERD_SOCK" namespaces ls -q 2>/dev/null); do
        for t in $(ctr -a "$CONTAINERD_SOCK" -n "$ns" tasks ls -q 2>/dev/null); do
            ctr -a "$CONTAINERD_SOCK" -n "$ns" tasks kill -a -s KILL "$t" >/dev/null 2>&1
            sleep 0.2
            ctr -a "$CONTAINERD_SOCK" -n "$ns" tasks delete -f "$t" >/dev/null 2>&1
        done
        for c in $(ctr -a "$CONTAINERD_SOCK" -n "$ns" containers ls -q 2>/dev/null); do
            ctr -a "$CONTAINERD_SOCK" -n "$ns" containers delete "$c" >/dev/null 2>&1
        done
    done
fi

# 3. The rest of the processes, in reverse start order.
# (the apiserver drains requests on SIGTERM for up to a minute: no need here)
WAIT=5 stop_procs kube-controller-manager kube-scheduler kube-apiserver
stop_procs "${COMPONENTS[@]}"

# Shims of *our* containerd (their command line names our socket) that
# outlived it, and processes left in the kubelet's pod cgroups.
for d in /proc/[0-9]*; do
    cmd=$({ tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null) || continue
    case "$cmd" in
    *containerd-shim*"-address $CONTAINERD_SOCK "*)
        log "down: killing leftover shim ${d#/proc/}"; kill -KILL "${d#/proc/}" 2>/dev/null ;;
    esac
done
if [ -d /sys/fs/cgroup/pids/kubepods ]; then
    for p in $(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null); do
        log "down: killing leftover pod process $p"; kill -KILL "$p" 2>/dev/null
    done
    sleep 0.5
fi
for ctl in /sys/fs/cgroup/*/; do
    [ -d "$ctl/kubepods" ] || continue
    find "$ctl/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null
done

# 4. Network namespaces of our pods that survived (their eth0 is in our pod range).
prefix=${NODE_POD_CIDR%.*}.
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
    if ip netns exec "$ns" ip -4 -o addr show 2>/dev/null | grep -q " inet ${prefix//./\\.}"; then
        log "down: deleting netns $ns"; ip netns delete "$ns" 2>/dev/null
    fi
done

# 5. Mounts under our directories (deepest first).
for dir in "$RUN" "$STATE"; do
    findmnt -rn -o TARGET 2>/dev/null | awk -v d="$dir" 'index($0, d) == 1' | sort -r |
        while read -r m; do
            m=$(printf '%b' "$m")
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "down: cannot unmount $m"
        done
done

# 6. iptables: kube-proxy's own clean-up, then every KUBE-* chain (kubelet's too).
[ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for table in filter nat mangle raw; do
        rules=$($ipt -w -t $table -S 2>/dev/null) || continue
        # rules in other chains that jump to KUBE-* chains
        printf '%s\n' "$rules" | awk '$1 == "-A" && $2 !~ /^KUBE-/ && /-j KUBE-/' |
            while read -r rule; do
                eval "$ipt -w -t $table ${rule/-A /-D }" 2>/dev/null
            done
        chains=$(printf '%s\n' "$rules" | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}')
        for c in $chains; do $ipt -w -t $table -F "$c" 2>/dev/null; done
        for c in $chains; do $ipt -w -t $table -X "$c" 2>/dev/null; done
    done
done
if command -v nft >/dev/null; then
    for fam in ip ip6 inet; do nft delete table $fam kube-proxy 2>/dev/null; done
fi

# 7. The bridge (its veths went with the namespaces).
if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE" && log "down: deleted bridge $BRIDGE"
fi

# 8. Sysctls the kubelet changed.
if [ -f "$STATE/sysctl.saved" ]; then
    while read -r k v; do sysctl -qw "$k=$v" 2>/dev/null; done <"$STATE/sysctl.saved"
    log "down: restored $(wc -l <"$STATE/sysctl.saved") sysctls"
fi

# 9. State (the logs of the last run are kept in the cache for post-mortems).
if [ -d "$LOGS" ]; then
    rm -rf "$CACHE/last-logs"; mkdir -p "$CACHE"; cp -a "$LOGS" "$CACHE/last-logs"
fi
rm -rf "$STATE" "$RUN" 2>/dev/null || log "down: could not remove all of $STATE $RUN"
exit 0

#!/usr/bin/env bash
# Prepare a fresh Debian machine for womm: system packages, a running Docker engine, the local
# base image, and womm itself (built as a wheel and installed, as users get it).
# Idempotent: a second run only checks. Needs root (or sudo) for apt-get and dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${WOMM_EXTRAS:-}
log=${WOMM_LOG_DIR:-/var/log/womm}
mkdir -p "$log"

need=()
for tool in perl:perl dockerd:docker.io mmdebstrap:mmdebstrap rsync:rsync docker-registry:docker-registry \
            chromium:chromium sshfs:sshfs /usr/lib/openssh/sftp-server:openssh-sftp-server; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    # These machines have no bridge or iptables for Docker; workers use host networking.
    echo "starting dockerd (log: $log/dockerd.log)"
    nohup dockerd --iptables=false --ip6tables=false --bridge=none >"$log/dockerd.log" 2>&1 &
    echo $! >"$log/dockerd.pid"
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $log/dockerd.log"; exit 1; }
fi

tools/base-image.sh womm-base:bookworm

python3 -m pip install -q --upgrade pip build >/dev/null 2>&1 || true
rm -rf dist
python3 -m build -q --wheel --outdir dist . >/dev/null
wheel=$(ls dist/womm_jupyter-*.whl)
python3 -m pip install -q --force-reinstall --no-deps "$wheel"
python3 -m pip install -q "$wheel${extras:+[$extras]}"
echo "womm installed from $wheel: $(command -v womm)"

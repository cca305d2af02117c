#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, starts the Docker
# engine, builds the base image, installs womm from its wheel, builds (or reuses the cached)
# single-node Kubernetes cluster and its local registry, starts them, runs pytest, and stops
# the cluster again (it changes a few sysctls while it runs).
set -euo pipefail
cd "$(dirname "$0")/.."
WOMM_EXTRAS=test tools/setup-machine.sh

cluster_packages=(containerd runc containernetworking-plugins docker-registry mmdebstrap
                  conntrack iptables openssl bc curl iproute2 util-linux)
missing=()
for package in "${cluster_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
        missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
tests/cluster/build.sh
tests/cluster/up.sh
trap 'tests/cluster/down.sh >/dev/null 2>&1 || true' EXIT

# Workers of a run killed with the machine's previous session (its processes end before CI
# starts) would show up as ORPHANED tasks; the tests start from an engine without them.
stale=$(docker ps -aq --filter label=app.kubernetes.io/managed-by=womm)
if [ -n "$stale" ]; then
    echo "removing womm containers left by an earlier run: $(echo $stale)"
    docker rm -f $stale >/dev/null
fi
mkdir -p artifacts
ruff check .
mypy
# Tests import the installed wheel, not the source tree (the original shipped a wheel that
# lacked a manifest): `python -m pytest` would put the source tree first on sys.path, the
# pytest script with importlib imports does not.
pytest -p no:cacheprovider --import-mode=importlib "$@"

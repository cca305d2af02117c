#!/bin/bash
# Build the single-node test cluster's binaries from the Go module proxy:
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#   kubectl (k8s.io/kubernetes at K8S_VERSION), etcd (the version that release
#   pins), pause, httpserver (test image payload) and crane (image push helper).
# Output: $WOMM_CLUSTER_CACHE/<version>/bin   (default /var/cache/womm-cluster)
# Exits at once when every binary is already there.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"   # K8S_VERSION, CACHE
CRANE_VERSION=${CRANE_VERSION:-v0.20.6}
OUT=$CACHE/$K8S_VERSION/bin
SRC=$CACHE/$K8S_VERSION/src

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
LOCAL_CMDS=(etcd pause httpserver cricleanup)
ALL=("${K8S_CMDS[@]}" "${LOCAL_CMDS[@]}" crane)

# The small local commands are rebuilt when their sources change.
local_stamp=$(cd "$HERE/gobuild" && find cmd -type f -name '*.go' | sort | xargs sha256sum | sha256sum | cut -c1-64)
if [ "$(cat "$OUT/.local-stamp" 2>/dev/null)" != "$local_stamp" ]; then
    for b in "${LOCAL_CMDS[@]}"; do rm -f "$OUT/$b"; done
fi
missing=()
for b in "${ALL[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
    echo "build.sh: cached binaries in $OUT"
    exit 0
fi
echo "build.sh: building ${missing[*]} for $K8S_VERSION into $OUT"

export PATH=/usr/local/go/bin:$PATH
export GOPATH=$CACHE/go GOMODCACHE=$CACHE/go/pkg/mod GOCACHE=$CACHE/go-build
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$OUT" "$SRC"
start=$(date +%s)

# A fresh copy of the module, with the replace block derived from the
# downloaded k8s.io/kubernetes go.mod: every k8s.io/* "v0.0.0" require is a
# staging module, published as v0.<minor>.<patch>.
mkdir -p "$SRC"   # kept between builds: its go.sum saves the checksum look-ups
cp -r "$HERE/gobuild/." "$SRC/"
cd "$SRC"
go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
[ -f "$kmod" ] || { echo "build.sh: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
twin="v0.${K8S_VERSION#v1.}"
staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$kmod" | sort -u)
[ -n "$staging" ] || { echo "build.sh: no staging modules found in $kmod" >&2; exit 1; }
for m in $staging; do
    go mod edit -replace="$m=$m@$twin"
done
echo "build.sh: $(echo "$staging" | wc -l) staging modules replaced by their $twin twins"
cp go.mod "$CACHE/$K8S_VERSION/go.mod.generated"

# The commit is in the module's origin, which "go mod download" reports only
# when it fetches the module: remember it.
commit=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"Hash": "\([0-9a-f]*\)".*/\1/p' | head -1)
if [ -n "$commit" ]; then echo "$commit" >"$CACHE/$K8S_VERSION/commit"; else commit=$(cat "$CACHE/$K8S_VERSION/commit" 2>/dev/null || true); fi
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
bdate=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitCommit=${commit:-unknown} -X $p.gitTreeState=clean -X $p.buildDate=$bdate"
done

need() { local b; for b in "$@"; do [ -x "$OUT/$b" ] || return 0; done; return 1; }
if need "${K8S_CMDS[@]}"; then
    pkgs=()
    for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    nice -n 19 go build -trimpath -ldflags "$ld" -o "$OUT/" "${pkgs[@]}"
    echo "build.sh: kubernetes binaries after $(( $(date +%s) - start ))s"
fi
if need "${LOCAL_CMDS[@]}"; then
    # etcd comes from go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes pins.
    nice -n 19 go build -trimpath -ldflags "-s -w" -o "$OUT/" $(printf './cmd/%s ' "${LOCAL_CMDS[@]}")
    echo "build.sh: ${LOCAL_CMDS[*]} after $(( $(date +%s) - start ))s"
    echo "$local_stamp" >"$OUT/.local-stamp"
fi
if need crane; then
    # crane in its own module graph (go install pkg@version), so that it cannot
    # move any dependency of the Kubernetes build.
    (cd / && GOFLAGS= GOBIN="$OUT" nice -n 19 go install -trimpath -ldflags "-s -w" \
        "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION")
fi
cp go.mod go.sum "$CACHE/$K8S_VERSION/" 2>/dev/null || true
"$OUT/kubectl" version --client
echo "build.sh: done in $(( $(date +%s) - start ))s"

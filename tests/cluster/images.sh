#!/bin/bash
# Build the cluster's images locally and push them to the local registry
# (which must be running), skipping what is already there:
#   $PAUSE_IMAGE  /pause only (the pod sandbox image of containerd)
#   $BASE_IMAGE   Debian bookworm minbase (mmdebstrap, cached as a tarball)
#                 + /usr/local/bin/httpserver (static Go HTTP server/client)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"

IMG=$CACHE/images
mkdir -p "$IMG"
crane() { "$BIN/crane" --insecure "$@" 2>"$IMG/crane.log" || { cat "$IMG/crane.log" >&2; return 1; }; }
platform=linux/$(/usr/local/go/bin/go env GOARCH 2>/dev/null || echo amd64)

# push_if_changed IMAGE STAMP BUILD-FUNCTION
push_if_changed() {
    local image=$1 stamp=$2 fn=$3 sfile
    sfile=$IMG/$(echo "$image" | tr '/:' '__').pushed
    if [ "$(cat "$sfile" 2>/dev/null)" = "$stamp" ] && crane digest "$image" >/dev/null 2>&1; then
        log "images: $image is up to date"
        return
    fi
    local t=$SECONDS
    "$fn" "$image"
    echo "$stamp" >"$sfile"
    log "images: pushed $image ($(crane digest "$image")) in $((SECONDS - t))s"
}

layer_of() { # TARFILE SRC:DEST[:MODE]...  -- a layer tarball of single files
    local out=$1 root; shift
    root=$(mktemp -d)
    for spec in "$@"; do
        IFS=: read -r src dest mode <<<"$spec"
        install -D -m "${mode:-0755}" "$src" "$root$dest"
    done
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out" .
    rm -rf "$root"
}

build_pause() {
    layer_of "$IMG/pause-layer.tar" "$BIN/pause:/pause"
    crane append -f "$IMG/pause-layer.tar" -t "$1.tmp" >/dev/null
    crane mutate "$1.tmp" --set-platform "$platform" --entrypoint /pause -t "$1" >/dev/null
}

ROOTFS=$IMG/bookworm-minbase.tar
if [ ! -s "$ROOTFS" ]; then
    t=$SECONDS
    log "images: mmdebstrap --variant=minbase bookworm -> $ROOTFS"
    mmdebstrap --quiet --format=tar --variant=minbase --include=ca-certificates bookworm "$ROOTFS.tmp" >&2
    mv "$ROOTFS.tmp" "$ROOTFS"
    log "images: rootfs built in $((SECONDS - t))s ($(du -h "$ROOTFS" | cut -f1))"
fi

build_base() {
    layer_of "$IMG/httpserver-layer.tar" "$BIN/httpserver:/usr/local/bin/httpserver"
    crane append -f "$ROOTFS" -f "$IMG/httpserver-layer.tar" -t "$1.tmp" >/dev/null
    crane mutate "$1.tmp" --set-platform "$platform" \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env SHELL=/bin/bash --cmd /bin/bash -t "$1" >/dev/null
}

# (crane append pushes to TAG.tmp, crane mutate then writes TAG: an image is
# never visible under its real tag half-made.)
push_if_changed "$PAUSE_IMAGE" "$(sha256sum <"$BIN/pause" | cut -c1-64)" build_pause
push_if_changed "$BASE_IMAGE" "$(cat "$BIN/httpserver" "$ROOTFS" | sha256sum | cut -c1-64)" build_base

#!/usr/bin/env bash
# Build the local base image womm's Docker workers run by default: Debian bookworm minbase
# (which has perl-base, bash and coreutils), made with mmdebstrap from Debian's mirror and
# imported into the local Docker engine. No image registry on the internet is needed.
# The root filesystem tarball is cached, so a rebuild on the same machine takes seconds.
set -euo pipefail
image=${1:-womm-base:bookworm}
cache=${WOMM_CACHE:-/var/cache/womm}
tarball=$cache/bookworm-minbase.tar
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image is present"
    exit 0
fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
    command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq mmdebstrap; }
    echo "building $tarball with mmdebstrap (about 30 s)"
    mmdebstrap --variant=minbase --quiet bookworm "$cache/partial.tar"
    mv "$cache/partial.tar" "$tarball"
fi
docker import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
echo "base image $image imported from $tarball"

#!/bin/sh
# womm-fsserver: womm's in-cluster file server (see fsserver/README.md for the protocol).
#
#   womm-fsserver serve              main process: prepares the export, then waits
#   womm-fsserver alloc ID           create share ID (idempotent); prints its path
#   womm-fsserver free ID            delete share ID and everything in it
#   womm-fsserver list               one share ID per line
#   womm-fsserver path ID            the directory of share ID (must exist)
#   womm-fsserver rsync ID ARGS...   `rsync ARGS...` inside share ID (for rsync --rsync-path)
#   womm-fsserver sftp ID            an SFTP server on stdin/stdout starting in share ID
#   womm-fsserver version
#
# Every verb is run by a client through an exec stream (the pods/exec API): nothing here
# listens on a port, no keys exist. IDs are 1-63 characters of [a-z0-9-].
set -eu
EXPORT=${WOMM_EXPORT:-/export}
SHARES="$EXPORT/shares"
VERSION=1

die() { echo "womm-fsserver: $*" >&2; exit 2; }

share_dir() {
    case "${1:-}" in
        ""|-*|*[!a-z0-9-]*) die "bad share id '${1:-}': 1-63 characters of [a-z0-9-]" ;;
    esac
    [ ${#1} -le 63 ] || die "bad share id '$1': longer than 63 characters"
    printf '%s/%s' "$SHARES" "$1"
}

verb=${1:-}
[ $# -gt 0 ] && shift
case "$verb" in
    serve)
        umask 077
        mkdir -p "$SHARES"
        echo "womm-fsserver $VERSION: serving $SHARES as uid $(id -u)"
        : > "$EXPORT/.ready"
        trap 'rm -f "$EXPORT/.ready"; exit 0' TERM INT
        while :; do sleep 3600 & wait $! || true; done
        ;;
    alloc)
        dir=$(share_dir "${1:-}")
        mkdir -p "$dir"
        printf '%s\n' "$dir"
        ;;
    free)
        dir=$(share_dir "${1:-}")
        rm -rf -- "$dir"
        ;;
    list)
        [ -d "$SHARES" ] && ls -1 "$SHARES"
        ;;
    path)
        dir=$(share_dir "${1:-}")
        [ -d "$dir" ] || die "no share '$1'"
        printf '%s\n' "$dir"
        ;;
    rsync)
        dir=$(share_dir "${1:-}"); shift
        [ -d "$dir" ] || die "no share '$dir'"
        cd "$dir"
        exec rsync "$@"
        ;;
    sftp)
        dir=$(share_dir "${1:-}")
        [ -d "$dir" ] || die "no share '$dir'"
        cd "$dir"
        exec /usr/lib/openssh/sftp-server -d "$dir"
        ;;
    version)
        echo "womm-fsserver $VERSION"
        ;;
    *)
        die "usage: womm-fsserver serve|alloc ID|free ID|list|path ID|rsync ID ARGS...|sftp ID|version"
        ;;
esac

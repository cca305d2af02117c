#!/usr/bin/env bash
# The main job: set up a fresh machine, then fan `wc -l` over every file of this repository
# out to 3 Docker workers (the embedded default backend), exactly as a user would.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-machine.sh
find womm_jupyter -type f -name '*.py' | womm parallel --kube-pods 3 --image womm-base:bookworm -- -k wc -l {}

#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, starts the Docker
# engine, builds the base image, installs womm from its wheel, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
WOMM_EXTRAS=test tools/setup-machine.sh
mkdir -p artifacts
# Tests import the installed wheel, not the source tree (the original shipped a wheel that
# lacked a manifest): `python -m pytest` would put the source tree first on sys.path, the
# pytest script with importlib imports does not.
pytest -p no:cacheprovider --import-mode=importlib "$@"
